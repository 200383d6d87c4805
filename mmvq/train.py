"""The training loop: :func:`train`, driven by Hugging Face Accelerate.

One optimizer step, per process::

    for each of gradient_accumulation_steps micro-batches (accelerator.accumulate(model, discs)):
        snapshot the model's buffers (the codebook's EMA state) and the balancer's state
        out = model(batch)                            # codebook EMA update happens here
        loss = balancer.combine(rec losses) + sum(commitment) + alignment + GAN generator loss
        all ranks agree whether the loss is finite (all-reduce); if not: restore the snapshot,
            drop the window's gradients, count it in nonfinite_steps, skip the step
        backward; clip; AdamW step (generator and balancer parameters)
        from gan_start_step: discriminator step on (real, fake.detach()) with its own AdamW
    EMA of weights; LR schedule (warm-up + cosine); log / evaluate / checkpoint

The model (generator) and the discriminators are separate modules with separate optimizers,
each prepared separately (never one DDP module). DDP uses ``find_unused_parameters=True``
because a batch that lacks a modality leaves its adapter unused. Every rank runs the same
control flow: anything that decides it (the finiteness of the loss, log/eval/save steps) is
either all-reduced or a function of the step counter.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmvq.align import alignment_loss
from mmvq.balance import ModalityBalancer, build_balancer
from mmvq.ema import ModelEMA
from mmvq.evaluate import Scorer, evaluate
from mmvq.train_checkpoint import (
    check_fingerprint,
    load_checkpoint,
    model_fingerprint,
    resolve_checkpoint,
    save_checkpoint,
)
from mmvq.train_config import TrainConfig
from mmvq.train_gan import DiscriminatorSet, gan_inputs, generator_gan_loss
from mmvq.train_logging import MetricWindow
from mmvq.utils.metrics import flatten_metrics

__all__ = ["train", "TrainConfig", "TrainResult", "TrainingError"]

logger = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"
LOG_NAME = "train_log.jsonl"


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. the loss stayed non-finite for too many steps)."""


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        model: the trained model (unwrapped; the live weights, not the EMA).
        metrics: the final evaluation plus ``train_seconds`` (data loading and steps, summed
            over resumed sessions), ``wall_seconds`` (this call, evaluation included), ``steps``
            and ``nonfinite_steps``: what ``OUTPUT_DIR/metrics.json`` holds. Evaluation runs on
            the main process; the other processes get the counters only.
        history: one record per optimizer step taken by this process in this call: ``step``,
            ``loss`` (the generator loss, NaN for a skipped step), ``skipped``.
        output_dir: where checkpoints, samples, logs and metrics.json are.
        ema_model: the EMA copy of the model when ``ema_decay > 0``.
        balancer: the modality balancer (its learned weights, if any).
    """

    model: nn.Module
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    output_dir: Path = Path(".")
    ema_model: nn.Module | None = None
    balancer: nn.Module | None = None


# --------------------------------------------------------------------------- inputs
def _check_output_dir(path: str) -> Path:
    """Create ``path`` and make sure a file can be written in it, before anything else runs."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_test_{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except (OSError, NotADirectoryError) as err:
        blocker = next((p for p in [out, *out.parents] if p.exists() and not p.is_dir()), None)
        reason = f"{blocker} is a file, not a directory" if blocker is not None else str(err)
        raise ValueError(
            f"TrainConfig.output_dir={path!r} is not a writable directory ({reason}); choose "
            "another --output_dir (it is created if missing)"
        ) from err
    return out


