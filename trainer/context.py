"""What one run is given and what its phases share.

:class:`RunOptions` is the command line (plus the knobs tests turn), :class:`Deps` what
tests inject (clients, the clock, monotonic time, sleep, IMDS, the poweroff), and
:class:`RunContext` the objects every phase module reads and fills in: the clients, the
state-file side, the transfers, training.json in the making, the progress the heartbeat
reports, the stop switch, and what the phases hand on to each other.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import boto3

from common import runspec
from common.aws import client as make_client
from common.layout import TRAINER_LOG_NAME, RunPaths
from common.state_store import StateStore
from common.timeutil import Clock, utc_now
from trainer import sync
from trainer.attempts import AttemptFacts
from trainer.batch_job import BatchJob, BatchMetadata
from trainer.errors import CLIENT_CONFIG, ErrorLog, Retrier, TerminalError, retry_policy
from trainer.finalize import Outputs
from trainer.instance import DEFAULT_ENDPOINT, IMDS, InstanceIdentity, Poweroff
from trainer.record import TrainingLog
from trainer.stopping import StopSwitch
from trainer.transfers import Transfers
from trainer.transitions import RunState
from trainer.watcher import Progress

Monotonic = Callable[[], float]
Sleep = Callable[[float], None]


class MetadataSource(Protocol):
    """What the run asks the instance metadata service (:class:`~trainer.instance.IMDS`)."""

    def identity(self) -> InstanceIdentity: ...
    def spot_action(self) -> dict[str, Any] | None: ...
    def rebalance(self) -> dict[str, Any] | None: ...


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """The command line, plus knobs tests turn (intervals, deadline, step delay)."""

    bucket: str
    env: str
    run_id: str
    region: str = "us-east-1"
    device: str = "cuda"
    imds_endpoint: str = DEFAULT_ENDPOINT
    local: bool = False
    workdir: Path | None = None
    endpoint_url: str | None = None
    retry: str = "exponential"
    heartbeat_interval_s: float = 20.0
    spot_interval_s: float = 2.0
    state_interval_s: float = 5.0
    max_runtime_s: float | None = None
    step_delay_s: float = 0.0
    batch: bool = False  # an AWS Batch job (trainer.batch_job): the job's identity, no poweroff

    @property
    def work(self) -> Path:
        return self.workdir or Path(tempfile.gettempdir()) / f"chronos-{self.env}-{self.run_id}"


@dataclass(kw_only=True)
class Deps:
    """What tests inject: clients (with fault hooks), time, IMDS, the poweroff strategy.

    Attributes:
        s3, ec2: boto3 clients (default: built for the options' region and endpoint).
        sleep: retry backoff and the keep-on-failure wait.
        clock: UTC wall clock (timestamps, the launch time max runtime counts from).
        monotonic: intervals and deadlines (watcher, heartbeat, phase durations).
        imds: the metadata service (default: :class:`~trainer.instance.IMDS` at the endpoint).
        poweroff: how the instance ends (default: ``select_poweroff``).
    """

    s3: Any | None = None
    ec2: Any | None = None
    sleep: Sleep = time.sleep
    clock: Clock = utc_now
    monotonic: Monotonic = time.monotonic
    imds: MetadataSource | None = None
    poweroff: Poweroff | None = None


@dataclass(kw_only=True)
class RunData:
    """What data sync hands to training and evaluation."""

    manifest: sync.Manifest | None = None
    files: list[Path] = field(default_factory=list)
    dataset: Any = None
    inputs: Path | None = None
    validation: Path | None = None  # the validation window for the child (inputs_file.save_window)
    base_model: str = ""  # what the child loads: a tiny config name or a model folder
    base_ref: dict[str, Any] = field(default_factory=dict)  # trainer.base_model.BaseRef.to_dict()
    base_info: dict[str, Any] = field(default_factory=dict)
    validation_result: dict[str, Any] | None = None  # the child's validation block (result file)
    adapter_dir: Path | None = None  # the exported model's LoRA adapter alone (LoRA runs)


class RunContext:
    """The objects of one run that every phase shares (built once by the driver)."""

    def __init__(self, opts: RunOptions, deps: Deps) -> None:
        self.opts, self.deps = opts, deps
        self.paths = RunPaths(env=opts.env, run_id=opts.run_id)
        session = boto3.Session(region_name=opts.region)
        self.s3 = deps.s3 or make_client(session, "s3", endpoint_url=opts.endpoint_url, config=CLIENT_CONFIG)
        self.ec2 = deps.ec2 or make_client(
            session, "ec2", endpoint_url=opts.endpoint_url, config=CLIENT_CONFIG
        )
        self.batch_job = BatchJob.from_environ() if opts.batch else None
        imds: MetadataSource = deps.imds or IMDS(opts.imds_endpoint, timeout=1.0 if opts.batch else 2.0)
        self.imds: MetadataSource = BatchMetadata(imds, self.batch_job) if self.batch_job else imds
        self.errors = ErrorLog()
        self.retrier = Retrier(
            retry_policy(opts.retry), errors=self.errors, sleep=deps.sleep, clock=deps.clock
        )
        self.store = StateStore(self.s3, opts.bucket, opts.env, run_id=opts.run_id)  # a member's own lock
        self.stops = StopSwitch()
        self.state = RunState(
            store=self.store, run_id=opts.run_id, retrier=self.retrier, stops=self.stops, errors=self.errors
        )
        self.errors.on_record = self.state.keep_last_error
        self.transfers = Transfers(self.s3, opts.bucket, self.retrier)
        self.record = TrainingLog(
            run_id=opts.run_id, env=opts.env, errors=self.errors, clock=deps.clock, monotonic=deps.monotonic
        )
        self.progress = Progress()
        self.outputs = Outputs(trainer_log=opts.work / TRAINER_LOG_NAME)
        self.data = RunData()
        self.spec: runspec.RunSpec | None = None
        self.instance_id: str | None = None
        self.attempt = AttemptFacts()

    def require_spec(self) -> runspec.RunSpec:
        """The loaded run spec.

        Raises:
            TerminalError: none was loaded (a phase ran before the run spec).
        """
        if self.spec is None:
            raise TerminalError("no run spec loaded", component="run_spec")
        return self.spec
