"""The Hugging Face Trainer of one training attempt: model, dataset, ``TrainingArguments``.

:func:`build_trainer` loads the seeded base model (LoRA-wrapped for ``lora``), builds the
Chronos-2 training dataset in the plan's micro-batches (under torchrun each rank takes its
share of the one stream, :func:`trainer.distributed.rank_shard`) and the
``Chronos2Trainer`` (under torchrun the one that keeps rank 0's RNG state,
:func:`trainer.distributed.trainer_class`); :func:`training_arguments` is its
``TrainingArguments``. :mod:`trainer.finetune` runs it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.layout import TRAINER_STATE_NAME
from trainer import precision as prec
from trainer.distributed import World, rank_shard, trainer_class
from trainer.model import BaseModelInfo, load_base_model, seed_everything
from trainer.train_config import TrainConfig

logger = logging.getLogger(__name__)

# fit's LoRA defaults (chronos.chronos2.pipeline.Chronos2Pipeline.fit)
LORA_DEFAULTS: dict[str, Any] = {
    "r": 8,
    "lora_alpha": 16,
    "target_modules": [
        "self_attention.q",
        "self_attention.v",
        "self_attention.k",
        "self_attention.o",
        "output_patch_embedding.output_layer",
    ],
}


def build_trainer(
    model_source: str,
    train_inputs: Sequence[dict[str, Any]],
    config: TrainConfig,
    plan: prec.PrecisionPlan,
    world: World,
) -> tuple[Any, BaseModelInfo, int]:
    """Seeded model (and LoRA wrapper), training dataset (micro-batches; each rank its share of
    the stream, :func:`trainer.distributed.rank_shard`) and ``Chronos2Trainer``."""
    from chronos.chronos2.dataset import Chronos2Dataset, DatasetMode
    from chronos.chronos2.trainer import Chronos2Trainer
    from transformers.trainer_callback import PrinterCallback

    model, info = load_base_model(model_source, device=config.device, seed=config.seed)
    output_patch_size = int(model.chronos_config.output_patch_size)
    if config.finetune_mode == "lora":
        from peft import LoraConfig, get_peft_model

        seed_everything(config.seed)
        model = get_peft_model(model, LoraConfig(**LORA_DEFAULTS))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dataset = Chronos2Dataset(
        inputs=list(train_inputs),
        context_length=config.context_length,
        prediction_length=config.prediction_length,
        batch_size=plan.micro_batch,
        output_patch_size=output_patch_size,
        min_past=config.min_past if config.min_past is not None else config.prediction_length,
        mode=DatasetMode.TRAIN,
    )
    trainer_cls = trainer_class(world) if world.distributed else Chronos2Trainer
    shard = rank_shard(dataset, world) if world.distributed else dataset
    trainer = trainer_cls(model=model, args=training_arguments(config, plan), train_dataset=shard)
    trainer.pop_callback(PrinterCallback)
    logger.info(
        "training %s (%s) for %d steps in %s (%s); %d trainable parameters",
        info.base, config.finetune_mode, config.num_steps, plan.describe(), plan.reason, trainable,
    )  # fmt: skip
    return trainer, info, trainable


def load_finished_checkpoint(trainer: Any, checkpoint: Path) -> None:
    """Take weights and state from a checkpoint that ends training, without training.

    ``Trainer.train`` would run one step past ``max_steps`` when resumed at the end (or
    go on training after an early stop).
    """
    from transformers.trainer_callback import TrainerState

    logger.info("%s ends the training: loading it, no training left", checkpoint)
    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(checkpoint / TRAINER_STATE_NAME))


def training_arguments(config: TrainConfig, plan: prec.PrecisionPlan | None = None) -> Any:
    """The ``TrainingArguments`` of ``config`` (lr schedule, seed, save and log steps) under
    ``plan`` (precision, micro-batch x accumulation; default: ``plan_precision`` of the config)."""
    from transformers.training_args import TrainingArguments

    on_gpu = config.device == "cuda"
    if plan is None:
        plan = prec.plan_precision(
            config.precision, device=config.device, capability=prec.capability() if on_gpu else None,
            batch_size=config.batch_size,
        )  # fmt: skip
    args = TrainingArguments(
        output_dir=str(config.checkpoints_dir),
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        optim="adamw_torch_fused",
        logging_strategy="steps",
        logging_steps=config.log_interval,
        disable_tqdm=True,
        report_to="none",
        max_steps=config.num_steps,
        dataloader_num_workers=0,
        save_strategy="steps",
        save_steps=config.checkpoint_interval,
        save_only_model=False,
        save_total_limit=config.save_total_limit,
        prediction_loss_only=True,
        eval_strategy="no",
        ignore_data_skip=True,
        seed=config.seed,
        use_cpu=not on_gpu,
        ddp_backend="gloo" if config.world_size > 1 and not on_gpu else None,  # CUDA: NCCL
        **plan.training_args(),
    )
    if on_gpu:
        args._n_gpu = 1  # no DataParallel (as fit's disable_data_parallel)
    return args