def _as_dataset(
    data: Any,
    model: nn.Module,
    column_map: Mapping[str, str] | None,
    what: str,
    cfg: TrainConfig,
    check_batch: bool,
) -> Any:
    """A torch dataset of ``{modality: tensors}`` examples, validated; or the DataLoader given."""
    import datasets

    from mmvq.data import (
        MultimodalDataset,
        MultimodalIterableDataset,
        as_torch_dataset,
        validate_dataset,
    )

    adapters = dict(model.adapters)
    batch_size = cfg.per_device_batch_size if check_batch else 1
    drop_last = cfg.dataloader_drop_last if check_batch else False
    if isinstance(data, (datasets.Dataset, datasets.IterableDataset)):
        cmap = dict(column_map) if column_map else {m: m for m in model.modalities}
        validate_dataset(data, cmap, adapters, batch_size=batch_size, drop_last=drop_last)
        return as_torch_dataset(data, adapters, cmap)
    if isinstance(data, (MultimodalDataset, MultimodalIterableDataset)):
        unknown = sorted(set(data.column_map) - set(model.modalities))
        if unknown:
            raise ValueError(
                f"{what} maps modalities {unknown} that the model does not have "
                f"({list(model.modalities)})"
            )
        validate_dataset(
            data.dataset, data.column_map, adapters, batch_size=batch_size, drop_last=drop_last
        )
        return data
    if isinstance(data, torch.utils.data.DataLoader):
        return data
    if isinstance(data, torch.utils.data.Dataset):
        if isinstance(data, torch.utils.data.IterableDataset):
            return data
        n = len(data)  # type: ignore[arg-type]
        if n == 0:
            raise ValueError(
                f"{what} is empty (0 examples); give a dataset with at least one example"
            )
        if drop_last and batch_size > n:
            raise ValueError(
                f"per_device_batch_size={batch_size} is larger than {what} ({n} examples) with "
                "dataloader_drop_last=True, so there would be no batch; lower the batch size "
                "to at "
                f"most {n}, set dataloader_drop_last=False, or add data"
            )
        return data
    raise TypeError(
        f"{what} must be a datasets.Dataset/IterableDataset, a mmvq.data.MultimodalDataset, a "
        "torch "
        f"Dataset of {{modality: tensors}} examples or a DataLoader; got {type(data).__name__}"
    )


def _loader(
    dataset: Any, model: nn.Module, cfg: TrainConfig, *, train: bool
) -> torch.utils.data.DataLoader:
    from mmvq.data import MultimodalCollator

    if isinstance(dataset, torch.utils.data.DataLoader):
        return dataset
    iterable = isinstance(dataset, torch.utils.data.IterableDataset)
    bs = (
        cfg.per_device_batch_size
        if train
        else (cfg.per_device_eval_batch_size or cfg.per_device_batch_size)
    )
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=bs,
        shuffle=train and cfg.shuffle and not iterable,
        drop_last=train and cfg.dataloader_drop_last,
        # raw values ride along only where evaluation needs them (not shipped by training workers)
        collate_fn=MultimodalCollator(dict(model.adapters), references=not train),
        num_workers=cfg.dataloader_num_workers,
        # The loader's own generator: creating an iterator must not draw from the global RNG,
        # or a resumed run would see different modality dropout than an uninterrupted one.
        generator=torch.Generator().manual_seed(cfg.seed),
    )


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


# ------------------------------------------------------------------------ machinery
def _report_to(cfg: TrainConfig) -> list[str] | None:
    value = cfg.report_to.strip()
    if value == "none":
        return None
    if value == "auto":
        from accelerate.utils import is_tensorboard_available

        return ["tensorboard"] if is_tensorboard_available() else None
    return [v.strip() for v in value.split(",") if v.strip()]


def _accelerator(cfg: TrainConfig, output_dir: Path) -> Any:
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
            project_dir=str(output_dir), logging_dir=str(output_dir / "logs")
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> Any:
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


class _Snapshot:
    """Buffers of the model and the balancer's state, to undo a step whose loss is not finite."""

    def __init__(self, model: nn.Module, balancer: nn.Module) -> None:
        self.model = model
        self.balancer = balancer
        self.buffers = {k: v.detach().clone() for k, v in model.named_buffers()}
        self.balancer_state = {k: v.detach().clone() for k, v in balancer.state_dict().items()}

    @torch.no_grad()
    def restore(self) -> None:
        for name, buf in self.model.named_buffers():
            buf.copy_(self.buffers[name])
        self.balancer.load_state_dict(self.balancer_state)


def _float_tensors(batch: Any) -> list[Tensor]:
    """Every floating-point tensor of a (nested) batch."""
    if isinstance(batch, Tensor):
        return [batch] if batch.is_floating_point() else []
    if isinstance(batch, Mapping):
        return [t for v in batch.values() for t in _float_tensors(v)]
    return []


def _all_finite(accelerator: Any, *values: Tensor | None) -> bool:
    """Whether every value is finite on every process (one all-reduce when distributed)."""
    flag = torch.ones((), device=accelerator.device)
    for v in values:
        if v is not None:
            flag = flag * torch.isfinite(v.detach()).all().float().to(flag.device)
    if accelerator.num_processes > 1:
        flag = accelerator.reduce(flag, reduction="sum") / accelerator.num_processes
    return bool(flag >= 1.0)


