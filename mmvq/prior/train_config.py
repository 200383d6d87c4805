"""Options of :func:`mmvq.prior.train_prior` (:class:`PriorTrainConfig`, one flag each in the
phase-2 recipe ``recipes/train_prior.py``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from mmvq.utils.checks import (
    check_bool,
    check_choice,
    check_int,
    check_number,
    check_positive_int,
)

__all__ = ["PriorTrainConfig"]


@dataclass
class PriorTrainConfig:
    """Options of :func:`train_prior` (one flag each in ``recipes/train_prior.py``, phase 2).

    Attributes:
        output_dir: checkpoints, logs, ``metrics.json``, ``final/``, the codes cache.
        seed: seeds everything (weights, data order, modality orders, condition dropout).
        max_steps: optimizer steps.
        per_device_batch_size: sequences per batch and process.
        gradient_accumulation_steps: micro-batches per optimizer step.
        learning_rate / weight_decay / adam_beta1 / adam_beta2: AdamW (no decay on norms,
            biases).
        lr_warmup_steps / lr_scheduler: linear warm-up, then ``cosine``/``linear``/``constant``.
        max_grad_norm: gradient clipping (0: off).
        condition_dropout: probability that a row keeps one modality only (see
            :class:`~mmvq.prior.data.PriorCollator`).
        random_order: random modality order per row (else the tokenizer's order).
        encode_batch_size: rows per tokenizer-model call when encoding the data.
        log_every / eval_every / save_every: in steps (0: off); ``keep_last_checkpoints`` 0
            keeps all.
        resume_from_checkpoint: ``None``, ``"latest"`` (the newest checkpoint of this same run)
            or a checkpoint directory.
        overwrite_output_dir: delete the outputs of an earlier run in ``output_dir`` (its
            checkpoints, logs, metrics, final prior; not the codes cache) instead of refusing to
            start (:mod:`mmvq.training.run_identity`: a directory belongs to one run).
        report_to: ``"auto"`` (tensorboard when installed), ``"none"`` or tracker names.
        tracker_project_name: the trackers' run name.
        mixed_precision: ``"no"``, ``"fp16"`` or ``"bf16"``.
        cpu: train on the CPU even with a GPU.
        tqdm: progress bar on the main process.
        max_eval_samples: rows of the evaluation's teacher-forced loss.
    """

    output_dir: str = "outputs/prior"
    seed: int = 0
    max_steps: int = 800
    per_device_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    learning_rate: float = 3e-3
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    lr_warmup_steps: int = 30
    lr_scheduler: str = "cosine"
    max_grad_norm: float = 1.0
    condition_dropout: float = 0.15
    random_order: bool = True
    encode_batch_size: int = 64
    log_every: int = 20
    eval_every: int = 0
    save_every: int = 0
    keep_last_checkpoints: int = 2
    resume_from_checkpoint: str | None = None
    overwrite_output_dir: bool = False
    report_to: str = "auto"
    tracker_project_name: str = "mmvq-prior"
    mixed_precision: str = "no"
    cpu: bool = False
    tqdm: bool = True
    max_eval_samples: int = 256

    def __post_init__(self) -> None:
        for name in (
            "max_steps",
            "per_device_batch_size",
            "gradient_accumulation_steps",
            "encode_batch_size",
            "max_eval_samples",
        ):
            check_positive_int(f"PriorTrainConfig.{name}", getattr(self, name))
        for name in (
            "log_every",
            "eval_every",
            "save_every",
            "keep_last_checkpoints",
            "lr_warmup_steps",
        ):
            check_int(f"PriorTrainConfig.{name}", getattr(self, name), minimum=0)
        check_choice(
            "PriorTrainConfig.lr_scheduler", self.lr_scheduler, ("cosine", "linear", "constant")
        )
        check_choice(
            "PriorTrainConfig.mixed_precision", self.mixed_precision, ("no", "fp16", "bf16")
        )
        check_number(
            "PriorTrainConfig.condition_dropout", self.condition_dropout, low=0.0, high=1.0
        )
        check_bool("PriorTrainConfig.overwrite_output_dir", self.overwrite_output_dir)
        check_number("PriorTrainConfig.learning_rate", self.learning_rate, low=0.0, low_open=True)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
