"""Training the prior: :func:`train_prior`, on Hugging Face Accelerate.

::

    seed; accelerator (trackers, project dir)
    claim OUTPUT_DIR (run identity: refuse another run's directory, lock it)
    codes = encode_dataset(frozen tokenizer model, data)      # datasets.map, once, cached
    tokenizer = MultimodalTokenizer.from_model(model, padding=observed_padding(codes))
    prior = MultimodalPrior.build(tokenizer, prior_config)    # LlamaForCausalLM
    for each batch (PriorCollator: random modality order, condition dropout):
        loss = lm(input_ids, attention_mask, labels).loss    # next-id cross-entropy
        backward; clip; AdamW step; LR schedule (warm-up + cosine)
        log / evaluate (teacher-forced loss) / checkpoint
    metrics.json; OUTPUT_DIR/final = prior.save_pretrained(..., metrics=...)  # + model card

The conventions are :func:`mmvq.train`'s: seed before anything random is built, tqdm on the main
process, trackers through Accelerate, atomic checkpoints with exact resume
(:mod:`mmvq.training.checkpoint`: ``save_state`` + trainer state + a shape fingerprint; the data
position is restored with ``skip_first_batches``, and the collator's draws depend only on the
position), ``final/`` through ``save_pretrained``, and run identity
(:mod:`mmvq.training.run_identity`): before anything is written, the output directory is claimed
for this run (``run.json``) and locked; a directory of another run (other options, data, seed,
tokenizer model or prior size: :func:`prior_run_identity`) is refused unless
``overwrite_output_dir``, this run's own progress is resumed with ``resume_from_checkpoint``, and
``"latest"`` resumes only this run's checkpoints.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mmvq.prior.data import PriorCollator, encode_dataset, model_digest, observed_padding
from mmvq.prior.model import MultimodalPrior, PriorConfig
from mmvq.prior.tokenizer import MultimodalTokenizer
from mmvq.prior.train_config import PriorTrainConfig
from mmvq.training.checkpoint import load_checkpoint, model_fingerprint, save_checkpoint
from mmvq.training.inputs import check_output_dir
from mmvq.training.run_dir import RunDirectory
from mmvq.training.run_identity import RunIdentity, run_identity

# the same accelerator, directory claim, resume lookup and schedule as mmvq.train
from mmvq.training.setup import (
    claim_run,
    find_resume_checkpoint,
    make_accelerator,
    make_scheduler,
    release_run,
)
from mmvq.utils.logging import get_logger

__all__ = ["PriorTrainConfig", "PriorTrainResult", "prior_run_identity", "train_prior"]

logger = get_logger(__name__)
CACHE_DIR = "cache"
"""The codes cache (``datasets.map`` output) under ``OUTPUT_DIR``."""


@dataclass
class PriorTrainResult:
    """What :func:`train_prior` returns.

    Attributes:
        prior: the trained prior (its tokenizer has the tokenizer model attached).
        metrics: what ``OUTPUT_DIR/metrics.json`` holds (``eval_loss``, ``train_seconds`` (wall
            clock of the steps, evaluation and checkpoints excluded), ``train_cpu_seconds`` (CPU
            time of this process over the same steps: on a shared machine, with one torch thread,
            about what the steps take on a free core),
            ``encode_seconds``, ``steps``, ``num_parameters``...).
        history: ``{"step", "loss"}`` per optimizer step of this call.
        output_dir: the run's directory.
    """

    prior: MultimodalPrior
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    output_dir: Path = Path(".")


def _optimizer(lm: torch.nn.Module, cfg: PriorTrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in lm.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in lm.parameters() if p.requires_grad and p.dim() < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
        lr=cfg.learning_rate,
        betas=(cfg.adam_beta1, cfg.adam_beta2),
    )


def _loader(codes: Any, collator: PriorCollator, batch_size: int, seed: int, train: bool) -> Any:
    return torch.utils.data.DataLoader(
        codes,
        batch_size=batch_size,
        shuffle=train,
        drop_last=False,
        collate_fn=collator,
        generator=torch.Generator().manual_seed(seed),
    )


@torch.no_grad()
def _eval_loss(acc: Any, lm: torch.nn.Module, loader: Any, max_rows: int) -> float:
    """Mean next-id cross-entropy per predicted id over the first ``max_rows`` eval rows."""
    was_training = lm.training
    lm.eval()
    total, count, rows = 0.0, 0, 0
    for batch in loader:
        batch = {k: v.to(acc.device) for k, v in batch.items()}
        logits = lm(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        labels = batch["labels"][:, 1:]
        ce = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().transpose(1, 2), labels, ignore_index=-100, reduction="sum"
        )
        total += float(ce)
        count += int((labels != -100).sum())
        rows += batch["input_ids"].shape[0]
        if rows >= max_rows:
            break
    lm.train(was_training)
    return total / max(count, 1)


def prior_run_identity(
    cfg: PriorTrainConfig,
    model: Any,
    train_data: Any,
    prior_config: PriorConfig | None = None,
    tokenizer: MultimodalTokenizer | None = None,
    column_map: dict[str, str] | None = None,
) -> RunIdentity:
    """The identity of a :func:`train_prior` run (:func:`mmvq.training.run_identity.run_identity`):
    its options, training data and seed, and as its model what turns the data into the LM's
    sequences and the LM: the tokenizer model's weights (they decide the codes), the column map,
    a given tokenizer's vocabulary and the prior's size (:class:`PriorConfig`)."""
    spec = {
        "model_class": MultimodalPrior.__name__,
        "prior_config": (prior_config or PriorConfig()).to_dict(),
        "tokenizer_model": model_digest(model),
        "tokenizer": tokenizer.vocab.to_dict() if tokenizer is not None else None,
        "column_map": dict(sorted(column_map.items())) if column_map else None,
    }
    return run_identity(cfg, spec, train_data)


def train_prior(
    model: Any,
    train_data: Any,
    config: PriorTrainConfig | None = None,
    prior_config: PriorConfig | None = None,
    eval_data: Any = None,
    *,
    column_map: dict[str, str] | None = None,
    tokenizer: MultimodalTokenizer | None = None,
) -> PriorTrainResult:
    """Train a prior over the codes of ``model`` (a trained, frozen :class:`mmvq.MultimodalVQ`).

    Args:
        model: the tokenizer model; it is not modified (eval mode, no gradients).
        train_data: a ``datasets.Dataset`` of raw values (columns read through ``column_map``).
        config: training options (:class:`PriorTrainConfig`).
        prior_config: the LM's size (:class:`PriorConfig`).
        eval_data: a ``datasets.Dataset`` for the teacher-forced eval loss (default: training
            rows).
        column_map: ``{modality: column}`` (default: columns named after the modalities).
        tokenizer: a ready :class:`MultimodalTokenizer` (default: built from the model, spans
            padded where the encoded data has padding).

    Returns:
        a :class:`PriorTrainResult`; ``OUTPUT_DIR`` holds ``checkpoints/``, ``final/``,
        ``train_log.jsonl``, ``logs/``, ``metrics.json``, ``run.json`` (the run's identity) and
        ``cache/`` (the encoded data).

    Raises:
        OutputDirError: ``output_dir`` holds another run's outputs (pass
            ``overwrite_output_dir=True``), this run's progress without ``resume_from_checkpoint``,
            or another process is writing it.
    """
    cfg = config or PriorTrainConfig()
    if not isinstance(cfg, PriorTrainConfig):
        raise TypeError(f"config must be a PriorTrainConfig, got {type(cfg).__name__}")
    run_dir = RunDirectory(check_output_dir(cfg.output_dir))
    acc = make_accelerator(cfg, run_dir)
    identity = prior_run_identity(cfg, model, train_data, prior_config, tokenizer, column_map)
    fresh = not run_dir.run_file.exists()
    lock = claim_run(acc, run_dir, identity, cfg)
    try:
        loop, encode_seconds = _prepare_run(
            cfg,
            acc,
            run_dir,
            identity.fingerprint,
            model,
            (train_data, eval_data),
            prior_config,
            column_map,
            tokenizer,
        )
    except BaseException:
        release_run(run_dir, lock, fresh)  # a run that fails before its first step
        raise
    try:
        metrics = loop.run()
        metrics["encode_seconds"] = round(encode_seconds, 3)
        if acc.is_main_process:
            run_dir.metrics.write_text(json.dumps(metrics, indent=2, sort_keys=True))
            loop.prior.save_pretrained(run_dir.final, metrics=metrics)  # its card shows them
        acc.wait_for_everyone()
        acc.end_training()
    finally:
        if lock is not None:
            lock.release()
    return PriorTrainResult(loop.prior, metrics, loop.history, run_dir.root)


def _prepare_run(
    cfg: PriorTrainConfig,
    acc: Any,
    run_dir: RunDirectory,
    run_id: str,
    model: Any,
    data: tuple[Any, Any],
    prior_config: PriorConfig | None,
    column_map: dict[str, str] | None,
    tokenizer: MultimodalTokenizer | None,
) -> tuple[_PriorLoop, float]:
    """Encode the data (``(train_data, eval_data)``, cached), build the tokenizer and the prior,
    set up the loop (and resume it); returns it and the encoding's seconds."""
    from accelerate.utils import set_seed

    train_data, eval_data = data
    set_seed(cfg.seed)
    model.eval().requires_grad_(False).to(acc.device)
    t0 = time.perf_counter()
    lm_ms = list(tokenizer.vocab.lm_modalities) if tokenizer is not None else []
    encode = functools.partial(
        encode_dataset,
        model,
        column_map=column_map,
        lm_modalities=lm_ms,
        batch_size=cfg.encode_batch_size,
        cache_dir=run_dir.root / CACHE_DIR,
    )
    with acc.main_process_first():
        codes = encode(train_data)
        eval_codes = codes if eval_data is None else encode(eval_data)
    encode_seconds = time.perf_counter() - t0
    if tokenizer is None:
        tokenizer = MultimodalTokenizer.from_model(model, padding=observed_padding(codes))
    elif tokenizer.model is None:
        tokenizer.attach(model)
    set_seed(cfg.seed)  # the LM's weights do not depend on whether the codes came from the cache
    prior = MultimodalPrior.build(tokenizer, prior_config)
    loop = _PriorLoop(cfg, acc, prior, run_dir, run_id)
    loop.setup(codes, eval_codes)
    return loop, encode_seconds