def _reduce_param_grads(accelerator: Any, params: list[nn.Parameter]) -> None:
    """Average the gradients of parameters outside DDP (the balancer's) over processes."""
    if accelerator.num_processes <= 1 or not params:
        return
    flat = torch.cat(
        [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
    )
    flat = accelerator.reduce(flat, reduction="mean")
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


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


# ------------------------------------------------------------------------------ train
def train(
    model: nn.Module,
    train_data: Any,
    config: TrainConfig | None = None,
    eval_data: Any | None = None,
    *,
    translation_scorers: Mapping[str, Scorer] | None = None,
    column_map: Mapping[str, str] | None = None,
) -> TrainResult:
    """Train ``model`` (a :class:`mmvq.MultimodalVQ`) on ``train_data``.

    Args:
        model: the model; its adapters decide the modalities and the GAN head.
        train_data: a ``datasets.Dataset``/``IterableDataset`` whose columns are read through
            ``column_map`` (default: one column named after each modality), a
            :class:`mmvq.data.MultimodalDataset`/``MultimodalIterableDataset``, a torch
            ``Dataset`` of ``{modality: preprocessed tensors}`` examples, or a ready DataLoader
            yielding model batches.
        config: the options (:class:`TrainConfig`; default options when ``None``).
        eval_data: the same kinds of input, for evaluation; when ``None`` the first
            ``max_eval_samples`` training examples are evaluated instead.
        translation_scorers: ``{"text->image": fn}`` scorers of translations
            (:func:`mmvq.evaluate.evaluate` documents the protocol).
        column_map: ``{modality: column}`` for ``datasets`` inputs.

    Returns:
        a :class:`TrainResult`; ``OUTPUT_DIR`` holds ``checkpoints/``, ``samples/step-N/``,
        ``train_log.jsonl``, ``logs/`` (trackers) and ``metrics.json``.

    Raises:
        ValueError / DataError / AdapterInputError: bad options or data, before training starts.
        CheckpointMismatchError: resuming from a checkpoint of another model shape.
        TrainingError: the loss stayed non-finite for ``max_consecutive_nonfinite`` steps.
    """
    cfg = config if config is not None else TrainConfig()
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"train: config must be a mmvq.TrainConfig, got {type(cfg).__name__}")
    if not hasattr(model, "adapters") or not hasattr(model, "codebook"):
        raise TypeError(f"train: model must be a mmvq.MultimodalVQ, got {type(model).__name__}")
    loop, train_loader, streaming = _setup(
        model, train_data, cfg, eval_data, translation_scorers, column_map
    )
    metrics = loop.run(train_loader, streaming)
    loop.accelerator.end_training()
    return TrainResult(
        model=loop.net,
        metrics=metrics,
        history=loop.history,
        output_dir=loop.output_dir,
        ema_model=loop.ema.model if loop.ema is not None else None,
        balancer=loop.balancer,
    )


