"""The ``data_sync`` phase: everything training needs, on this disk.

In order: a previous attempt's sentinel is cleared (a resume; a run that already
finished normally is terminal, or, for a recovered attempt, already done), the user
configs are copied, the data is downloaded and verified against its manifest, loaded
and validated (unusable items dropped and counted), the child's inputs and validation
window files are written, the base model fetched (when it lives in S3) and pinned
(:func:`trainer.base_model.resolve_base`: a Hugging Face id to its commit sha, a folder
to its weights' sha256), and the newest complete checkpoint of this run restored.
The transfers themselves live in :mod:`trainer.sync`.
Last, the evaluation's libraries start importing in the background (:mod:`trainer.warmup`),
once the training child has reported its first step, so the evaluation does not pay for them.
"""

from __future__ import annotations

from typing import Any

from trainer import checkpoint_sync, sync, warmup
from trainer.base_model import BaseRef, ModelLoadError, resolve_base
from trainer.checkpoints import checkpoint_problem
from trainer.context import RunContext
from trainer.errors import TerminalError
from trainer.training import local_checkpoints
from trainer.watcher import Progress


def phase(ctx: RunContext, details: dict[str, Any]) -> None:
    """Run data sync; its facts go into ``details`` (training.json)."""
    from trainer.inputs_file import save_inputs, save_window  # numpy: once there is data to save

    spec, work, paths = ctx.require_spec(), ctx.opts.work, ctx.paths
    details["previous_attempt"] = sync.clear_previous_sentinel(
        ctx.transfers, paths.success, paths.failed_upload, recovered=ctx.attempt.resumed_recovery
    )
    ctx.outputs.user_configs = sync.download_user_configs(
        ctx.transfers, paths.user_configs, work / "user-configs"
    )
    manifest, files, verified = sync.sync_data(ctx.transfers, spec.data.prefix, work / "data")
    ctx.data.manifest, ctx.data.files = manifest, files
    details.update(
        manifest={"count": manifest.count, "bytes": manifest.total_bytes},
        verification=verified,
        user_configs=len(ctx.outputs.user_configs),
    )
    ctx.data.dataset = sync.load_training_data(files, spec)
    details["dataset"] = ctx.data.dataset.summary()
    ctx.data.inputs = save_inputs(ctx.data.dataset.train_inputs, work / "inputs.npz")
    ctx.data.validation = save_window(ctx.data.dataset.validation, work / "validation.npz")
    fetched = sync.fetch_base_model(ctx.transfers, spec.model.base, work / "base-model")
    ref = pin_base(fetched)
    ctx.data.base_ref, ctx.data.base_model = ref.to_dict(), ref.location
    details["base_model"] = {"base": spec.model.base, "kind": ref.kind, "revision": ref.revision}
    step = checkpoint_sync.restore_checkpoint(
        ctx.transfers, paths.checkpoints, local_checkpoints(work), checkpoint_problem
    )
    details["restored_checkpoint_step"] = step
    if step is not None and ctx.attempt.resumed_recovery:
        ctx.attempt.checkpoint_durable_at = checkpoint_sync.durable_at(ctx.transfers, paths.checkpoints, step)
    # after numpy/pandas/pyarrow are in (the warm-up's safety rests on it): see trainer.warmup
    warmup.start(ready=lambda: child_stepped(ctx.progress))


def child_stepped(progress: Progress) -> bool:
    """The training child has reported a step (its imports and model load are behind it).

    Not ``total_steps``: startup sets that from the run spec before the child exists.
    """
    return progress.loss is not None


def pin_base(base: str) -> BaseRef:
    """The base model pinned to a folder and revision, before any GPU time is spent on it.

    Raises:
        TerminalError: the base cannot be found (the message names it and says why).
    """
    try:
        return resolve_base(base)
    except ModelLoadError as exc:
        raise TerminalError(str(exc), component="data_sync") from None