class _PriorLoop:
    """The state and steps of one prior training run (see :func:`train_prior`)."""

    def __init__(
        self,
        cfg: PriorTrainConfig,
        acc: Any,
        prior: MultimodalPrior,
        run: RunDirectory,
        run_id: str,
    ):
        self.cfg, self.acc, self.prior, self.run_dir, self.run_id = cfg, acc, prior, run, run_id
        self.history: list[dict[str, Any]] = []
        self.state = {
            "step": 0,
            "epoch": 0,
            "batch_in_epoch": 0,
            "train_seconds": 0.0,
            "train_cpu_seconds": 0.0,
        }

    def setup(self, codes: Any, eval_codes: Any) -> None:
        cfg, acc = self.cfg, self.acc
        tok = self.prior.tokenizer
        self.collator = PriorCollator(
            tok,
            modality_order="random" if cfg.random_order else None,
            condition_dropout=cfg.condition_dropout,
            seed=cfg.seed,
        )
        train_loader = _loader(codes, self.collator, cfg.per_device_batch_size, cfg.seed, True)
        eval_rows = eval_codes.select(range(min(cfg.max_eval_samples, len(eval_codes))))
        self.eval_loader = _loader(
            eval_rows,
            PriorCollator(tok, modality_order=None),
            cfg.per_device_batch_size,
            cfg.seed,
            False,
        )
        lm = self.prior.lm
        opt = _optimizer(lm, cfg)
        self.lm, self.opt, self.train_loader = acc.prepare(lm, opt, train_loader)
        self.sched = make_scheduler(self.opt, cfg, cfg.max_steps)
        self.fingerprint = model_fingerprint(acc.unwrap_model(self.lm))
        resume = find_resume_checkpoint(self.run_dir, cfg, self.fingerprint, acc, self.run_id)
        if resume is not None:
            loaded = load_checkpoint(acc, resume)
            for key in self.state:
                self.state[key] = loaded.state.get(key, self.state[key])
            self.sched.load_state_dict(loaded.state["scheduler"])
            if acc.is_main_process:
                logger.info("resumed from %s at step %d", resume, self.state["step"])
        if acc.is_main_process:
            acc.init_trackers(
                cfg.tracker_project_name,
                config={
                    k: v if isinstance(v, (int, float, str, bool)) else str(v)
                    for k, v in {**cfg.to_dict(), **self.prior.config.to_dict()}.items()
                },
            )

    def _batches(self) -> Any:
        state = self.state
        self.collator.set_epoch(state["epoch"])
        if hasattr(self.train_loader, "set_epoch"):
            self.train_loader.set_epoch(state["epoch"])
        if state["batch_in_epoch"]:
            return self.acc.skip_first_batches(self.train_loader, state["batch_in_epoch"])
        return self.train_loader

    def run(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        cfg, acc, state = self.cfg, self.acc, self.state
        progress = tqdm(
            total=cfg.max_steps,
            initial=state["step"],
            desc="prior",
            dynamic_ncols=True,
            disable=not (cfg.tqdm and acc.is_local_main_process),
        )
        start, resumed = time.perf_counter(), float(state["train_seconds"])
        cpu_start, cpu_resumed = time.process_time(), float(state["train_cpu_seconds"])
        excluded = cpu_excluded = 0.0
        window: list[torch.Tensor] = []
        just_saved = False
        while state["step"] < cfg.max_steps:
            for batch in self._batches():
                state["batch_in_epoch"] += 1
                with acc.accumulate(self.lm):
                    loss = self.lm(**batch).loss
                    acc.backward(loss)
                    if acc.sync_gradients and cfg.max_grad_norm > 0:
                        acc.clip_grad_norm_(self.lm.parameters(), cfg.max_grad_norm)
                    self.opt.step()
                    if acc.sync_gradients:
                        self.sched.step()
                    self.opt.zero_grad(set_to_none=True)
                window.append(loss.detach())
                if not acc.sync_gradients:
                    continue
                state["step"] += 1
                state["train_seconds"] = resumed + time.perf_counter() - start - excluded
                state["train_cpu_seconds"] = (
                    cpu_resumed + time.process_time() - cpu_start - cpu_excluded
                )
                progress.update(1)
                t, cpu = time.perf_counter(), time.process_time()
                just_saved = self._after_step(window, progress)
                excluded += time.perf_counter() - t
                cpu_excluded += time.process_time() - cpu
                if state["step"] >= cfg.max_steps:
                    break
            else:
                state["epoch"] += 1
                state["batch_in_epoch"] = 0
        progress.close()
        if not just_saved:
            self._save()
        return self._finish()

    def _after_step(self, window: list[torch.Tensor], progress: Any) -> bool:
        cfg, acc, step = self.cfg, self.acc, self.state["step"]
        if cfg.log_every and step % cfg.log_every == 0 and window:
            mean = acc.reduce(torch.stack(window).mean(), reduction="mean")
            logs = {"loss": float(mean), "lr": self.sched.get_last_lr()[0]}
            window.clear()
            self.history.append({"step": step, **logs})
            if acc.is_main_process:
                acc.log({f"train/{k}": v for k, v in logs.items()}, step=step)
                with self.run_dir.train_log.open("a") as f:
                    f.write(json.dumps({"step": step, **logs}) + "\n")
                progress.set_postfix(loss=f"{logs['loss']:.3f}", refresh=False)
        if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.max_steps:
            self._evaluate(progress)
        if cfg.save_every and step % cfg.save_every == 0:
            self._save()
            return True
        return False

    def _evaluate(self, progress: Any = None) -> float:
        cfg, acc, step = self.cfg, self.acc, self.state["step"]
        with torch.random.fork_rng(devices=[]):
            loss = _eval_loss(acc, self.lm, self.eval_loader, cfg.max_eval_samples)
        if acc.is_main_process:
            acc.log({"eval/loss": loss}, step=step)
            with self.run_dir.train_log.open("a") as f:
                f.write(json.dumps({"step": step, "eval_loss": loss}) + "\n")
            if progress is not None:
                progress.write(f"[prior eval step {step}] loss={loss:.4f}")
        return loss

    def _save(self) -> None:
        save_checkpoint(
            self.acc,
            self.run_dir,
            self.state["step"],
            state=dict(self.state, scheduler=self.sched.state_dict()),
            fingerprint=self.fingerprint,
            keep_last=self.cfg.keep_last_checkpoints,
            run_id=self.run_id,
        )

    def _finish(self) -> dict[str, Any]:
        acc = self.acc
        eval_loss = self._evaluate()
        self.prior.lm = acc.unwrap_model(self.lm)
        self.prior.lm.eval()
        return {
            "eval_loss": round(eval_loss, 6),
            "eval_perplexity": round(math.exp(min(eval_loss, 50.0)), 4),
            "train_seconds": round(self.state["train_seconds"], 3),
            "train_cpu_seconds": round(self.state["train_cpu_seconds"], 3),
            "steps": self.state["step"],
            "num_parameters": self.prior.num_parameters(),
            "vocab_size": self.prior.tokenizer.vocab_size,
            "sequence_length": self.prior.tokenizer.sequence_length(),
        }
