"""The S3 key layout: the one place that knows where every object lives.

::

    cached-datasets/training-data/YYYY/MM/*.parquet   training data (read-only for the instance)
    cached-datasets/configs/ scripts/ python-env/     code bundle and packed env
    {env}/system-state.json                           live state of the active single run (the lock)
    {env}/YYYY/MM/DD-HHMMSS/                          run outputs (a sweep member: DD-HHMMSS-NNN/)
        models/ checkpoints/ user-configs/ model_metadata.json _SUCCESS
        user-configs/ run-spec.json launch-record.json launch-request.json
    {env}/logs/{run_id}/training.json                 full execution log
    {env}/logs/{run_id}/cleanup_status.json           what was cleaned, verified
    {env}/sweeps/{sweep_id}/sweep.json                a sweep's manifest (its points, members, job ids)
    {env}/sweeps/{sweep_id}/runs/{run_id}/system-state.json   a sweep member's own state and lock

A run id is the UTC start time ``YYYYMMDD-HHMMSS``. A sweep id is its submit second in the same
form, and its members' run ids are ``{sweep_id}-{NNN}`` (001..999, the grid point's number): a
single run holds the env's one lock, each sweep member holds its own, so a sweep's members run at
once beside (at most) one single run.
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
TRAINER_LOG_NAME = "trainer.log"  # under logs/{run_id}/: the first attempt's (trainer_log_name)
BOOTSTRAP_LOG_NAME = "bootstrap.log"  # under logs/{run_id}/
FORECASTS_KEY = "evaluation/forecasts.json"  # relative to the run prefix (and the local mirror)
METRICS_KEY = "evaluation/metrics.json"  # every model x window x item scored, beside the forecasts
CHECKPOINT_PREFIX = "checkpoint-"  # checkpoints/checkpoint-<step>/
TRAINER_STATE_NAME = "trainer_state.json"  # written last into a checkpoint folder: "complete"
LOCAL_RUNS_DIR = "runs"  # the laptop's mirror: runs/{env}/{run_id}/

RUN_ID_FORMAT = "%Y%m%d-%H%M%S"
# A sweep member's number: 001..999 (three digits, never 000). The run-id rule, the one definition:
# the schema's ``$defs/run_id`` pattern is tested equal to RUN_ID_PATTERN.
MEMBER_NUMBER = r"(?:00[1-9]|0[1-9][0-9]|[1-9][0-9]{2})"
MAX_MEMBERS = 999
RUN_ID_PATTERN = rf"^[0-9]{{8}}-[0-9]{{6}}(-{MEMBER_NUMBER})?$"
SWEEP_ID_PATTERN = r"^[0-9]{8}-[0-9]{6}$"
_RUN_ID = re.compile(rf"^(\d{{4}})(\d{{2}})(\d{{2}})-(\d{{6}})(?:-({MEMBER_NUMBER}))?$", re.ASCII)
_SWEEP_ID = re.compile(SWEEP_ID_PATTERN, re.ASCII)
SWEEPS_DIR = "sweeps/"  # {env}/sweeps/{sweep_id}/
SWEEP_MANIFEST_NAME = "sweep.json"
STATE_NAME = "system-state.json"
# The env-name rule, the one definition: 2-16 lowercase letters, digits or '-', starting with a
# letter (it becomes part of the bucket name, S3 prefixes and IAM names). The schema's
# ``$defs/env`` pattern is tested equal to ENV_PATTERN.
ENV_NAME = r"[a-z][a-z0-9-]{1,15}"
ENV_PATTERN = f"^{ENV_NAME}$"
_ENV = re.compile(ENV_PATTERN)
_RUN_PREFIX = re.compile(
    rf"^({ENV_NAME})/(\d{{4}})/(\d{{2}})/(\d{{2}})-(\d{{6}})(?:-({MEMBER_NUMBER}))?(/|$)", re.ASCII
)
_MEMBER_STATE = re.compile(
    rf"^({ENV_NAME})/sweeps/(\d{{8}}-\d{{6}})/runs/(\d{{8}}-\d{{6}}-{MEMBER_NUMBER})/system-state\.json$",
    re.ASCII,
)


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


_ATTEMPT_LOG = re.compile(r"trainer-attempt-([1-9][0-9]*)\.log")


def trainer_log_name(attempt: int | None) -> str:
    """The trainer log's name under ``logs/{run_id}/`` for ``attempt``: ``trainer.log`` for the
    first (or an attempt that never learnt its number), ``trainer-attempt-N.log`` for a later one.

    Each attempt uploads its own key, so a relaunch never overwrites the log of the attempt it
    recovers (the spot notice, the checkpoint it took), and an instance still finishing in its
    shutdown grace cannot overwrite the relaunch's.
    """
    return TRAINER_LOG_NAME if attempt is None or attempt <= 1 else f"trainer-attempt-{attempt}.log"


def trainer_log_attempt(name: str) -> int | None:
    """The attempt whose trainer log ``name`` is (:func:`trainer_log_name`); ``None``: not one."""
    if name == TRAINER_LOG_NAME:
        return 1
    match = _ATTEMPT_LOG.fullmatch(name)
    return int(match.group(1)) if match else None


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
    """The UTC start time a run id encodes (a sweep member's: its sweep's submit second).

    Raises:
        LayoutError: if ``run_id`` is neither ``YYYYMMDD-HHMMSS`` nor ``YYYYMMDD-HHMMSS-NNN``.
    """
    try:
        if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
            raise ValueError
        return datetime.strptime(run_id[:15], RUN_ID_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise LayoutError(
            f"run id {run_id!r} is not of the form YYYYMMDD-HHMMSS (UTC), e.g. 20261125-140502, "
            "or YYYYMMDD-HHMMSS-NNN for a sweep member (NNN 001..999), e.g. 20261125-140502-003"
        ) from None


def parse_sweep_id(sweep_id: str) -> datetime:
    """The UTC submit second a sweep id encodes.

    Raises:
        LayoutError: if ``sweep_id`` is not ``YYYYMMDD-HHMMSS``.
    """
    try:
        if not isinstance(sweep_id, str) or not _SWEEP_ID.fullmatch(sweep_id):
            raise ValueError
        return datetime.strptime(sweep_id, RUN_ID_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        raise LayoutError(
            f"sweep id {sweep_id!r} is not of the form YYYYMMDD-HHMMSS (UTC), e.g. 20261125-140502"
        ) from None


def sweep_of(run_id: str) -> str | None:
    """The sweep id of a sweep member's run id, ``None`` for a single run.

    Raises:
        LayoutError: if ``run_id`` is not a run id.
    """
    parse_run_id(run_id)
    return run_id[:15] if len(run_id) > 15 else None


def member_number(run_id: str) -> int | None:
    """A sweep member's grid point number (1..999), ``None`` for a single run."""
    return int(run_id[16:]) if sweep_of(run_id) else None


