"""Everything :func:`mmvq.train` does before its first step: the data checked, the accelerator,
the discriminators, the optimizers and LR schedule, the resume from a checkpoint, the trackers.

:func:`setup_training` returns a :class:`TrainingRun`, what :class:`~mmvq.training.loop.Loop`
steps through (``bench/bench_train.py`` times the loop's real steps through it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from mmvq.training.balance import ModalityBalancer, build_balancer
from mmvq.training.checkpoint import (
    check_fingerprint,
    load_checkpoint,
    model_fingerprint,
    resolve_checkpoint,
)
from mmvq.training.checkpoint_files import CheckpointDamagedError, read_marker
from mmvq.training.config import TrainConfig
from mmvq.training.ema import ModelEMA
from mmvq.training.evaluate import Scorer
from mmvq.training.gan import DiscriminatorSet
from mmvq.training.inputs import as_dataset, check_output_dir, make_loader
from mmvq.training.run_dir import RunDirectory
from mmvq.training.run_identity import (
    OutputDirError,
    RunLock,
    RunOptions,
    claim_output_dir,
    run_identity,
)
from mmvq.utils.logging import get_logger

__all__ = [
    "Modules",
    "Optimizers",
    "TrainingRun",
    "claim_run",
    "find_resume_checkpoint",
    "make_accelerator",
    "make_scheduler",
    "release_run",
    "setup_training",
]

logger = get_logger(__name__)


@dataclass
class Modules:
    """The modules a run trains: ``model``/``discs`` as prepared by Accelerate (possibly
    DDP-wrapped), ``net``/``raw_discs`` unwrapped; the balancer; the EMA copy (or ``None``)."""

    model: nn.Module
    net: nn.Module
    discs: nn.Module | None
    raw_discs: DiscriminatorSet | None
    balancer: ModalityBalancer
    ema: ModelEMA | None


@dataclass
class Optimizers:
    """The generator's AdamW and LR schedule; the discriminators' own AdamW (or ``None``)."""

    generator: Any
    schedule: Any
    discriminator: Any | None


@dataclass
class TrainingRun:
    """A run ready for its first step.

    Attributes:
        state: what a checkpoint stores: ``step``, ``epoch``, ``batch_in_epoch`` (the data
            position), ``nonfinite_steps``, ``skipped_rows`` (bad rows left out, all
            processes), ``train_seconds``.
        streaming: the training data is a stream (already split per rank: moved to the device
            by the loop, not by Accelerate).
        run_id: the run's fingerprint (``run.json``; recorded in its checkpoints).
        lock: the output directory's lock, held by the main process until the run ends.
    """

    cfg: TrainConfig
    accelerator: Any
    run_dir: RunDirectory
    modules: Modules
    optimizers: Optimizers
    state: dict[str, Any]
    total_steps: int
    fingerprint: dict[str, Any]
    train_loader: Any
    eval_loader: Any
    translation_scorers: Mapping[str, Scorer] | None
    streaming: bool
    run_id: str | None = None
    lock: RunLock | None = None

    def release(self) -> None:
        """Release the output directory's lock (idempotent)."""
        if self.lock is not None:
            self.lock.release()


def _report_to(cfg: TrainConfig) -> list[str] | None:
    value = cfg.report_to.strip()
    if value == "none":
        return None
    if value == "auto":
        from accelerate.utils import is_tensorboard_available

        return ["tensorboard"] if is_tensorboard_available() else None
    return [v.strip() for v in value.split(",") if v.strip()]


