"""Checkpoints and S3, both ways: restore the newest complete one, upload new ones as they land.

- :func:`restore_checkpoint` downloads the newest *complete* checkpoint of the run:
  :class:`CheckpointUploader` writes ``trainer_state.json`` last, so a folder in
  S3 without it is torn and skipped (like a torn local folder).
- :class:`CheckpointUploader` uploads checkpoints in a background thread while
  training goes on, and prunes local ones already safe in S3.

Folder names and the step parser are :mod:`common.layout`'s.
"""

from __future__ import annotations

import logging
import queue
import shutil
import threading
from collections.abc import Callable
from pathlib import Path

from common.layout import CHECKPOINT_PREFIX, TRAINER_STATE_NAME, checkpoint_name, checkpoint_step
from trainer.errors import TrainerError
from trainer.transfers import Artifact, RemoteObject, Transfers

log = logging.getLogger(__name__)


def remote_checkpoints(
    transfers: Transfers, prefix: str, *, component: str = "data_sync"
) -> dict[int, list[RemoteObject]]:
    """Complete checkpoints under ``prefix`` (those holding ``trainer_state.json``), by step."""
    folders: dict[int, list[RemoteObject]] = {}
    for obj in transfers.list(prefix, component=component):
        step = checkpoint_step(obj.key[len(prefix) :].split("/", 1)[0])
        if step is not None:
            folders.setdefault(step, []).append(obj)
    complete = {
        s: objs for s, objs in folders.items() if any(o.key.endswith("/" + TRAINER_STATE_NAME) for o in objs)
    }
    for step in sorted(set(folders) - set(complete)):
        log.warning("skipping torn checkpoint-%d in S3 (no %s)", step, TRAINER_STATE_NAME)
    return complete


def restore_checkpoint(
    transfers: Transfers,
    prefix: str,
    local_dir: Path,
    problem: Callable[[Path], str | None],
    *,
    component: str = "data_sync",
) -> int | None:
    """Download the newest complete checkpoint of ``prefix`` into ``local_dir``.

    Args:
        problem: why a local folder is not resumable (``trainer.checkpoints.checkpoint_problem``).

    Returns:
        The step restored, or ``None`` when S3 holds no usable checkpoint.
    """
    for step, objects in sorted(
        remote_checkpoints(transfers, prefix, component=component).items(), reverse=True
    ):
        target = local_dir / checkpoint_name(step)
        if target.is_dir() and problem(target) is None:
            log.info("checkpoint-%d already here", step)
            return step
        shutil.rmtree(target, ignore_errors=True)
        transfers.download(objects, local_dir, strip=prefix, component=component)
        why = problem(target)
        if why is None:
            log.info("restored checkpoint-%d from %s", step, transfers.url(prefix))
            return step
        log.warning("checkpoint-%d from S3 is not resumable (%s); trying an older one", step, why)
        shutil.rmtree(target, ignore_errors=True)
    return None


def durable_at(transfers: Transfers, prefix: str, step: int, *, component: str = "data_sync") -> str | None:
    """When checkpoint ``step`` became complete in S3: its ``trainer_state.json`` (written last) landed."""
    key = f"{prefix}{checkpoint_name(step)}/{TRAINER_STATE_NAME}"
    return next((o.last_modified for o in transfers.list(key, component=component) if o.key == key), None)


class CheckpointUploader:
    """Uploads checkpoint folders in the background, ``trainer_state.json`` last.

    Args:
        transfers: the S3 side.
        prefix: the run's ``checkpoints/`` prefix.
        on_uploaded: called with ``(step, artifacts)`` after each upload.
        prune: delete local checkpoints older than one just uploaded.
    """

    def __init__(
        self,
        transfers: Transfers,
        prefix: str,
        *,
        on_uploaded: Callable[[int, list[Artifact]], None] | None = None,
        prune: bool = True,
    ) -> None:
        self.transfers, self.prefix, self.on_uploaded, self.prune = transfers, prefix, on_uploaded, prune
        self.uploaded: dict[int, list[Artifact]] = {}
        self.failures: list[TrainerError] = []
        self._queue: queue.Queue[tuple[Path, int] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="checkpoint-upload", daemon=True)
        self._thread.start()

    def submit(self, path: Path, step: int) -> None:
        """Queue ``path`` (a complete ``checkpoint-<step>`` folder)."""
        self._queue.put((Path(path), step))

    def close(self, timeout: float | None = None) -> bool:
        """Finish queued uploads; ``False`` if they did not end within ``timeout``."""
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            path, step = item
            try:
                artifacts = self.transfers.upload_tree(
                    path, f"{self.prefix}{path.name}/", component="training", last=(TRAINER_STATE_NAME,)
                )
            except TrainerError as exc:
                log.error("checkpoint-%d upload failed: %s", step, exc)
                self.failures.append(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - keep the thread alive for later checkpoints
                log.exception("checkpoint-%d upload failed", step)
                self.failures.append(TrainerError(str(exc), component="training"))
                continue
            self.uploaded[step] = artifacts
            log.info("checkpoint-%d uploaded (%d files)", step, len(artifacts))
            if self.on_uploaded is not None:
                self.on_uploaded(step, artifacts)
            if self.prune:
                self._prune(path.parent, step)

    def _prune(self, folder: Path, newest: int) -> None:
        for old in folder.glob(f"{CHECKPOINT_PREFIX}*"):
            step = checkpoint_step(old.name)
            if step is not None and step < newest and step in self.uploaded:
                shutil.rmtree(old, ignore_errors=True)