def _setup(
    model: nn.Module,
    train_data: Any,
    cfg: TrainConfig,
    eval_data: Any | None = None,
    translation_scorers: Mapping[str, Scorer] | None = None,
    column_map: Mapping[str, str] | None = None,
) -> tuple[_Loop, Any, bool]:
    """Everything :func:`train` does before its first step: data checked, accelerator, optimizers,
    schedule, resume; returns the loop, the (prepared) training loader and whether it streams.
    ``bench/bench_train.py`` times the loop's real steps through it."""
    output_dir = _check_output_dir(cfg.output_dir)

    # ---- data, checked before anything heavy
    train_ds = _as_dataset(train_data, model, column_map, "train_data", cfg, check_batch=True)
    eval_ds = (
        _as_dataset(eval_data, model, column_map, "eval_data", cfg, check_batch=False)
        if eval_data is not None
        else None
    )

    from accelerate.utils import set_seed

    accelerator = _accelerator(cfg, output_dir)
    set_seed(cfg.seed)
    discs = DiscriminatorSet.from_model(model, cfg.gan_loss) if cfg.gan_weight > 0 else None
    fingerprint = model_fingerprint(model, discs)
    resume_path = resolve_checkpoint(output_dir, cfg.resume_from_checkpoint)
    if resume_path is not None:
        check_fingerprint(resume_path, fingerprint)
    elif cfg.resume_from_checkpoint == "latest" and accelerator.is_main_process:
        logger.warning(
            "resume_from_checkpoint='latest' but %s holds no checkpoint: starting fresh", output_dir
        )

    train_loader = _loader(train_ds, model, cfg, train=True)
    eval_source = eval_ds if eval_ds is not None else train_ds
    eval_loader = (
        _loader(eval_source, model, cfg, train=False)
        if not isinstance(eval_source, torch.utils.data.DataLoader)
        else eval_source
    )
    if eval_ds is None and accelerator.is_main_process:
        logger.warning(
            "no eval_data: evaluating on the first %s training examples", cfg.max_eval_samples
        )

    balancer = build_balancer(cfg.balancer, model.modalities).to(accelerator.device)
    g_params = [p for p in model.parameters() if p.requires_grad] + [
        p for p in balancer.parameters() if p.requires_grad
    ]
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
    # After prepare: each process's loader holds its share of the batches.
    total_steps = _total_steps(cfg, train_loader)
    g_sched = _scheduler(g_opt, cfg, total_steps)
    net = accelerator.unwrap_model(model)
    raw_discs = accelerator.unwrap_model(discs) if discs is not None else None
    ema = ModelEMA(net, cfg.ema_decay) if cfg.ema_decay > 0 else None

    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "nonfinite_steps": 0, "train_seconds": 0.0}
    if resume_path is not None:
        loaded = load_checkpoint(accelerator, resume_path)
        for key in state:
            state[key] = loaded.state.get(key, state[key])
        g_sched.load_state_dict(loaded.state["scheduler"])
        if "balancer" in loaded.tensors:
            balancer.load_state_dict(
                {k: v.to(accelerator.device) for k, v in loaded.tensors["balancer"].items()}
            )
        if ema is not None and "ema" in loaded.tensors:
            ema.load_state_dict(
                {k: v.to(accelerator.device) for k, v in loaded.tensors["ema"].items()}
            )
        if accelerator.is_main_process:
            logger.info("resumed from %s at step %d", resume_path, state["step"])

    if accelerator.is_main_process:
        accelerator.init_trackers(cfg.tracker_project_name, config=_flat_config(cfg))

    loop = _Loop(
        cfg=cfg,
        accelerator=accelerator,
        model=model,
        net=net,
        discs=discs,
        raw_discs=raw_discs,
        balancer=balancer,
        g_opt=g_opt,
        d_opt=d_opt,
        g_sched=g_sched,
        ema=ema,
        state=state,
        total_steps=total_steps,
        output_dir=output_dir,
        fingerprint=fingerprint,
        eval_loader=eval_loader,
        translation_scorers=translation_scorers,
    )
    return loop, train_loader, streaming


