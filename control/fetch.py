"""Bring a run home: ``fetch`` downloads its artifacts, ``logs`` reads its log.

``runs/{env}/{run_id}/`` (``common.layout.local_run_dir``) mirrors the run prefix
(``models/``, ``user-configs/``, ``model_metadata.json``, ``evaluation/``, ``_SUCCESS``
...) and puts the run's log folder under ``logs/`` (:func:`mirror_name`). Checkpoints
are large and only needed to resume, so they are skipped unless asked for. Every
contract document fetched is validated against its schema; the result lists any that fail.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import layout
from control.backend import Backend, check_env
from control.localdir import PROJECT_ROOT
from control.s3io import DocumentError, get_bytes, iter_objects, parse_json

log = logging.getLogger(__name__)

DEFAULT_RUNS_DIR = PROJECT_ROOT / layout.LOCAL_RUNS_DIR
MIRROR_LOGS = "logs/"


def mirror_name(paths: layout.RunPaths, key: str) -> str:
    """Where ``fetch`` puts the object ``key`` of run ``paths``, relative to its local run dir.

    Raises:
        LayoutError: ``key`` is neither under the run's prefix nor its log folder.
    """
    if key.startswith(paths.logs):
        return MIRROR_LOGS + key[len(paths.logs) :]
    if key.startswith(paths.prefix):
        return key[len(paths.prefix) :]
    raise layout.LayoutError(f"{key} is not an object of run {paths.run_id}")


def schema_of(paths: layout.RunPaths) -> dict[str, str]:
    """The contract documents of a fetched run (mirror name -> schema kind)."""
    return {
        mirror_name(paths, paths.training_log): "training",
        mirror_name(paths, paths.cleanup_status): "cleanup-status",
        mirror_name(paths, paths.model_metadata): "model-metadata",
        mirror_name(paths, paths.success): "sentinel",
        mirror_name(paths, paths.failed_upload): "sentinel",
    }


@dataclass(frozen=True, kw_only=True)
class FetchResult:
    """Where a run was downloaded and what was checked."""

    run_id: str
    env: str
    dest: Path
    files: tuple[str, ...]
    bytes: int
    skipped: tuple[str, ...] = ()
    valid: tuple[str, ...] = ()
    invalid: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.invalid


@dataclass(frozen=True, kw_only=True)
class RunLogs:
    """A run's log as ``invoke logs`` shows it."""

    run_id: str
    env: str
    training: dict[str, Any] | None
    text: str
    source: str | None
    problem: str | None = None
    attempt: int | None = None  # whose trainer log ``text`` is
    attempts: tuple[int, ...] = ()  # every attempt with a trainer log, oldest first


def resolve_run_id(backend: Backend, env: str, run_id: str | None) -> tuple[Any, str]:
    """The stack outputs and the run id (the newest run when ``run_id`` is None or 'latest').

    Raises:
        ConfigError: a malformed run id, or no run in the env.
    """
    from common.errors import ConfigError
    from control.runs import run_ids

    check_env(env)
    backend.check_credentials()
    outputs = backend.stack_outputs(env)
    if run_id in (None, "", "latest"):
        with backend.errors("s3:ListBucket", f"s3://{outputs.bucket}/{env}/"):
            ids = run_ids(backend.clients().s3, outputs.bucket, env)
        if not ids:
            raise ConfigError(f"no run in env {env!r} yet; start one with `invoke launch --env={env}`")
        return outputs, ids[-1]
    try:
        layout.parse_run_id(run_id)
    except layout.LayoutError as exc:
        raise ConfigError(f"{exc}; list runs with `invoke runs --env={env}`") from None
    return outputs, run_id


