"""The S3 key layout: the one place that knows where every object lives.

::

    cached-datasets/training-data/YYYY/MM/*.parquet   training data (read-only for the instance)
    cached-datasets/configs/ scripts/ python-env/     code bundle and packed env
    {env}/system-state.json                           live state of the active run (the lock)
    {env}/YYYY/MM/DD-HHMMSS/                          run outputs
        models/ checkpoints/ user-configs/ model_metadata.json _SUCCESS
        user-configs/ run-spec.json launch-record.json launch-request.json
    {env}/logs/{run_id}/training.json                 full execution log
    {env}/logs/{run_id}/cleanup_status.json           what was cleaned, verified

A run id is the UTC start time ``YYYYMMDD-HHMMSS``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from common.errors import UserError

CACHED = "cached-datasets/"
TRAINING_DATA = CACHED + "training-data/"
CODE_PREFIX = CACHED + "scripts/"
ENV_PREFIX_DIR = CACHED + "python-env/"
CONFIGS_PREFIX = CACHED + "configs/"

# Names inside a run's outputs (``RunPaths``) and inside a checkpoint folder.
USER_CONFIGS_DIR = "user-configs/"  # a run's launch inputs: written by launch, only read on the instance
RUN_SPEC_NAME = "run-spec.json"  # under user-configs/
LAUNCH_RECORD_NAME = "launch-record.json"  # under user-configs/
LAUNCH_REQUEST_NAME = "launch-request.json"  # under user-configs/: what a relaunch sends again
TRAINER_LOG_NAME = "trainer.log"  # under logs/{run_id}/
BOOTSTRAP_LOG_NAME = "bootstrap.log"  # under logs/{run_id}/
FORECASTS_KEY = "evaluation/forecasts.json"  # relative to the run prefix (and the local mirror)
METRICS_KEY = "evaluation/metrics.json"  # every model x window x item scored, beside the forecasts
CHECKPOINT_PREFIX = "checkpoint-"  # checkpoints/checkpoint-<step>/
TRAINER_STATE_NAME = "trainer_state.json"  # written last into a checkpoint folder: "complete"
LOCAL_RUNS_DIR = "runs"  # the laptop's mirror: runs/{env}/{run_id}/

RUN_ID_FORMAT = "%Y%m%d-%H%M%S"
_RUN_ID = re.compile(r"^(\d{4})(\d{2})(\d{2})-(\d{6})$")
# The env-name rule, the one definition: 2-16 lowercase letters, digits or '-', starting with a
# letter (it becomes part of the bucket name, S3 prefixes and IAM names). The schema's
# ``$defs/env`` pattern is tested equal to ENV_PATTERN.
ENV_NAME = r"[a-z][a-z0-9-]{1,15}"
ENV_PATTERN = f"^{ENV_NAME}$"
_ENV = re.compile(ENV_PATTERN)
_RUN_PREFIX = re.compile(rf"^({ENV_NAME})/(\d{{4}})/(\d{{2}})/(\d{{2}})-(\d{{6}})(/|$)")


class LayoutError(ValueError):
    """A run id or env name that does not fit the layout."""


class RunIdTakenError(UserError):
    """The run id of this second is already used in the env (two launches within one second)."""

    def __init__(self, *, env: str, run_id: str) -> None:
        self.env, self.run_id = env, run_id
        super().__init__(
            f"run id {run_id} is already used in env {env!r}: another launch started within the same "
            f"second and wrote its outputs; launch again in a second (a run id is its start second, so "
            f"the next one is free)"
        )


def new_run_id(now: datetime, *, env: str | None = None, taken: Callable[[str], bool] | None = None) -> str:
    """The run id for a run started at ``now`` (converted to UTC).

    Args:
        env: the env it runs in (for the refusal's message).
        taken: whether a run id already has outputs in the env (a launch within the same second);
            ``None`` checks nothing.

    Raises:
        RunIdTakenError: ``taken(run_id)``: the second launch is refused, never given the first's
            outputs to overwrite (a run id stays its start second, so the start time it names is true).
    """
    run_id = now.astimezone(UTC).strftime(RUN_ID_FORMAT)
    if taken is not None and taken(run_id):
        raise RunIdTakenError(env=env or "?", run_id=run_id)
    return run_id


def parse_run_id(run_id: str) -> datetime:
    """The UTC start time a run id encodes.

    Raises:
        LayoutError: if ``run_id`` is not ``YYYYMMDD-HHMMSS``.
    """
    try:
        if not _RUN_ID.fullmatch(run_id):
            raise ValueError
        return datetime.strptime(run_id, RUN_ID_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise LayoutError(
            f"run id {run_id!r} is not of the form YYYYMMDD-HHMMSS (UTC), e.g. 20261125-140502"
        ) from None


def check_env(env: str) -> str:
    """Return ``env`` if it is a valid environment name.

    Raises:
        LayoutError: naming the rule an env name must follow.
    """
    if not isinstance(env, str) or not _ENV.fullmatch(env):
        raise LayoutError(
            f"env name {env!r} is invalid: use 2-16 lowercase letters, digits or '-', "
            "starting with a letter (e.g. dev, prod)"
        )
    return env


def checkpoint_name(step: int) -> str:
    """The folder name of the checkpoint at ``step``: ``checkpoint-<step>``."""
    return f"{CHECKPOINT_PREFIX}{int(step)}"


def checkpoint_step(name: str) -> int | None:
    """The step of a ``checkpoint-<step>`` folder name (a path's last part), else ``None``."""
    name = str(name).rstrip("/").rsplit("/", 1)[-1]
    suffix = name[len(CHECKPOINT_PREFIX) :] if name.startswith(CHECKPOINT_PREFIX) else ""
    return int(suffix) if suffix.isdigit() else None


def local_run_dir(root: Path, env: str, run_id: str) -> Path:
    """The laptop's mirror of one run: ``<root>/{env}/{run_id}/`` (``root`` is usually ``runs/``)."""
    parse_run_id(run_id)
    return Path(root) / check_env(env) / run_id


def state_key(env: str) -> str:
    """Key of the live state file, which is also the run lock."""
    return f"{check_env(env)}/system-state.json"


def logs_root(env: str) -> str:
    """Prefix under which every run's logs live."""
    return f"{check_env(env)}/logs/"


@dataclass(frozen=True, kw_only=True)
class RunPaths:
    """Every key of one run."""

    env: str
    run_id: str

    def __post_init__(self) -> None:
        check_env(self.env)
        parse_run_id(self.run_id)

    @property
    def prefix(self) -> str:
        """``{env}/YYYY/MM/DD-HHMMSS/``: the run's outputs."""
        r = self.run_id
        return f"{self.env}/{r[0:4]}/{r[4:6]}/{r[6:8]}-{r[9:15]}/"

    @property
    def models(self) -> str:
        return self.prefix + "models/"

    @property
    def checkpoints(self) -> str:
        return self.prefix + "checkpoints/"

    @property
    def user_configs(self) -> str:
        return self.prefix + USER_CONFIGS_DIR

    @property
    def run_spec(self) -> str:
        return self.user_configs + RUN_SPEC_NAME

    @property
    def launch_record(self) -> str:
        return self.user_configs + LAUNCH_RECORD_NAME

    @property
    def launch_request(self) -> str:
        """The stored RunInstances request and placements (``schemas/launch-request.schema.json``)."""
        return self.user_configs + LAUNCH_REQUEST_NAME

    @property
    def forecasts(self) -> str:
        return self.prefix + FORECASTS_KEY

    @property
    def evaluation_metrics(self) -> str:
        return self.prefix + METRICS_KEY

    @property
    def model_metadata(self) -> str:
        return self.prefix + "model_metadata.json"

    @property
    def success(self) -> str:
        """The sentinel, written last by finalize."""
        return self.prefix + "_SUCCESS"

    @property
    def failed_upload(self) -> str:
        """Written when an upload failed after every retry."""
        return self.prefix + "_FAILED_UPLOAD"

    @property
    def logs(self) -> str:
        return f"{self.env}/logs/{self.run_id}/"

    @property
    def training_log(self) -> str:
        return self.logs + "training.json"

    @property
    def cleanup_status(self) -> str:
        return self.logs + "cleanup_status.json"

    @property
    def bootstrap_log(self) -> str:
        return self.logs + BOOTSTRAP_LOG_NAME

    @property
    def trainer_log(self) -> str:
        return self.logs + TRAINER_LOG_NAME

    @property
    def state(self) -> str:
        return state_key(self.env)

    @classmethod
    def from_prefix(cls, key: str) -> RunPaths:
        """The run whose output prefix ``key`` starts with (``{env}/YYYY/MM/DD-HHMMSS/...``).

        Raises:
            LayoutError: if ``key`` is not under a run prefix.
        """
        m = _RUN_PREFIX.match(key)
        if not m:
            raise LayoutError(f"{key!r} is not under a run prefix {{env}}/YYYY/MM/DD-HHMMSS/")
        env, y, mo, d, t, _ = m.groups()
        return cls(env=env, run_id=f"{y}{mo}{d}-{t}")