def make_accelerator(cfg: TrainConfig, run_dir: RunDirectory) -> Any:
    """The run's ``Accelerator``: accumulation, precision, trackers logging under
    ``run_dir.logs``, seedable sampling (exact resume) and DDP that tolerates unused
    parameters (an absent modality leaves its adapter without gradient)."""
    from accelerate import Accelerator
    from accelerate.utils import (
        DataLoaderConfiguration,
        DistributedDataParallelKwargs,
        ProjectConfiguration,
    )

    return Accelerator(
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        mixed_precision=cfg.mixed_precision,
        cpu=cfg.cpu,
        log_with=_report_to(cfg),
        project_config=ProjectConfiguration(
            project_dir=str(run_dir.root), logging_dir=str(run_dir.logs)
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def _train_subset(train_ds: Any, cfg: TrainConfig) -> str:
    """Which training examples stand in for missing eval data, in words."""
    try:
        size: int | None = len(train_ds)
    except TypeError:
        size = None
    limit = cfg.max_eval_samples
    if limit is None:
        return "every training example" if size is None else f"all {size} training examples"
    if size is not None and size <= limit:
        fewer = f" (fewer than max_eval_samples={limit})" if size < limit else ""
        return f"all {size} training examples{fewer}"
    return f"the first {limit} training examples"


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> Any:
    """The learning-rate schedule ``cfg.lr_scheduler`` (transformers' cosine, linear or
    constant, each after ``cfg.lr_warmup_steps`` of warm-up) over ``total_steps``."""
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    if cfg.lr_scheduler == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, cfg.lr_warmup_steps, total_steps)
    if cfg.lr_scheduler == "linear":
        return get_linear_schedule_with_warmup(optimizer, cfg.lr_warmup_steps, total_steps)
    return get_constant_schedule_with_warmup(optimizer, cfg.lr_warmup_steps)


def _total_steps(cfg: TrainConfig, loader: Any) -> int:
    if cfg.max_steps > 0:
        return cfg.max_steps
    try:
        per_epoch = math.ceil(len(loader) / cfg.gradient_accumulation_steps)
    except TypeError:
        raise ValueError(
            "the training data is a stream without a length, so TrainConfig.max_steps must be > 0 "
            "(num_epochs needs a length)"
        ) from None
    return max(1, per_epoch * cfg.num_epochs)


def _flat_config(cfg: TrainConfig) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in cfg.to_dict().items():
        if isinstance(value, dict):
            for sub, v in value.items():
                flat[f"{key}.{sub}"] = (
                    v if isinstance(v, (int, float, str, bool)) else json.dumps(v)
                )
        else:
            flat[key] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat


def claim_run(accelerator: Any, run_dir: RunDirectory, identity: Any, cfg: RunOptions) -> Any:
    """The main process locks and claims the output directory; every process learns the
    verdict (one broadcast) and raises the same :class:`OutputDirError` on a refusal."""
    from accelerate.utils import broadcast_object_list

    lock, verdict = None, [None]
    if accelerator.is_main_process:
        try:
            lock = claim_output_dir(run_dir, identity, cfg)
        except OutputDirError as exc:
            verdict = [str(exc)]
    verdict = broadcast_object_list(verdict)
    if verdict[0] is not None:
        raise OutputDirError(verdict[0])
    return lock


def release_run(run_dir: RunDirectory, lock: RunLock | None, fresh: bool) -> None:
    """Release the lock of a run that failed before its first step; a directory that was
    unclaimed before it (``fresh``: no ``run.json``) is left unclaimed."""
    if lock is not None:
        if fresh:
            run_dir.run_file.unlink(missing_ok=True)
        lock.release()


def find_resume_checkpoint(
    run_dir: RunDirectory,
    cfg: RunOptions,
    fingerprint: dict[str, Any],
    accelerator: Any,
    run_id: str,
) -> Any:
    """The checkpoint to resume from (checked against the model's shape), or ``None``."""
    resume_path = resolve_checkpoint(run_dir, cfg.resume_from_checkpoint, run_id)
    if resume_path is not None:
        check_fingerprint(resume_path, fingerprint)
        theirs = (read_marker(resume_path) or {}).get("run")
        if theirs != run_id and accelerator.is_main_process:
            logger.warning(
                "resuming from %s, a checkpoint of another run (%s; this run is %s): its data, "
                "seed or options differ, so this run continues from its weights and state",
                resume_path,
                theirs,
                run_id,
            )
    elif cfg.resume_from_checkpoint == "latest" and accelerator.is_main_process:
        logger.warning(
            "resume_from_checkpoint='latest' but %s holds no checkpoint: starting fresh",
            run_dir.root,
        )
    return resume_path


def _prepare(
    accelerator: Any,
    model: nn.Module,
    discs: DiscriminatorSet | None,
    balancer: ModalityBalancer,
    train_loader: Any,
    cfg: TrainConfig,
) -> tuple[Modules, Optimizers, Any, bool]:
    """Optimizers built and everything prepared by Accelerate: the generator (+ balancer) and
    the discriminators as separate modules with separate optimizers."""
    balancer_params = [p for p in balancer.parameters() if p.requires_grad]
    g_params = model.parameter_groups(cfg.learning_rate)
    if balancer_params:
        g_params.append({"params": balancer_params, "lr": cfg.learning_rate})
    betas = (cfg.adam_beta1, cfg.adam_beta2)
    g_opt = torch.optim.AdamW(
        g_params,
        lr=cfg.learning_rate,
        betas=betas,
        eps=cfg.adam_epsilon,
        weight_decay=cfg.weight_decay,
    )
    streaming = isinstance(getattr(train_loader, "dataset", None), torch.utils.data.IterableDataset)
    if streaming:  # already split per rank by MultimodalIterableDataset: do not shard again
        model, g_opt = accelerator.prepare(model, g_opt)
    else:
        model, g_opt, train_loader = accelerator.prepare(model, g_opt, train_loader)
    d_opt = None
    if discs is not None:
        d_opt = torch.optim.AdamW(
            discs.parameters(),
            lr=cfg.disc_learning_rate or cfg.learning_rate,
            betas=betas,
            eps=cfg.adam_epsilon,
            weight_decay=cfg.weight_decay,
        )
        discs, d_opt = accelerator.prepare(discs, d_opt)
    net = accelerator.unwrap_model(model)
    modules = Modules(
        model=model,
        net=net,
        discs=discs,
        raw_discs=accelerator.unwrap_model(discs) if discs is not None else None,
        balancer=balancer,
        ema=None,
    )
    return modules, Optimizers(g_opt, None, d_opt), train_loader, streaming


def _load_schedule(schedule: Any, saved: Any, path: Any) -> None:
    """Restore the LR schedule from the ``scheduler`` entry of the checkpoint's trainer state,
    refusing one that is not the state this schedule writes (a resume must not go on with another
    learning rate)."""
    expected = schedule.state_dict()
    problem = None
    if not isinstance(saved, dict):
        problem = f"is {type(saved).__name__}, not the scheduler's state"
    elif set(saved) != set(expected):
        problem = f"has keys {sorted(saved)}, the schedule's are {sorted(expected)}"
    elif not isinstance(saved["last_epoch"], int) or isinstance(saved["last_epoch"], bool):
        problem = f"has last_epoch={saved['last_epoch']!r}, not a step count"
    if problem is None:
        try:
            schedule.load_state_dict(saved)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            problem = f"could not be restored ({type(exc).__name__}: {exc})"
    if problem is not None:
        raise CheckpointDamagedError(
            f"checkpoint {str(path)!r} is damaged: the 'scheduler' entry of its "
            f"trainer_state.json {problem}; resume from another checkpoint (or set "
            "--resume_from_checkpoint to an earlier one), or start over with --overwrite_output_dir"
        )


def _log_start(accelerator: Any, cfg: TrainConfig, total_steps: int, step: int) -> None:
    """One line: device, CPU threads, processes, steps, batch size, output directory."""
    logger.info(
        "Training on %s with %d CPU thread(s) per process, %d process(es): steps %d..%d, batch "
        "%d per device x %d accumulation; outputs in %s",
        accelerator.device,
        torch.get_num_threads(),
        accelerator.num_processes,
        step + 1,
        total_steps,
        cfg.per_device_batch_size,
        cfg.gradient_accumulation_steps,
        cfg.output_dir,
    )


def _resume(
    accelerator: Any, path: Any, state: dict[str, Any], modules: Modules, schedule: Any
) -> None:
    """Restore a checkpoint: accelerate's state, then the trainer state, the LR schedule, the
    balancer and the EMA weights."""
    loaded = load_checkpoint(accelerator, path)
    for key in state:
        state[key] = loaded.state.get(key, state[key])
    _load_schedule(schedule, loaded.state.get("scheduler"), path)
    device = accelerator.device
    if "balancer" in loaded.tensors:
        modules.balancer.load_state_dict(
            {k: v.to(device) for k, v in loaded.tensors["balancer"].items()}
        )
    if modules.ema is not None and "ema" in loaded.tensors:
        modules.ema.load_state_dict({k: v.to(device) for k, v in loaded.tensors["ema"].items()})
    logger.info(
        "Resumed from checkpoint %s: step %d, epoch %d (%d batches into it), %d non-finite "
        "steps so far",
        path,
        state["step"],
        state["epoch"],
        state["batch_in_epoch"],
        state["nonfinite_steps"],
    )


def _data(
    model: nn.Module,
    train_data: Any,
    eval_data: Any,
    column_map: Mapping[str, str] | None,
    cfg: TrainConfig,
) -> tuple[Any, Any, int]:
    """Both splits checked (every row of a map-style one); the rows left out of training."""
    train = as_dataset(train_data, model, column_map, "train_data", cfg, check_batch=True)
    evaluation = None
    if eval_data is not None:
        evaluation = as_dataset(eval_data, model, column_map, "eval_data", cfg, check_batch=False)
    return train.data, evaluation.data if evaluation is not None else None, train.skipped_rows


def setup_training(
    model: nn.Module,
    train_data: Any,
    cfg: TrainConfig,
    eval_data: Any | None = None,
    translation_scorers: Mapping[str, Scorer] | None = None,
    column_map: Mapping[str, str] | None = None,
) -> TrainingRun:
    """Everything before the first step (see the module docstring); the arguments are
    :func:`mmvq.train`'s. The output directory is claimed (and locked) first: a run never
    writes into another run's directory (:mod:`mmvq.training.run_identity`)."""
    run_dir = RunDirectory(check_output_dir(cfg.output_dir))
    accelerator = make_accelerator(cfg, run_dir)
    identity = run_identity(cfg, model_fingerprint(model), train_data)
    fresh = not run_dir.run_file.exists()
    lock = claim_run(accelerator, run_dir, identity, cfg)
    try:
        run = _setup(
            model, train_data, cfg, eval_data, translation_scorers, column_map, run_dir, accelerator
        )
    except BaseException:
        release_run(run_dir, lock, fresh)  # a run refused before its first step
        raise
    run.run_id, run.lock = identity.fingerprint, lock
    return run


def _setup(
    model: nn.Module,
    train_data: Any,
    cfg: TrainConfig,
    eval_data: Any | None,
    translation_scorers: Mapping[str, Scorer] | None,
    column_map: Mapping[str, str] | None,
    run_dir: RunDirectory,
    accelerator: Any,
) -> TrainingRun:
    from accelerate.utils import set_seed

    # ---- data, checked before anything heavy (and before seeding: the check may draw numbers)
    train_ds, eval_ds, skipped = _data(model, train_data, eval_data, column_map, cfg)
    set_seed(cfg.seed)
    discs = DiscriminatorSet.from_model(model, cfg.gan_loss) if cfg.gan_weight > 0 else None
    fingerprint = model_fingerprint(model, discs)
    run_id = run_identity(cfg, model_fingerprint(model), train_data).fingerprint
    resume_path = find_resume_checkpoint(run_dir, cfg, fingerprint, accelerator, run_id)

    train_loader = make_loader(train_ds, model, cfg, train=True)
    eval_loader = make_loader(eval_ds if eval_ds is not None else train_ds, model, cfg, train=False)
    if eval_ds is None:
        logger.warning("no eval_data: evaluating on %s", _train_subset(train_ds, cfg))
    balancer = build_balancer(cfg.balancer, model.modalities).to(accelerator.device)
    modules, optimizers, train_loader, streaming = _prepare(
        accelerator, model, discs, balancer, train_loader, cfg
    )
    # After prepare: each process's loader holds its share of the batches.
    total_steps = _total_steps(cfg, train_loader)
    optimizers.schedule = make_scheduler(optimizers.generator, cfg, total_steps)
    modules.ema = ModelEMA(modules.net, cfg.ema_decay) if cfg.ema_decay > 0 else None

    state = {
        "step": 0,
        "epoch": 0,
        "batch_in_epoch": 0,
        "nonfinite_steps": 0,
        "skipped_rows": skipped,
        "train_seconds": 0.0,
    }
    if resume_path is not None:
        _resume(accelerator, resume_path, state, modules, optimizers.schedule)
    if accelerator.is_main_process:
        accelerator.init_trackers(cfg.tracker_project_name, config=_flat_config(cfg))
    _log_start(accelerator, cfg, total_steps, state["step"])
    return TrainingRun(
        cfg=cfg,
        accelerator=accelerator,
        run_dir=run_dir,
        modules=modules,
        optimizers=optimizers,
        state=state,
        total_steps=total_steps,
        fingerprint=fingerprint,
        train_loader=train_loader,
        eval_loader=eval_loader,
        translation_scorers=translation_scorers,
        streaming=streaming,
        run_id=run_id,
    )
