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
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from mmvq.quantize import SharedCodebook
from mmvq.training.align import alignment_loss
from mmvq.training.checkpoint import save_checkpoint
from mmvq.training.config import TrainConfig
from mmvq.training.evaluate import Scorer, evaluate
from mmvq.training.gan import gan_inputs, generator_gan_loss
from mmvq.training.logs import MetricWindow, append_record, balance_summary
from mmvq.training.setup import TrainingRun, setup_training
from mmvq.training.step import (
    GeneratorLoss,
    History,
    Snapshot,
    all_finite,
    float_tensors,
    reduce_param_grads,
)
from mmvq.utils.batches import to_device
from mmvq.utils.distributed import all_reduce_
from mmvq.utils.logging import get_logger
from mmvq.utils.metrics import flatten_metrics

__all__ = ["Loop", "TrainResult", "TrainingError", "train"]

logger = get_logger(__name__)


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


# ------------------------------------------------------------------------------ loop
class Loop:
    """The steps of one training run (see :func:`train`), over a :class:`TrainingRun`.

    :meth:`run` is the whole loop; :meth:`micro_step` and :meth:`end_of_step` are one
    micro-batch and the bookkeeping after an optimizer step (what ``bench/bench_train.py`` times).
    """

    def __init__(self, run: TrainingRun) -> None:
        self.setup = run
        self.cfg: TrainConfig = run.cfg
        self.accelerator = run.accelerator
        self.modules = run.modules
        self.optimizers = run.optimizers
        self.state = run.state
        self.window = MetricWindow()
        self.dwa_window = MetricWindow()
        self.history = History()
        self.consecutive_nonfinite = 0
        self.progress: Any = None
        self._just_saved = False
        self._excluded = 0.0  # seconds spent evaluating and checkpointing
        self._skipped = 0  # bad stream rows left out by this process, not yet counted in state

    # ------------------------------------------------------------------ outer loop
    def run(self) -> dict[str, Any]:
        """Train to ``total_steps``, checkpoint and evaluate at the end; the final metrics."""
        from tqdm.auto import tqdm

        acc, state = self.accelerator, self.state
        self.progress = tqdm(
            total=self.setup.total_steps,
            initial=state["step"],
            desc="training",
            dynamic_ncols=True,
            disable=not (self.cfg.tqdm and acc.is_local_main_process),
        )
        t0 = time.perf_counter()
        resumed_seconds = float(state["train_seconds"])
        while state["step"] < self.setup.total_steps:
            self._epoch(t0, resumed_seconds)
        self.progress.close()
        self.history.flush()
        train_seconds = state["train_seconds"]
        if not self._just_saved:
            self._save()
        metrics = self._evaluate()
        metrics.update(
            train_seconds=round(train_seconds, 3),
            wall_seconds=round(time.perf_counter() - t0, 3),
            steps=state["step"],
            nonfinite_steps=state["nonfinite_steps"],
            skipped_rows=state["skipped_rows"],
        )
        if acc.is_main_process:
            metrics.update(balance_summary(self.setup.run_dir.train_log, self.modules.balancer))
            self.setup.run_dir.metrics.write_text(json.dumps(metrics, indent=2, sort_keys=True))
        acc.wait_for_everyone()
        return metrics

    def _epoch(self, t0: float, resumed_seconds: float) -> None:
        """One pass over the training data (from the saved data position), or up to the end."""
        acc, state, train_loader = self.accelerator, self.state, self.setup.train_loader
        if hasattr(train_loader, "set_epoch"):
            train_loader.set_epoch(state["epoch"])
        elif hasattr(getattr(train_loader, "dataset", None), "set_epoch"):
            train_loader.dataset.set_epoch(state["epoch"])
        loader = train_loader
        if state["batch_in_epoch"]:
            loader = self._skip(train_loader, state["batch_in_epoch"])
        consumed = False
        for batch in loader:
            consumed = True
            state["batch_in_epoch"] += 1
            self._skipped += int(getattr(batch, "skipped_rows", 0) or 0)
            if not batch:  # every row a stream read for this batch was bad (on_bad_row=skip)
                continue
            if self.setup.streaming:
                batch = to_device(batch, acc.device)
            modules = [m for m in (self.modules.model, self.modules.discs) if m is not None]
            with acc.accumulate(*modules):
                self.micro_step(batch)
            if not acc.sync_gradients:
                continue
            state["step"] += 1
            # training time: data loading and steps, not evaluation or checkpointing
            state["train_seconds"] = resumed_seconds + time.perf_counter() - t0 - self._excluded
            self.end_of_step()
            if state["step"] >= self.setup.total_steps:
                break
        if not consumed:
            raise TrainingError(
                "the training data yielded no batch in an epoch; check the dataset and batch size"
            )
        if state["step"] < self.setup.total_steps:
            state["epoch"] += 1
            state["batch_in_epoch"] = 0

    def _skip(self, loader: Any, batches: int) -> Iterable[Any]:
        if not self.setup.streaming:
            return self.accelerator.skip_first_batches(loader, batches)

        def skipped() -> Iterable[Any]:
            it = iter(loader)
            for _ in range(batches):
                next(it, None)
            yield from it

        return skipped()

    # ------------------------------------------------------------------- one step
    def micro_step(self, batch: Mapping[str, Any]) -> None:
        """Forward, backward and optimizer steps of one micro-batch (inside ``accumulate``)."""
        acc, cfg, mods, opts = self.accelerator, self.cfg, self.modules, self.optimizers
        step = self.state["step"]
        log_step = (step + 1) % cfg.log_every == 0 and acc.sync_gradients
        gan_active = mods.discs is not None and step >= cfg.gan_start_step
        snapshot = Snapshot(mods.net, mods.balancer)
        # Non-finite inputs never reach the model (its codebook would reject them, or update its
        # statistics with them): all ranks agree and skip the step together.
        if not all_finite(acc, *float_tensors(batch)):
            self._skip_step(snapshot, "non-finite values in the batch")
            return
        with acc.autocast():
            g = self._generator_loss(batch, log_step, gan_active)
        if not all_finite(acc, g.loss):
            self._skip_step(snapshot, f"loss {float(g.loss.detach())}")
            return
        self.consecutive_nonfinite = 0
        acc.backward(g.loss)
        if acc.sync_gradients:
            reduce_param_grads(acc, [p for p in mods.balancer.parameters() if p.requires_grad])
            if cfg.max_grad_norm > 0:
                norm = acc.clip_grad_norm_(mods.model.parameters(), cfg.max_grad_norm)
                self.window.add("grad_norm/generator", norm)
        opts.generator.step()
        opts.generator.zero_grad(set_to_none=True)
        if acc.sync_gradients and not acc.optimizer_step_was_skipped:
            opts.schedule.step()
        if gan_active:
            self._discriminator_step(g.gan_inputs)
        self._record(g)

    def _record(self, g: GeneratorLoss) -> None:
        """This micro-step's statistics into the windows (one add_all: a few ops, no sync)."""
        stats: dict[str, float | Tensor] = {"loss/total": g.loss}
        stats.update({f"loss/rec/{m}": v for m, v in g.out.rec_loss_mean.items()})
        stats.update({f"loss/vq/{m}": v for m, v in g.out.vq_loss.items()})
        stats.update(g.balance.log)
        stats.update(g.align_log)
        stats.update(g.gan_log)
        stats.update({f"codebook/{k}": v for k, v in g.out.stats.items()})
        self.window.add_all(stats)
        self.dwa_window.add_all(g.out.rec_loss_mean)
        self.history.micro_step(g.loss)

    def _generator_loss(
        self, batch: Mapping[str, Any], log_step: bool, gan_active: bool
    ) -> GeneratorLoss:
        """Forward, then the generator's loss: balanced reconstruction + commitment + the concept
        level's losses + token alignment + GAN."""
        cfg, mods = self.cfg, self.modules
        net = mods.net
        out = mods.model(batch)
        balance = mods.balancer.combine(
            dict(out.rec_loss_mean), net.shared_parameters(), log_grad_norms=log_step
        )
        loss = balance.loss + sum(out.vq_loss.values())
        align_log: dict[str, Any] = {}
        if out.concept is not None:
            loss = loss + sum(out.concept.loss.values())
            align_log.update({f"loss/concept/{k}": v.detach() for k, v in out.concept.loss.items()})
            align_log.update({f"codebook/concept/{k}": v for k, v in out.concept.stats.items()})
        if cfg.alignment.weight > 0:
            a_loss, a_log = alignment_loss(out, net.codebook, cfg.alignment)
            loss = loss + cfg.alignment.weight_at(self.state["step"]) * a_loss
            align_log.update(a_log, **{"loss/align": a_loss.detach()})
        gan_log: dict[str, Tensor] = {}
        inputs: dict[str, tuple[Tensor, Tensor]] = {}
        if gan_active:
            mods.raw_discs.requires_grad_(False)
            inputs = gan_inputs(net, mods.raw_discs, batch, out)
            g_gan, gan_log = generator_gan_loss(
                net,
                mods.raw_discs,
                inputs,
                out.rec_loss_mean,
                weight=cfg.gan_weight,
                kind=cfg.gan_loss,
                adaptive=cfg.adaptive_weight,
                max_weight=cfg.adaptive_weight_max,
            )
            mods.raw_discs.requires_grad_(True)
            if g_gan is not None:
                loss = loss + g_gan
        return GeneratorLoss(out, loss, balance, align_log, gan_log, inputs)

    def _discriminator_step(self, inputs: Mapping[str, tuple[Tensor, Tensor]]) -> None:
        acc, cfg, discs = self.accelerator, self.cfg, self.modules.discs
        detached = {m: (real.detach(), fake.detach()) for m, (real, fake) in inputs.items()}
        d_loss, d_log = discs(detached)
        if not all_finite(acc, d_loss):
            discs.zero_grad(set_to_none=True)
            self.window.add("gan/d_nonfinite", 1.0)
            return
        acc.backward(d_loss)
        if acc.sync_gradients and cfg.max_grad_norm > 0:
            self.window.add(
                "grad_norm/discriminator",
                acc.clip_grad_norm_(discs.parameters(), cfg.max_grad_norm),
            )
        self.optimizers.discriminator.step()
        self.optimizers.discriminator.zero_grad(set_to_none=True)
        self.window.add_all(d_log)

    def _skip_step(self, snapshot: Snapshot, reason: str) -> None:
        """Undo a non-finite micro-step: buffers (codebook) and balancer restored, gradients
        dropped."""
        mods, state = self.modules, self.state
        snapshot.restore()
        mods.model.zero_grad(set_to_none=True)
        mods.balancer.zero_grad(set_to_none=True)
        if mods.discs is not None:
            mods.discs.zero_grad(set_to_none=True)
        state["nonfinite_steps"] += 1
        self.consecutive_nonfinite += 1
        self.history.micro_step(None)
        if self.accelerator.is_main_process:
            logger.warning(
                "non-finite step (%s) at step %d: skipped, weights and codebook left untouched "
                "(%d skipped so far)",
                reason,
                state["step"] + 1,
                state["nonfinite_steps"],
            )
        if self.consecutive_nonfinite >= self.cfg.max_consecutive_nonfinite:
            raise TrainingError(
                f"the loss was non-finite for {self.consecutive_nonfinite} steps in a row (last at "
                f"step {state['step'] + 1}); check the data for NaN/Inf values and lower the "
                "learning rate, or use mixed_precision='bf16' instead of 'fp16'"
            )

    # ------------------------------------------------------------- after a step
    def end_of_step(self) -> None:
        """After an optimizer step: history, EMA, progress, balancer window, log/eval/save."""
        cfg, step = self.cfg, self.state["step"]
        self.history.end_step(step)
        if self.modules.ema is not None and not self.history.step_skipped:
            self.modules.ema.update(self.modules.net)
        self.progress.update(1)
        self._just_saved = False
        if step % cfg.balancer_window == 0:
            means = self.dwa_window.reduce(self.accelerator)
            if means:
                self.modules.balancer.epoch_end(means)
        if step % cfg.log_every == 0:
            self._log(step)
            self.history.flush()
        if cfg.eval_every and step % cfg.eval_every == 0 and step < self.setup.total_steps:
            self._evaluate()
        if cfg.save_every and step % cfg.save_every == 0:
            self._save()
            self._just_saved = True

    def _count_skipped(self) -> None:
        """Add every process's newly skipped rows to ``state`` (one all-reduce; all processes
        call it at the same steps)."""
        if self.setup.streaming:
            delta = torch.tensor([float(self._skipped)], device=self.accelerator.device)
            self.state["skipped_rows"] += int(all_reduce_(delta).item())
            self._skipped = 0

    def _log(self, step: int) -> None:
        acc = self.accelerator
        self._count_skipped()
        logs = self.window.reduce(acc)
        logs["lr"] = self.optimizers.schedule.get_last_lr()[0]
        if self.optimizers.discriminator is not None:
            logs["lr_discriminator"] = self.optimizers.discriminator.param_groups[0]["lr"]
        logs["nonfinite_steps"] = float(self.state["nonfinite_steps"])
        if self.state["skipped_rows"]:
            logs["skipped_rows"] = float(self.state["skipped_rows"])
        if acc.is_main_process:
            acc.log({f"train/{k}": v for k, v in logs.items()}, step=step)
            append_record(self.setup.run_dir.train_log, {"step": step, **logs})
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
        acc, cfg, step, run = self.accelerator, self.cfg, self.state["step"], self.setup
        metrics: dict[str, Any] = {}
        if acc.is_main_process:
            model = self.modules.ema.model if self.modules.ema is not None else self.modules.net
            # Evaluation must not move the training RNG (a resumed run would diverge otherwise).
            with torch.random.fork_rng(devices=[]):
                metrics = evaluate(
                    model,
                    run.eval_loader,
                    acc,
                    translation_scorers=run.translation_scorers,
                    max_samples=cfg.max_eval_samples,
                    sample_dir=run.run_dir.samples(step) if cfg.num_sample_rows else None,
                    num_sample_rows=cfg.num_sample_rows,
                    progress_bar=cfg.tqdm,
                )
            acc.log(flatten_metrics(metrics, "eval/", numbers_only=True), step=step)
            append_record(run.run_dir.train_log, {"step": step, "eval": metrics})
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
        self._count_skipped()
        tensors = {"balancer": self.modules.balancer.state_dict()}
        if self.modules.ema is not None:
            tensors["ema"] = self.modules.ema.state_dict()
        save_checkpoint(
            self.accelerator,
            self.setup.run_dir,
            self.state["step"],
            state=dict(self.state, scheduler=self.optimizers.schedule.state_dict()),
            fingerprint=self.setup.fingerprint,
            tensors=tensors,
            keep_last=self.cfg.keep_last_checkpoints,
            run_id=self.setup.run_id,
        )
        self._excluded += time.perf_counter() - start


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
            (:func:`mmvq.training.evaluate.evaluate` documents the protocol).
        column_map: ``{modality: column}`` for ``datasets`` inputs.

    Returns:
        a :class:`TrainResult`; ``OUTPUT_DIR`` is laid out as
        :class:`~mmvq.training.run_dir.RunDirectory` says (``checkpoints/``, ``samples/step-N/``,
        ``train_log.jsonl``, ``logs/``, ``metrics.json``).

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
    run = setup_training(model, train_data, cfg, eval_data, translation_scorers, column_map)
    # a diverging step is skipped, not raised, by every codebook (detail and concept)
    codebooks = [m for m in run.modules.net.modules() if isinstance(m, SharedCodebook)]
    for codebook in codebooks:
        codebook.tolerate_nonfinite = True
    try:
        loop = Loop(run)
        metrics = loop.run()
        run.accelerator.end_training()
    finally:
        for codebook in codebooks:
            codebook.tolerate_nonfinite = False
        run.release()
    return TrainResult(
        model=run.modules.net,
        metrics=metrics,
        history=loop.history.records,
        output_dir=run.run_dir.root,
        ema_model=run.modules.ema.model if run.modules.ema is not None else None,
        balancer=run.modules.balancer,
    )
