"""The phase driver of ``python -m trainer run``: one run on one instance, boot to poweroff.

::

    identify (IMDSv2 -> set_instance) -> run spec (user-configs/run-spec.json)
    initialization: preflight
    data_sync:      data (manifest-verified), user configs, newest complete checkpoint
    training:       ``python -m trainer.train`` as a child; checkpoints uploaded as they land
    results_sync:   evaluation, model_metadata.json, finalize (artifacts, training.json, _SUCCESS)
    cleanup:        cleanup_status.json, release the state file, poweroff

Every transition goes through the :class:`~common.state_store.StateStore`, so a
``killed`` written by the control plane is seen (an illegal transition re-reads
and stops the run). The :class:`~trainer.watcher.Watcher` turns a spot notice,
the max-runtime deadline or a kill into a stop request: the child gets SIGTERM
(checkpoint, exit 3), the checkpoint is uploaded, and the run finalizes with
``interrupted`` or ``killed``. Any other failure becomes a terminal record and
``failed``. Exit codes: :data:`EXIT_CODES`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from common import runspec
from common.aws import client as make_client
from common.errors import ConfigError
from common.layout import RunPaths
from common.state_store import IllegalTransitionError, NotHeldError, StateStore
from common.status import CompletionStatus, ErrorClass, RunStatus
from common.timeutil import parse_iso, utc_now
from trainer import keep, preflight, sync
from trainer.bootstrap import build_info
from trainer.cleanup import Cleanup
from trainer.errors import (
    CLIENT_CONFIG,
    ErrorLog,
    Retrier,
    TerminalError,
    TrainerError,
    record_for,
    retry_policy,
)
from trainer.finalize import Outputs, TrainingLog, finalize, model_metadata, software_versions
from trainer.instance import DEFAULT_ENDPOINT, IMDS, Poweroff, select_poweroff
from trainer.watcher import Heartbeat, Progress, ProgressEvents, StopRequest, TrainingChild, Watcher

log = logging.getLogger(__name__)

EXIT_CODES = {
    CompletionStatus.NORMAL: 0,
    CompletionStatus.FAILED: 1,
    CompletionStatus.INTERRUPTED: 3,
    CompletionStatus.KILLED: 4,
}
RUN_SPEC_NAME = "run-spec.json"
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
CHECKPOINT_FLUSH_S = 90.0


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

    @property
    def work(self) -> Path:
        return self.workdir or Path(tempfile.gettempdir()) / f"chronos-{self.env}-{self.run_id}"


@dataclass(kw_only=True)
class Deps:
    """What tests inject: clients (with fault hooks), sleep, the poweroff strategy."""

    s3: Any | None = None
    ec2: Any | None = None
    sleep: Callable[[float], None] = time.sleep
    poweroff: Poweroff | None = None


class Stopped(Exception):
    """Training must stop: a spot notice, max runtime, or a kill."""

    def __init__(self, request: StopRequest) -> None:
        super().__init__(request.reason)
        self.request, self.stop_status = request, request.status


@dataclass(kw_only=True)
class _Data:
    manifest: sync.Manifest | None = None
    files: list[Path] = field(default_factory=list)
    dataset: Any = None
    inputs: Path | None = None
    base_model: str = ""
    base_info: dict[str, Any] = field(default_factory=dict)


def run(opts: RunOptions, deps: Deps | None = None) -> int:
    """Drive one run; the process exit code (0 only for a normal completion)."""
    return run_driver(Driver(opts, deps or Deps()))


def run_driver(driver: Driver) -> int:
    """Run ``driver`` with its log also going to ``<workdir>/trainer.log`` (UTC timestamps)."""
    driver.opts.work.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(driver.opts.work / "trainer.log", encoding="utf-8")
    handler.setFormatter(utc_formatter())
    root = logging.getLogger()
    root.addHandler(handler)
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        return driver.run()
    finally:
        root.removeHandler(handler)
        handler.close()


def utc_formatter() -> logging.Formatter:
    formatter = logging.Formatter(LOG_FORMAT, datefmt="%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    return formatter


class Driver:
    """One run: the phases in order, then finalize and cleanup whatever happened."""

    def __init__(self, opts: RunOptions, deps: Deps) -> None:
        self.opts, self.deps = opts, deps
        self.paths = RunPaths(env=opts.env, run_id=opts.run_id)
        session = boto3.Session(region_name=opts.region)
        self.s3 = deps.s3 or make_client(session, "s3", endpoint_url=opts.endpoint_url, config=CLIENT_CONFIG)
        self.ec2 = deps.ec2 or make_client(
            session, "ec2", endpoint_url=opts.endpoint_url, config=CLIENT_CONFIG
        )
        self.errors = ErrorLog(on_record=self._keep_last_error)
        self.retrier = Retrier(retry_policy(opts.retry), errors=self.errors, sleep=deps.sleep)
        self.store = StateStore(self.s3, opts.bucket, opts.env)
        self.transfers = sync.Transfers(self.s3, opts.bucket, self.retrier)
        self.record = TrainingLog(run_id=opts.run_id, env=opts.env, errors=self.errors)
        self.progress = Progress()
        self.outputs = Outputs(trainer_log=opts.work / "trainer.log")
        self.data = _Data()
        self.spec: runspec.RunSpec | None = None
        self.instance_id: str | None = None
        self.watcher: Watcher | None = None
        self.child: TrainingChild | None = None
        self.stop_request: StopRequest | None = None
        self._stop_lock = threading.Lock()
        self._finishing = False

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> int:
        """Every phase, then :meth:`finish`; the exit code."""
        log.info(
            "run %s (env %s) on %s%s",
            self.opts.run_id,
            self.opts.env,
            self.opts.device,
            " (local mode)" if self.opts.local else "",
        )
        self.record.software, self.record.git_commit = software_versions(), build_info().get("git_commit")
        completion, reason, phase = CompletionStatus.NORMAL, None, "identify"
        try:
            self._identify()
            phase = "run_spec"
            self._load_spec()
            self._start_watcher()
            for phase, status, body in self._phases():
                if status is not None:
                    self._advance(status)
                with self.record.phase(phase) as details:
                    body(details)
                self._check_stop()
        except Stopped as stop:
            completion, reason = CompletionStatus.from_status(stop.stop_status), stop.request.reason
        except Exception as exc:  # every failure ends as a terminal record and `failed`
            if not isinstance(exc, TrainerError):
                log.exception("%s failed", phase)
            record = self.errors.add(record_for(exc, component=phase))
            completion, reason = CompletionStatus.FAILED, record["message"]
        return self.finish(completion, reason)

    def _phases(self) -> list[tuple[str, RunStatus | None, Callable[[dict[str, Any]], None]]]:
        return [
            ("preflight", None, self._preflight),
            ("data_sync", RunStatus.DATA_SYNC, self._data_sync),
            ("training", RunStatus.TRAINING, self._training),
            ("evaluation", RunStatus.RESULTS_SYNC, self._evaluation),
        ]

    def _identify(self) -> None:
        ident = IMDS(self.opts.imds_endpoint).identity()
        self.instance_id = ident.instance_id
        self.record.instance = {
            "instance_id": ident.instance_id,
            "instance_type": ident.instance_type,
            "market": ident.market.value,
            "availability_zone": ident.availability_zone,
            "image_id": ident.image_id,
            "gpu": None,
            "local": self.opts.local,
        }
        log.info(
            "instance %s (%s, %s, %s)",
            ident.instance_id,
            ident.instance_type,
            ident.availability_zone,
            ident.market.value,
        )
        try:
            self._state_call(
                lambda: self.store.set_instance(
                    self.opts.run_id,
                    instance_id=ident.instance_id,
                    instance_type=ident.instance_type,
                    availability_zone=ident.availability_zone,
                    market=ident.market.value,
                )
            )
        except NotHeldError as exc:
            raise TerminalError(
                f"{exc}: this instance was launched for a run that no longer holds the lock",
                component="identify",
            ) from None

    def _load_spec(self) -> None:
        key = self.paths.user_configs + RUN_SPEC_NAME
        where = f"s3://{self.opts.bucket}/{key}"
        try:
            doc = json.loads(self.transfers.get_bytes(key, component="run_spec"))
            self.spec = runspec.from_dict(doc, source=where).resolved(local=self.opts.local)
        except TrainerError:
            raise
        except ConfigError as exc:
            raise TerminalError(f"invalid run spec: {exc}", component="run_spec") from None
        except Exception as exc:
            raise TerminalError(f"cannot read the run spec {where}: {exc}", component="run_spec") from None
        self.progress.update(total_steps=self.spec.model.num_steps)

    # -- phases ---------------------------------------------------------------------------------
    def _preflight(self, details: dict[str, Any]) -> None:
        where = f"s3://{self.opts.bucket}/{self.paths.logs}"

        def s3_check() -> None:
            self.retrier.call(
                lambda: self.s3.list_objects_v2(Bucket=self.opts.bucket, Prefix=self.paths.logs, MaxKeys=1),
                component="preflight",
                action="s3:ListBucket",
                resource=where,
            )

        details.update(
            preflight.run_preflight(device=self.opts.device, workdir=self.opts.work, s3_check=s3_check)
        )
        self.record.instance["gpu"] = details.get("gpu")

    def _data_sync(self, details: dict[str, Any]) -> None:
        from trainer.inputs_file import save_inputs

        spec, work = self._spec(), self.opts.work
        details["previous_attempt"] = sync.clear_previous_sentinel(
            self.transfers, self.paths.success, self.paths.failed_upload
        )
        self.outputs.user_configs = sync.download_user_configs(
            self.transfers, self.paths.user_configs, work / "user-configs"
        )
        manifest, files, verified = sync.sync_data(self.transfers, spec.data.prefix, work / "data")
        self.data.manifest, self.data.files = manifest, files
        details.update(
            manifest={"count": manifest.count, "bytes": manifest.total_bytes},
            verification=verified,
            user_configs=len(self.outputs.user_configs),
        )
        self.data.dataset = sync.load_training_data(files, spec)
        details["dataset"] = self.data.dataset.summary()
        self.data.inputs = save_inputs(self.data.dataset.train_inputs, work / "inputs.npz")
        self.data.base_model = sync.fetch_base_model(self.transfers, spec.model.base, work / "base-model")
        details["restored_checkpoint_step"] = sync.restore_checkpoint(
            self.transfers, self.paths.checkpoints, local_checkpoints(work), _checkpoint_problem
        )

    def _training(self, details: dict[str, Any]) -> None:
        uploader = sync.CheckpointUploader(  # the heartbeat reports the newest checkpoint safe in S3
            self.transfers,
            self.paths.checkpoints,
            on_uploaded=lambda step, _: self.progress.update(last_checkpoint_step=step),
        )
        events = ProgressEvents(self.progress, self.record.loss_curve, uploader.submit)
        config = child_config(
            self._spec(),
            workdir=self.opts.work,
            device=self.opts.device,
            base_model=self.data.base_model,
            inputs=self.data.inputs or Path(),
            step_delay_s=self.opts.step_delay_s,
        )
        self.child = TrainingChild(
            config=config,
            config_path=self.opts.work / "train-config.json",
            progress_path=Path(config["progress_path"]),
            on_event=events,
            env=child_env(self.opts.device),
        )
        Path(config["result_path"]).unlink(missing_ok=True)  # never read a previous attempt's result
        if self.stop_request is not None:
            self.child.request_stop()
        try:
            code = self.child.run()
        finally:
            self._flush_checkpoints(uploader, details)
        self.record.resumed_from_step = events.start_step or None
        details.update(
            exit_code=code,
            start_step=events.start_step,
            final_step=self.progress.step,
            resumed_from_step=self.record.resumed_from_step,
        )
        if self.stop_request is not None:
            details["stop"] = {
                "status": self.stop_request.status.value,
                "reason": self.stop_request.reason,
                "source": self.stop_request.source,
            }
        self._training_outcome(code, _read_json(Path(config["result_path"])))

    def _flush_checkpoints(self, uploader: sync.CheckpointUploader, details: dict[str, Any]) -> None:
        flushed = uploader.close(timeout=CHECKPOINT_FLUSH_S)
        details["checkpoints_uploaded"] = sorted(uploader.uploaded)
        self.progress.update(last_checkpoint_step=max(uploader.uploaded, default=None))
        if uploader.failures or not flushed:
            problem = (
                uploader.failures[0]
                if uploader.failures
                else TrainerError(
                    f"checkpoint uploads did not finish within {CHECKPOINT_FLUSH_S:g} s", component="training"
                )
            )
            self.errors.add(record_for(problem, component="training"))

    def _training_outcome(self, code: int, result: dict[str, Any]) -> None:
        """Map the child's exit code to the run: done, stopped, or a terminal error."""
        if code in (3, -15, 143) and self.stop_request is not None:
            self._check_stop()
        if code != 0:
            kinds = {
                2: "invalid training config",
                3: "training stopped without a stop request",
                4: "invalid training data",
            }
            raise TerminalError(
                f"{kinds.get(code, f'training process failed (exit {code})')}: "
                f"{result.get('error') or 'see trainer.log'}",
                component="training",
                details={"exit_code": code},
            )
        self.outputs.model_dir = Path(result["final_model_dir"])
        self.outputs.checkpoints_dir = local_checkpoints(self.opts.work)
        self.record.loss_curve[:] = [[int(s), float(v)] for s, v in result.get("losses", [])]
        curve = self.record.loss_curve
        self.record.metrics.update(
            final_loss=curve[-1][1] if curve else None, steps_per_s=float(result.get("steps_per_s") or 0.0)
        )
        self.data.base_info = result.get("base_model") or {}

    def _evaluation(self, details: dict[str, Any]) -> None:
        from trainer import evaluate

        spec, model_dir = self._spec(), self.outputs.model_dir or Path()
        pipeline = evaluate.load_pipeline(model_dir, self.opts.device)
        metrics = evaluate.evaluate_model(pipeline, self.data.dataset)
        self.record.metrics.update(metrics)
        doc = evaluate.forecasts(
            pipeline,
            self.data.dataset,
            self.data.files,
            item_column=spec.data.item_id_column,
            timestamp_column=spec.data.timestamp_column,
        )
        path = self.opts.work / "evaluation" / "forecasts.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=1))
        self.outputs.forecasts = path
        details.update(metrics=metrics, forecast_items=len(doc["items"]))
        self.outputs.model_metadata = model_metadata(
            paths=self.paths,
            spec=spec,
            record=self.record,
            manifest=self.data.manifest.to_dict() if self.data.manifest else {},
            base_info=self.data.base_info,
            device=self.opts.device,
        )

    # -- endings --------------------------------------------------------------------------------
    def finish(self, completion: CompletionStatus, reason: str | None) -> int:
        """Final status, finalize, cleanup and poweroff; the exit code."""
        self._finishing = True
        status = self._final_status(completion, reason)
        if status is RunStatus.KILLED and completion is CompletionStatus.INTERRUPTED:
            completion = CompletionStatus.KILLED  # e.g. SIGTERM from a terminate after `invoke kill`
        exit_code = EXIT_CODES[completion]
        result = finalize(
            transfers=self.transfers,
            paths=self.paths,
            record=self.record,
            outputs=self.outputs,
            status=status,
            completion=completion,
            exit_code=exit_code,
            lock_path=self.opts.work / "finalize.lock",
        )
        if not result.succeeded:
            exit_code = exit_code or EXIT_CODES[CompletionStatus.FAILED]
            if status is RunStatus.RESULTS_SYNC:
                self._final_status(CompletionStatus.FAILED, f"finalize failed: {result.error}")
        if self.watcher is not None:
            self.watcher.stop()
        Cleanup(
            store=self.store,
            paths=self.paths,
            transfers=self.transfers,
            ec2=self.ec2,
            instance_id=self.instance_id,
            poweroff=keep.for_run(  # a failed run with keep_on_failure stays up for debugging first
                self.deps.poweroff or select_poweroff(local=self.opts.local, ec2=self.ec2),
                spec=self.spec,
                completion=completion,
                store=self.store,
                ec2=self.ec2,
                run_id=self.opts.run_id,
                env=self.opts.env,
                region=self.opts.region,
                until=self.watcher.deadline if self.watcher else None,
                local=self.opts.local,
            ),
            retrier=self.retrier.with_policy(retry_policy(self.opts.retry, max_retries=3)),
            errors=self.errors,
            trainer_log=self.outputs.trainer_log,
        ).run()
        self.transfers.close()
        log.info("run %s ended: %s (exit %d)", self.opts.run_id, completion.value, exit_code)
        return exit_code

    def _final_status(self, completion: CompletionStatus, reason: str | None) -> RunStatus:
        """Write the final status (if the state still allows it) and return the status now."""
        target = {
            CompletionStatus.FAILED: RunStatus.FAILED,
            CompletionStatus.KILLED: RunStatus.KILLED,
            CompletionStatus.INTERRUPTED: RunStatus.INTERRUPTED,
        }.get(completion)
        if target is None:
            return RunStatus.RESULTS_SYNC
        error = self.errors.last() if target is RunStatus.FAILED else None
        try:
            return self._state_call(
                lambda: self.store.transition(
                    self.opts.run_id, target, reason=(reason or target.value)[:500], error=error
                )
            ).status
        except IllegalTransitionError as exc:
            log.info("state is already %s (%s)", exc.current.value, exc)
            return exc.current if exc.current.is_final() else target
        except Exception as exc:
            log.error("could not write status %s: %s", target.value, exc)
            return target

    # -- stops and state ------------------------------------------------------------------------
    def request_stop(self, request: StopRequest) -> None:
        """Ask the run to stop (watcher thread or signal handler); only the first request counts."""
        with self._stop_lock:
            if self.stop_request is not None or self._finishing:
                return
            self.stop_request = request
        log.warning("stopping: %s", request.reason)
        if self.child is not None:
            self.child.request_stop()

    def _check_stop(self) -> None:
        if self.stop_request is not None:
            raise Stopped(self.stop_request)

    def _advance(self, status: RunStatus) -> None:
        self._check_stop()
        try:
            self._state_call(lambda: self.store.transition(self.opts.run_id, status))
        except IllegalTransitionError as exc:
            if exc.current is RunStatus.KILLED:
                self.request_stop(
                    StopRequest(status=RunStatus.KILLED, reason="killed by operator", source="state")
                )
                self._check_stop()
            raise TerminalError(f"cannot move to {status.value}: {exc}", component=status.value) from None
        except NotHeldError as exc:
            self.request_stop(StopRequest(status=RunStatus.KILLED, reason=str(exc), source="state"))
            self._check_stop()
        log.info("status -> %s", status.value)

    def _state_call(self, fn: Callable[[], Any]) -> Any:
        return self.retrier.call(fn, component="state", action="s3:PutObject", resource=self.store.location)

    def _keep_last_error(self, record: dict[str, Any]) -> None:
        """Every error record also becomes ``last_error`` in the state (best effort)."""
        if record["error_class"] == ErrorClass.CLEANUP.value or self._finishing:
            return
        try:
            self.store.record_error(self.opts.run_id, record)
        except Exception as exc:
            log.warning("could not record last_error: %s", exc)

    def _start_watcher(self) -> None:
        heartbeat = Heartbeat(
            self.store, self.opts.run_id, self.progress, interval_s=self.opts.heartbeat_interval_s
        )
        deadline, minutes = self._deadline()
        self.watcher = Watcher(
            run_id=self.opts.run_id,
            imds=IMDS(self.opts.imds_endpoint),
            store=self.store,
            on_stop=self.request_stop,
            deadline=deadline,
            max_runtime_min=minutes,
            heartbeat=heartbeat,
            spot_interval_s=self.opts.spot_interval_s,
            state_interval_s=self.opts.state_interval_s,
        ).start()

    def _deadline(self) -> tuple[float, float]:
        """Monotonic time to stop at: launch + max runtime, less a margin to checkpoint and finalize."""
        if self.opts.max_runtime_s is not None:
            return time.monotonic() + self.opts.max_runtime_s, self.opts.max_runtime_s / 60
        total_s = self._spec().instance.max_runtime_minutes * 60.0
        started = utc_now()
        try:
            snap = self.store.read()
            started = parse_iso(snap.doc["started_at"]) if snap is not None else started
        except Exception as exc:
            log.warning("launch time unknown (%s); counting max runtime from now", exc)
        left = total_s - min(300.0, 0.1 * total_s) - (utc_now() - started).total_seconds()
        return time.monotonic() + left, total_s / 60

    def _spec(self) -> runspec.RunSpec:
        if self.spec is None:
            raise TerminalError("no run spec loaded", component="run_spec")
        return self.spec