@dataclass
class _Loop:
    """The state and steps of one training run (see :func:`train`).

    ``model``/``discs`` are the prepared (possibly DDP-wrapped) modules, ``net``/``raw_discs``
    the unwrapped ones; ``state`` is what a checkpoint stores (step, epoch, data position, ...).
    """

    cfg: TrainConfig
    accelerator: Any
    model: nn.Module
    net: nn.Module
    discs: nn.Module | None
    raw_discs: DiscriminatorSet | None
    balancer: ModalityBalancer
    g_opt: Any
    d_opt: Any | None
    g_sched: Any
    ema: ModelEMA | None
    state: dict[str, Any]
    total_steps: int
    output_dir: Path
    fingerprint: dict[str, Any]
    eval_loader: Any
    translation_scorers: Mapping[str, Scorer] | None
    window: MetricWindow = field(default_factory=MetricWindow)
    dwa_window: MetricWindow = field(default_factory=MetricWindow)
    history: list[dict[str, Any]] = field(default_factory=list)
    consecutive_nonfinite: int = 0
    progress: Any = None
    # the last micro-step's loss, kept on the device (no host sync per step): history records
    # hold it until the next log step or the end of the run turns them into floats in one sync
    _step_loss: Tensor | float = float("nan")
    _step_skipped: bool = True
    _unflushed: list[dict[str, Any]] = field(default_factory=list)
    _just_saved: bool = False
    _excluded: float = 0.0  # seconds spent evaluating and checkpointing

    # ------------------------------------------------------------------ outer loop
    def run(self, train_loader: Any, streaming: bool) -> dict[str, Any]:
        from tqdm.auto import tqdm

        acc, cfg, state = self.accelerator, self.cfg, self.state
        progress = tqdm(
            total=self.total_steps,
            initial=state["step"],
            desc="training",
            dynamic_ncols=True,
            disable=not (cfg.tqdm and acc.is_local_main_process),
        )
        self.progress = progress
        t0 = time.perf_counter()
        resumed_seconds = float(state["train_seconds"])
        while state["step"] < self.total_steps:
            if hasattr(train_loader, "set_epoch"):
                train_loader.set_epoch(state["epoch"])
            elif hasattr(getattr(train_loader, "dataset", None), "set_epoch"):
                train_loader.dataset.set_epoch(state["epoch"])
            loader = train_loader
            if state["batch_in_epoch"]:
                loader = self._skip(train_loader, state["batch_in_epoch"], streaming)
            consumed = False
            for batch in loader:
                consumed = True
                if streaming:
                    batch = _to_device(batch, acc.device)
                state["batch_in_epoch"] += 1
                with acc.accumulate(*[m for m in (self.model, self.discs) if m is not None]):
                    self._micro_step(batch)
                if not acc.sync_gradients:
                    continue
                state["step"] += 1
                # training time: data loading and steps, not evaluation or checkpointing
                state["train_seconds"] = resumed_seconds + time.perf_counter() - t0 - self._excluded
                self._end_of_step()
                if state["step"] >= self.total_steps:
                    break
            if not consumed:
                raise TrainingError(
                    "the training data yielded no batch in an epoch; check the dataset and "
                    "batch size"
                )
            if state["step"] < self.total_steps:
                state["epoch"] += 1
                state["batch_in_epoch"] = 0
        progress.close()
        self._flush_history()
        train_seconds = state["train_seconds"]
        if not self._just_saved:
            self._save()
        metrics = self._evaluate()
        metrics.update(
            train_seconds=round(train_seconds, 3),
            wall_seconds=round(time.perf_counter() - t0, 3),
            steps=state["step"],
            nonfinite_steps=state["nonfinite_steps"],
        )
        if acc.is_main_process:
            (self.output_dir / "metrics.json").write_text(
                json.dumps(metrics, indent=2, sort_keys=True)
            )
        acc.wait_for_everyone()
        return metrics

    def _skip(self, loader: Any, batches: int, streaming: bool) -> Iterable[Any]:
        if not streaming:
            return self.accelerator.skip_first_batches(loader, batches)

        def skipped() -> Iterable[Any]:
            it = iter(loader)
            for _ in range(batches):
                next(it, None)
            yield from it

        return skipped()

    # ------------------------------------------------------------------- one step
    def _micro_step(self, batch: Mapping[str, Any]) -> None:
        acc, cfg, net = self.accelerator, self.cfg, self.net
        step = self.state["step"]
        log_step = (step + 1) % cfg.log_every == 0 and acc.sync_gradients
        gan_active = self.discs is not None and step >= cfg.gan_start_step
        snapshot = _Snapshot(net, self.balancer)
        # Non-finite inputs never reach the model (its codebook would reject them, or update its
        # statistics with them): all ranks agree and skip the step together.
        if not _all_finite(acc, *_float_tensors(batch)):
            self._skip_step(snapshot, "non-finite values in the batch")
            return

        with acc.autocast():
            out, loss, balance, align_log, gan_log, inputs = self._generator_loss(
                batch, log_step, gan_active
            )

        if not _all_finite(acc, loss):
            self._skip_step(snapshot, f"loss {float(loss.detach())}")
            return
        self.consecutive_nonfinite = 0
        acc.backward(loss)
        if acc.sync_gradients:
            _reduce_param_grads(acc, [p for p in self.balancer.parameters() if p.requires_grad])
            if cfg.max_grad_norm > 0:
                norm = acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                self.window.add("grad_norm/generator", norm)
        self.g_opt.step()
        self.g_opt.zero_grad(set_to_none=True)
        if acc.sync_gradients and not acc.optimizer_step_was_skipped:
            self.g_sched.step()

        if gan_active:
            self._discriminator_step(inputs)

        # ---- statistics of this micro-step
        # one add_all: the window stacks the tensors into one vector (a few ops, no host sync)
        stats: dict[str, float | Tensor] = {"loss/total": loss}
        stats.update({f"loss/rec/{m}": v for m, v in out.rec_loss_mean.items()})
        stats.update({f"loss/vq/{m}": v for m, v in out.vq_loss.items()})
        stats.update(balance.log)
        stats.update(align_log)
        stats.update(gan_log)
        stats.update({f"codebook/{k}": v for k, v in out.stats.items()})
        self.window.add_all(stats)
        self.dwa_window.add_all(out.rec_loss_mean)
        self._step_loss = loss.detach()
        self._step_skipped = False

    def _generator_loss(
        self, batch: Mapping[str, Any], log_step: bool, gan_active: bool
    ) -> tuple[Any, ...]:
        """Forward, then the generator's loss: balanced reconstruction + commitment + alignment
        + GAN."""
        cfg, net = self.cfg, self.net
        out = self.model(batch)
        losses = dict(out.rec_loss_mean)
        balance = self.balancer.combine(losses, net.shared_parameters(), log_grad_norms=log_step)
        vq_loss = sum(out.vq_loss.values())
        loss = balance.loss + vq_loss
        align_log: dict[str, float] = {}
        if cfg.alignment.weight > 0:
            a_loss, align_log = alignment_loss(out, net.codebook, cfg.alignment)
            loss = loss + cfg.alignment.weight_at(self.state["step"]) * a_loss
            align_log = dict(align_log, **{"loss/align": a_loss.detach()})
        gan_log: dict[str, Tensor] = {}
        inputs = {}
        if gan_active:
            self.raw_discs.requires_grad_(False)
            inputs = gan_inputs(net, self.raw_discs, batch, out)
            g_gan, gan_log = generator_gan_loss(
                net,
                self.raw_discs,
                inputs,
                out.rec_loss_mean,
                weight=cfg.gan_weight,
                kind=cfg.gan_loss,
                adaptive=cfg.adaptive_weight,
                max_weight=cfg.adaptive_weight_max,
            )
            self.raw_discs.requires_grad_(True)
            if g_gan is not None:
                loss = loss + g_gan

        return out, loss, balance, align_log, gan_log, inputs

    def _discriminator_step(self, inputs: Mapping[str, tuple[Tensor, Tensor]]) -> None:
        acc, cfg = self.accelerator, self.cfg
        detached = {m: (real.detach(), fake.detach()) for m, (real, fake) in inputs.items()}
        d_loss, d_log = self.discs(detached)
        if not _all_finite(acc, d_loss):
            self.discs.zero_grad(set_to_none=True)
            self.window.add("gan/d_nonfinite", 1.0)
            return
        acc.backward(d_loss)
        if acc.sync_gradients and cfg.max_grad_norm > 0:
            self.window.add(
                "grad_norm/discriminator",
                acc.clip_grad_norm_(self.discs.parameters(), cfg.max_grad_norm),
            )
        self.d_opt.step()
        self.d_opt.zero_grad(set_to_none=True)
        self.window.add_all(d_log)

    def _skip_step(self, snapshot: _Snapshot, reason: str) -> None:
        """Undo a non-finite micro-step: buffers (codebook) and balancer restored, gradients
        dropped."""
        snapshot.restore()
        self.model.zero_grad(set_to_none=True)
        self.balancer.zero_grad(set_to_none=True)
        if self.discs is not None:
            self.discs.zero_grad(set_to_none=True)
        self.state["nonfinite_steps"] += 1
        self.consecutive_nonfinite += 1
        self._step_loss = float("nan")
        self._step_skipped = True
        if self.accelerator.is_main_process:
            logger.warning(
                "non-finite step (%s) at step %d: skipped, weights and codebook left untouched "
                "(%d skipped so far)",
                reason,
                self.state["step"] + 1,
                self.state["nonfinite_steps"],
            )
        if self.consecutive_nonfinite >= self.cfg.max_consecutive_nonfinite:
            raise TrainingError(
                f"the loss was non-finite for {self.consecutive_nonfinite} steps in a row (last at "
                f"step {self.state['step'] + 1}); check the data for NaN/Inf values and lower the "
                "learning rate, or use mixed_precision='bf16' instead of 'fp16'"
            )

    # ------------------------------------------------------------- after a step
    def _end_of_step(self) -> None:
        acc, cfg, state = self.accelerator, self.cfg, self.state
        step = state["step"]
        skipped = self._step_skipped
        loss = float("nan") if skipped else self._step_loss
        record = {"step": step, "loss": loss, "skipped": skipped}
        self.history.append(record)
        if isinstance(record["loss"], Tensor):
            self._unflushed.append(record)
        if self.ema is not None and not skipped:
            self.ema.update(self.net)
        self.progress.update(1)
        self._just_saved = False
        if step % cfg.balancer_window == 0:
            means = self.dwa_window.reduce(acc)
            if means:
                self.balancer.epoch_end(means)
        if step % cfg.log_every == 0:
            self._log(step)
            self._flush_history()
        if cfg.eval_every and step % cfg.eval_every == 0 and step < self.total_steps:
            self._evaluate()
        if cfg.save_every and step % cfg.save_every == 0:
            self._save()
            self._just_saved = True

    def _flush_history(self) -> None:
        """Turn the device-side losses of the history records into floats (one host sync)."""
        if not self._unflushed:
            return
        values = torch.stack([r["loss"].float().reshape(()) for r in self._unflushed]).tolist()
        for record, value in zip(self._unflushed, values):
            record["loss"] = value
        self._unflushed.clear()

    def _log(self, step: int) -> None:
        acc = self.accelerator
        logs = self.window.reduce(acc)
        logs["lr"] = self.g_sched.get_last_lr()[0]
        if self.d_opt is not None:
            logs["lr_discriminator"] = self.d_opt.param_groups[0]["lr"]
        logs["nonfinite_steps"] = float(self.state["nonfinite_steps"])
        if acc.is_main_process:
            acc.log({f"train/{k}": v for k, v in logs.items()}, step=step)
            with (self.output_dir / LOG_NAME).open("a") as f:
                f.write(json.dumps({"step": step, **logs}) + "\n")
            short = {
                k.split("/", 1)[-1]: v
                for k, v in logs.items()
                if k.startswith("loss/rec/") or k == "loss/total"
            }
            self.progress.set_postfix({k: f"{v:.3g}" for k, v in short.items()}, refresh=False)

    def _evaluate(self) -> dict[str, Any]:
        start = time.perf_counter()
        try:
            return self._run_evaluation()
        finally:
            self._excluded += time.perf_counter() - start

    def _run_evaluation(self) -> dict[str, Any]:
        acc, cfg, step = self.accelerator, self.cfg, self.state["step"]
        metrics: dict[str, Any] = {}
        if acc.is_main_process:
            model = self.ema.model if self.ema is not None else self.net
            # Evaluation must not move the training RNG (a resumed run would diverge otherwise).
            with torch.random.fork_rng(devices=[]):
                metrics = evaluate(
                    model,
                    self.eval_loader,
                    acc,
                    translation_scorers=self.translation_scorers,
                    max_samples=cfg.max_eval_samples,
                    sample_dir=self.output_dir / "samples" / f"step-{step}"
                    if cfg.num_sample_rows
                    else None,
                    num_sample_rows=cfg.num_sample_rows,
                )
            acc.log(flatten_metrics(metrics, "eval/", numbers_only=True), step=step)
            with (self.output_dir / LOG_NAME).open("a") as f:
                f.write(json.dumps({"step": step, "eval": metrics}) + "\n")
            headline = {
                k: v
                for k, v in metrics.items()
                if isinstance(v, float) and not k.endswith("_per_pair")
            }
            self.progress.write(
                f"[eval step {step}] "
                + ", ".join(f"{k}={v:.4g}" for k, v in sorted(headline.items())[:12])
            )
        acc.wait_for_everyone()
        return metrics

    def _save(self) -> None:
        start = time.perf_counter()
        tensors = {"balancer": self.balancer.state_dict()}
        if self.ema is not None:
            tensors["ema"] = self.ema.state_dict()
        save_checkpoint(
            self.accelerator,
            self.output_dir,
            self.state["step"],
            state=dict(self.state, scheduler=self.g_sched.state_dict()),
            fingerprint=self.fingerprint,
            tensors=tensors,
            keep_last=self.cfg.keep_last_checkpoints,
        )
        self._excluded += time.perf_counter() - start


class _CallableModule(types.ModuleType):
    """``mmvq.train`` is both this module and the function: importing ``mmvq.train`` binds the
    module to the package attribute, so the module forwards calls to :func:`train`."""

    def __call__(self, *args: Any, **kwargs: Any) -> TrainResult:
        return train(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