def member_run_id(sweep_id: str, number: int) -> str:
    """The run id of grid point ``number`` (1..999) of ``sweep_id``: ``{sweep_id}-{NNN}``.

    Raises:
        LayoutError: a bad sweep id or a number outside 1..999.
    """
    parse_sweep_id(sweep_id)
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= MAX_MEMBERS:
        raise LayoutError(f"sweep member number {number!r} is not between 1 and {MAX_MEMBERS}")
    return f"{sweep_id}-{number:03d}"


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
    """Key of the env's live state file, which is also the single run's lock (one per env)."""
    return f"{check_env(env)}/{STATE_NAME}"


def sweeps_root(env: str) -> str:
    """Prefix under which every sweep of ``env`` lives: ``{env}/sweeps/``."""
    return f"{check_env(env)}/{SWEEPS_DIR}"


def sweep_prefix(env: str, sweep_id: str) -> str:
    """``{env}/sweeps/{sweep_id}/``: one sweep's manifest and its members' state files."""
    parse_sweep_id(sweep_id)
    return f"{sweeps_root(env)}{sweep_id}/"


def sweep_manifest_key(env: str, sweep_id: str) -> str:
    """``{env}/sweeps/{sweep_id}/sweep.json``: the sweep's manifest (``schemas/sweep.schema.json``)."""
    return sweep_prefix(env, sweep_id) + SWEEP_MANIFEST_NAME


def member_states_prefix(env: str, sweep_id: str) -> str:
    """``{env}/sweeps/{sweep_id}/runs/``: under it, each member's ``{run_id}/system-state.json``."""
    return sweep_prefix(env, sweep_id) + "runs/"


def member_of_state_key(key: str) -> tuple[str, str] | None:
    """``(env, run_id)`` of a sweep member's state key, ``None`` for any other key."""
    m = _MEMBER_STATE.fullmatch(key)
    if not m or not m.group(3).startswith(m.group(2) + "-"):
        return None
    return m.group(1), m.group(3)


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
        """``{env}/YYYY/MM/DD-HHMMSS/`` (a sweep member: ``DD-HHMMSS-NNN/``): the run's outputs."""
        r = self.run_id
        return f"{self.env}/{r[0:4]}/{r[4:6]}/{r[6:8]}-{r[9:]}/"

    @property
    def sweep_id(self) -> str | None:
        """The sweep this run is a member of, ``None`` for a single run."""
        return sweep_of(self.run_id)

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
        """The first attempt's trainer log (each later attempt has its own: :meth:`trainer_log_of`)."""
        return self.logs + TRAINER_LOG_NAME

    def trainer_log_of(self, attempt: int | None) -> str:
        """The trainer log of ``attempt`` (:func:`trainer_log_name`)."""
        return self.logs + trainer_log_name(attempt)

    @property
    def state(self) -> str:
        """The run's state file and lock: the env's for a single run, its own for a sweep member
        (``{env}/sweeps/{sweep_id}/runs/{run_id}/system-state.json``)."""
        sweep = self.sweep_id
        if sweep is None:
            return state_key(self.env)
        return f"{member_states_prefix(self.env, sweep)}{self.run_id}/{STATE_NAME}"

    @classmethod
    def from_prefix(cls, key: str) -> RunPaths:
        """The run whose output prefix ``key`` starts with (``{env}/YYYY/MM/DD-HHMMSS[-NNN]/...``).

        Raises:
            LayoutError: if ``key`` is not under a run prefix.
        """
        m = _RUN_PREFIX.match(key)
        if not m:
            raise LayoutError(f"{key!r} is not under a run prefix {{env}}/YYYY/MM/DD-HHMMSS[-NNN]/")
        env, y, mo, d, t, n, _ = m.groups()
        return cls(env=env, run_id=f"{y}{mo}{d}-{t}" + (f"-{n}" if n else ""))