def child_config(
    spec: runspec.RunSpec,
    *,
    workdir: Path,
    device: str,
    base_model: str,
    inputs: Path,
    step_delay_s: float = 0.0,
) -> dict[str, Any]:
    """The config of ``python -m trainer.train`` for this run (resume: the newest local checkpoint)."""
    m = spec.model
    return {
        "base_model": base_model,
        "train": {
            "prediction_length": m.prediction_length,
            "context_length": int(m.context_length),
            "num_steps": m.num_steps,
            "learning_rate": float(m.learning_rate),
            "output_dir": str(workdir / "train"),
            "batch_size": m.batch_size,
            "finetune_mode": m.finetune_mode.value,
            "checkpoint_interval": m.checkpoint_interval,
            "seed": m.seed,
            "device": device,
            "step_delay_s": step_delay_s,
        },
        "inputs": str(inputs),
        "resume_from": "auto",
        "progress_path": str(workdir / "progress.jsonl"),
        "result_path": str(workdir / "result.json"),
    }


def local_checkpoints(workdir: Path) -> Path:
    """Where the child keeps checkpoints: ``TrainConfig(output_dir=workdir/"train").checkpoints_dir``."""
    return workdir / "train" / "checkpoints"


def _checkpoint_problem(path: Path) -> str | None:
    """``trainer.train.checkpoint_problem``, imported only when a checkpoint is there to check
    (``trainer.train`` imports torch: seconds the parent need not spend before training)."""
    from trainer.train import checkpoint_problem

    return checkpoint_problem(path)


def child_env(device: str) -> dict[str, str]:
    """On CPU one intra-op thread: the tiny model gains nothing from more, and on a busy
    2-core machine spinning OpenMP threads made training ~15x slower (measured: 2-5 vs
    32-41 steps/s). ``OMP_NUM_THREADS`` set by the user wins."""
    if device != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": "1"}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