def fetch_run(
    backend: Backend,
    *,
    env: str,
    run_id: str | None,
    dest_root: Path | None = None,
    checkpoints: bool = False,
) -> FetchResult:
    """``invoke fetch``: download one run to ``{dest_root}/{env}/{run_id}/``.

    Raises:
        ConfigError: the run has no objects in S3.
    """
    from common.errors import ConfigError

    outputs, run_id = resolve_run_id(backend, env, run_id)
    paths = layout.RunPaths(env=env, run_id=run_id)
    dest = layout.local_run_dir(Path(dest_root or DEFAULT_RUNS_DIR), env, run_id)
    s3 = backend.clients().s3
    with backend.errors("s3:GetObject", f"s3://{outputs.bucket}/{paths.prefix}"):
        todo: list[tuple[str, str]] = []
        skipped: list[str] = []
        for prefix in (paths.prefix, paths.logs):
            for obj in iter_objects(s3, outputs.bucket, prefix):
                rel = mirror_name(paths, obj["Key"])
                if not checkpoints and obj["Key"].startswith(paths.checkpoints):
                    skipped.append(rel)
                    continue
                todo.append((obj["Key"], rel))
        if not todo and not skipped:
            raise ConfigError(
                f"run {run_id} has nothing in s3://{outputs.bucket}/{paths.prefix} or "
                f"{paths.logs}; list runs with `invoke runs --env={env}`"
            )
        with ThreadPoolExecutor(max_workers=8) as pool:
            sizes = list(pool.map(lambda kr: _download(s3, outputs.bucket, kr[0], dest / kr[1]), todo))
    valid, invalid = _check_documents(dest, paths)
    return FetchResult(
        run_id=run_id,
        env=env,
        dest=dest,
        files=tuple(sorted(r for _, r in todo)),
        bytes=sum(sizes),
        skipped=tuple(sorted(skipped)),
        valid=tuple(valid),
        invalid=invalid,
    )


def _check_documents(dest: Path, paths: layout.RunPaths) -> tuple[list[str], dict[str, str]]:
    """The fetched contract documents that match their schema, and why the others do not."""
    valid, invalid = [], {}
    for rel, kind in schema_of(paths).items():
        file = dest / rel
        if not file.exists():
            continue
        try:
            parse_json(file.read_bytes(), str(file), kind)
            valid.append(rel)
        except DocumentError as exc:
            invalid[rel] = str(exc)
    return valid, invalid


def _download(s3: Any, bucket: str, key: str, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".part")
    s3.download_file(bucket, key, str(tmp))
    tmp.replace(target)
    return target.stat().st_size


def read_logs(
    backend: Backend, *, env: str, run_id: str | None, tail: int | None = None, attempt: int | None = None
) -> RunLogs:
    """``invoke logs``: the run's trainer log (the newest attempt's, or ``attempt``'s; else its
    ``bootstrap.log``) and its training.json.

    Raises:
        ConfigError: ``attempt`` has no trainer log (the message lists the attempts that do).
    """
    from common.errors import ConfigError

    outputs, run_id = resolve_run_id(backend, env, run_id)
    paths = layout.RunPaths(env=env, run_id=run_id)
    s3 = backend.clients().s3
    training, problem = None, None
    with backend.errors("s3:GetObject", f"s3://{outputs.bucket}/{paths.logs}"):
        body = get_bytes(s3, outputs.bucket, paths.training_log)
        if body is not None:
            try:
                training = parse_json(body, f"s3://{outputs.bucket}/{paths.training_log}", "training")
            except DocumentError as exc:
                problem = str(exc)
        logs = trainer_logs(s3, outputs.bucket, paths)
        if attempt is not None and attempt not in logs:
            have = ", ".join(map(str, logs)) or "none"
            raise ConfigError(
                f"run {run_id} has no trainer log of attempt {attempt} (attempts with one: {have}); "
                f"leave out --attempt for the newest"
            )
        shown = attempt if attempt is not None else max(logs, default=None)
        key = logs[shown] if shown is not None else paths.bootstrap_log  # bootstrap failed: no trainer
        raw = get_bytes(s3, outputs.bucket, key)
        text, source = (raw.decode("utf-8", "replace"), key) if raw is not None else ("", None)
    if tail:
        text = "\n".join(text.splitlines()[-tail:])
    if training is None and source is None and problem is None:
        problem = (
            f"run {run_id} has no log in s3://{outputs.bucket}/{paths.logs} yet; "
            f"if it is running, watch it with `invoke monitor --env={env}`"
        )
    return RunLogs(
        run_id=run_id,
        env=env,
        training=training,
        text=text,
        source=source,
        problem=problem,
        attempt=shown,
        attempts=tuple(logs),
    )


def trainer_logs(s3: Any, bucket: str, paths: layout.RunPaths) -> dict[int, str]:
    """The run's trainer logs by attempt, oldest first (each attempt uploads its own)."""
    found = {}
    for obj in iter_objects(s3, bucket, paths.logs):
        number = layout.trainer_log_attempt(obj["Key"][len(paths.logs) :])
        if number is not None:
            found[number] = obj["Key"]
    return dict(sorted(found.items()))
