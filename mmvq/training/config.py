"""`TrainConfig`: every option of :func:`mmvq.train`, validated at construction.

The config is a flat dataclass that ``transformers.HfArgumentParser`` turns into CLI flags (and
reads from YAML/JSON), except for two nested groups,
:class:`~mmvq.training.balance.BalancerConfig` and :class:`~mmvq.training.align.AlignmentConfig`.
On the command line each nested group is one flag that takes a short form, ``key=value`` pairs or
a JSON object::

    --balancer gradnorm
    --balancer 'name=static,weights={"image": 1.0, "text": 2.0}'   # (JSON for the dict)
    --balancer '{"name": "dwa", "dwa_temperature": 2.0}'
    --alignment 0.1                       # the weight
    --alignment weight=0.1,temperature=0.5

In YAML they are plain mappings (``balancer: {name: gradnorm}``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from mmvq.training.align import AlignmentConfig
from mmvq.training.balance import BALANCERS, BalancerConfig
from mmvq.utils.checks import check_bool, check_choice, check_int, check_number, is_int
from mmvq.utils.configs import check_known_fields, parse_mapping

__all__ = [
    "TrainConfig",
    "MIXED_PRECISION",
    "LR_SCHEDULERS",
    "GAN_LOSSES",
    "ON_BAD_ROW",
    "parse_sub_config",
]

MIXED_PRECISION: tuple[str, ...] = ("no", "bf16", "fp16")
LR_SCHEDULERS: tuple[str, ...] = ("cosine", "linear", "constant")
GAN_LOSSES: tuple[str, ...] = ("hinge", "non-saturating")
ON_BAD_ROW: tuple[str, ...] = ("error", "skip")


def parse_sub_config(value: Any, cls: type, field_name: str, shorthand: str) -> Any:
    """Turn a nested-config value (instance, dict, JSON, ``k=v`` pairs or shorthand) into ``cls``.

    Args:
        value: what the user gave.
        cls: the config dataclass (``BalancerConfig``, ``AlignmentConfig``).
        field_name: the TrainConfig field, for error messages.
        shorthand: the field of ``cls`` a bare value sets (``name`` / ``weight``).
    """
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, (str, dict)):
        raise TypeError(
            f"TrainConfig.{field_name} must be a {cls.__name__}, a dict, or a string "
            f"('{shorthand}', 'key=value,...' or JSON), got {type(value).__name__}: {value!r}"
        )
    options = parse_mapping(
        value,
        f"TrainConfig.{field_name}",
        example=f"{shorthand}=...,other=...",
        shorthand=shorthand,
    )
    check_known_fields(cls, options, f"TrainConfig.{field_name}", "option")
    return cls(**options)


def _help(line: str) -> dict[str, str]:
    return {"help": line}


@dataclass
class TrainConfig:
    """Options of :func:`mmvq.train` (one flag each in the recipes).

    Steps are optimizer steps (one step = ``gradient_accumulation_steps`` micro-batches per
    process). ``*_every`` options count optimizer steps; 0 turns the periodic action off (the run
    still evaluates and checkpoints once at the end).
    """

    output_dir: str = field(
        default="outputs/mmvq",
        metadata=_help("Where checkpoints, samples, logs and metrics.json go."),
    )
    max_steps: int = field(
        default=1000, metadata=_help("Optimizer steps to train; <= 0: use num_epochs.")
    )
    num_epochs: int = field(default=1, metadata=_help("Epochs to train when max_steps <= 0."))
    per_device_batch_size: int = field(
        default=16, metadata=_help("Training batch size per process.")
    )
    per_device_eval_batch_size: int | None = field(
        default=None, metadata=_help("Eval batch size (default: the training one).")
    )
    gradient_accumulation_steps: int = field(
        default=1, metadata=_help("Micro-batches per optimizer step.")
    )
    learning_rate: float = field(
        default=2e-4, metadata=_help("Peak learning rate of the model (AdamW).")
    )
    disc_learning_rate: float | None = field(
        default=None, metadata=_help("Discriminators' learning rate (default: learning_rate).")
    )
    weight_decay: float = field(default=0.0, metadata=_help("AdamW weight decay."))
    adam_beta1: float = field(default=0.5, metadata=_help("AdamW beta1 (VQGAN uses 0.5)."))
    adam_beta2: float = field(default=0.9, metadata=_help("AdamW beta2 (VQGAN uses 0.9)."))
    adam_epsilon: float = field(default=1e-8, metadata=_help("AdamW epsilon."))
    lr_scheduler: str = field(
        default="cosine", metadata=_help(f"Learning-rate schedule after warm-up: {LR_SCHEDULERS}.")
    )
    lr_warmup_steps: int = field(default=0, metadata=_help("Linear warm-up steps."))
    max_grad_norm: float = field(default=1.0, metadata=_help("Gradient clipping norm (0: off)."))
    mixed_precision: str = field(
        default="no",
        metadata=_help(f"One of {MIXED_PRECISION}; the codebook always computes in fp32."),
    )
    seed: int = field(
        default=0, metadata=_help("Seed of everything (weights, shuffling, modality dropout).")
    )
    cpu: bool = field(default=False, metadata=_help("Train on the CPU even when a GPU is present."))
    shuffle: bool = field(
        default=True, metadata=_help("Shuffle the training data (map-style datasets).")
    )
    dataloader_drop_last: bool = field(
        default=True, metadata=_help("Drop the last incomplete training batch.")
    )
    dataloader_num_workers: int = field(default=0, metadata=_help("DataLoader worker processes."))
    cache_examples: bool = field(
        default=False,
        metadata=_help(
            "Keep each preprocessed example in memory after its first use (map-style data whose "
            "adapters preprocess deterministically; ignored, with a log line, otherwise). For "
            "data small enough to hold, where preprocessing takes a real share of each step "
            "(with dataloader_num_workers=0; a worker's cache lasts one epoch)."
        ),
    )
    gan_weight: float = field(
        default=0.1, metadata=_help("Weight of the GAN generator loss (0: no GAN head at all).")
    )
    gan_start_step: int = field(
        default=2000,
        metadata=_help("No GAN loss (and no discriminator training) before this step."),
    )
    gan_loss: str = field(default="hinge", metadata=_help(f"GAN loss: {GAN_LOSSES}."))
    adaptive_weight: bool = field(
        default=True, metadata=_help("Scale each modality's GAN loss by the VQGAN adaptive weight.")
    )
    adaptive_weight_max: float = field(
        default=1e4, metadata=_help("Upper clamp of the adaptive weight.")
    )
    balancer: BalancerConfig | str | None = field(
        default_factory=BalancerConfig,
        metadata=_help(
            f"Modality balancer: a name {sorted(BALANCERS)}, 'key=value,...' or JSON of "
            "BalancerConfig."
        ),
    )
    balancer_window: int = field(
        default=50, metadata=_help("Steps per window for window-based balancers (DWA).")
    )
    alignment: AlignmentConfig | str | None = field(
        default_factory=AlignmentConfig,
        metadata=_help(
            "Cross-modal code-matching loss: a weight, 'weight=0.1,temperature=1.0' or JSON of "
            "AlignmentConfig."
        ),
    )
    ema_decay: float = field(
        default=0.0, metadata=_help("EMA of the weights used for evaluation (0: off; e.g. 0.999).")
    )
    log_every: int = field(default=10, metadata=_help("Log training statistics every N steps."))
    eval_every: int = field(
        default=500,
        metadata=_help("Evaluate and write samples every N steps (0: only at the end)."),
    )
    save_every: int = field(
        default=500, metadata=_help("Checkpoint every N steps (0: only at the end).")
    )
    keep_last_checkpoints: int = field(
        default=2, metadata=_help("Checkpoints kept (older ones are deleted; 0: keep all).")
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata=_help(
            "'latest' (the newest checkpoint of this same run in output_dir) or a checkpoint "
            "directory."
        ),
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata=_help(
            "Delete the outputs of an earlier run in output_dir (its checkpoints, logs, samples, "
            "metrics, final model) instead of refusing to start."
        ),
    )
    on_bad_row: str = field(
        default="error",
        metadata=_help(
            f"A data row that cannot be read: {ON_BAD_ROW}. 'error' stops before the first step "
            "(map-style data: every row is checked up front; a stream: each row on arrival), "
            "'skip' leaves it out and counts it (skipped_rows in metrics.json)."
        ),
    )
    report_to: str = field(
        default="auto",
        metadata=_help(
            "Trackers: 'auto' (TensorBoard when installed), 'none', 'tensorboard', 'all', ..."
        ),
    )
    tracker_project_name: str = field(
        default="mmvq", metadata=_help("Project name given to the trackers.")
    )
    max_eval_samples: int | None = field(
        default=256, metadata=_help("Evaluate on at most N samples (None: all).")
    )
    num_sample_rows: int = field(
        default=8, metadata=_help("Examples written to samples/step-N/ at each evaluation.")
    )
    max_consecutive_nonfinite: int = field(
        default=20, metadata=_help("Abort after this many non-finite steps in a row.")
    )
    tqdm: bool = field(default=True, metadata=_help("Show a progress bar (main process only)."))

    def __post_init__(self) -> None:
        self.balancer = parse_sub_config(self.balancer, BalancerConfig, "balancer", "name")
        self.alignment = parse_sub_config(self.alignment, AlignmentConfig, "alignment", "weight")
        self._check_ints()
        self._check_floats()
        self._check_choices()
        if not isinstance(self.output_dir, str) or not self.output_dir.strip():
            raise ValueError(
                f"TrainConfig.output_dir must be a non-empty path, got {self.output_dir!r}; "
                "e.g. output_dir='outputs/my_run'"
            )
        if self.resume_from_checkpoint is not None and not (
            isinstance(self.resume_from_checkpoint, str) and self.resume_from_checkpoint.strip()
        ):
            raise ValueError(
                f"TrainConfig.resume_from_checkpoint must be None, 'latest' or a checkpoint "
                f"directory, got {self.resume_from_checkpoint!r}"
            )
        if self.resume_from_checkpoint == "":
            self.resume_from_checkpoint = None

    def _check_ints(self) -> None:
        minimum = {
            "per_device_batch_size": 1,
            "gradient_accumulation_steps": 1,
            "num_epochs": 1,
            "lr_warmup_steps": 0,
            "seed": 0,
            "dataloader_num_workers": 0,
            "gan_start_step": 0,
            "balancer_window": 1,
            "log_every": 1,
            "eval_every": 0,
            "save_every": 0,
            "keep_last_checkpoints": 0,
            "num_sample_rows": 0,
            "max_consecutive_nonfinite": 1,
        }
        for name, low in minimum.items():
            check_int(f"TrainConfig.{name}", getattr(self, name), minimum=low)
        if not is_int(self.max_steps):
            raise ValueError(
                f"TrainConfig.max_steps must be an int (<= 0 to train num_epochs epochs), got "
                f"{self.max_steps!r}"
            )
        for name in ("per_device_eval_batch_size", "max_eval_samples"):
            check_int(f"TrainConfig.{name}", getattr(self, name), minimum=1, optional=True)

    def _check_floats(self) -> None:
        def number(
            name: str, low: float, high: float = math.inf, *, low_open: bool = False
        ) -> None:
            check_number(
                f"TrainConfig.{name}", getattr(self, name), low=low, high=high, low_open=low_open
            )

        number("learning_rate", 0.0, low_open=True)
        if self.disc_learning_rate is not None:
            number("disc_learning_rate", 0.0, low_open=True)
        number("weight_decay", 0.0)
        number("adam_beta1", 0.0, 1.0)
        number("adam_beta2", 0.0, 1.0)
        number("adam_epsilon", 0.0, low_open=True)
        number("max_grad_norm", 0.0)
        number("gan_weight", 0.0)
        number("adaptive_weight_max", 0.0, low_open=True)
        number("ema_decay", 0.0, 1.0)
        if self.ema_decay == 1.0:
            raise ValueError(
                "TrainConfig.ema_decay=1.0 would freeze the EMA weights at their initial values; "
                "use a value in (0, 1), e.g. 0.999, or 0 to turn the EMA off"
            )

    def _check_choices(self) -> None:
        choices = {
            "mixed_precision": MIXED_PRECISION,
            "lr_scheduler": LR_SCHEDULERS,
            "gan_loss": GAN_LOSSES,
            "on_bad_row": ON_BAD_ROW,
        }
        for name, allowed in choices.items():
            check_choice(f"TrainConfig.{name}", getattr(self, name), allowed)
        for name in (
            "cpu",
            "shuffle",
            "dataloader_drop_last",
            "adaptive_weight",
            "tqdm",
            "overwrite_output_dir",
        ):
            check_bool(f"TrainConfig.{name}", getattr(self, name))
        if not isinstance(self.report_to, str) or not self.report_to.strip():
            raise ValueError(
                "TrainConfig.report_to must be a tracker name ('auto', 'none', 'tensorboard', "
                "'all', "
                f"or a comma-separated list), got {self.report_to!r}"
            )

    @property
    def eval_batch_size(self) -> int:
        """The evaluation batch size: ``per_device_eval_batch_size``, else the training one."""
        return self.per_device_eval_batch_size or self.per_device_batch_size

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of every option (nested configs as dicts)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from :meth:`to_dict` output (unknown keys are an error)."""
        check_known_fields(cls, data, "TrainConfig.from_dict", "option")
        return cls(**data)
