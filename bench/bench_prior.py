"""Prior benchmarks, each against its baseline measured in the same run.

1. **Sampling** (``sampling_ratio``, target >= 5): :func:`mmvq.prior.generation.generate` (HF
   ``generate()`` with the KV cache and the grammar's logits processor) against taming's loop,
   which re-runs the LM over the whole sequence at every step (``use_cache=False``; the same
   logits processor, temperature and multinomial draw). Both sample the full default sequence:
   ``[bos] <image> 4 + 64 codes </image> <text> 4 + 48 codes </text> [eos]`` (126 ids, the
   default recipe's layout: concept then detail codes), ``--num_samples`` sequences in batches
   of ``--batch_size``, with the default :class:`~mmvq.prior.PriorConfig` (random weights: the
   cost does not depend on them).
2. **Tokenising a dataset** (``encode_ratio``, target >= 0.8): :func:`mmvq.prior.data.
   encode_dataset` (``datasets.map``, batched, writing its Arrow cache file) against the bare
   encoders + codebook lookup at the same batch size: the same rows read from the dataset, each
   adapter's ``preprocess`` + ``collate``, ``adapter.encode``, ``codebook.lookup`` and, with a
   concept level, ``concept.encode`` (both levels, as ``encode_dataset`` gives), codes kept in
   memory. ``encoders_only`` (informational) times ``encode`` + ``lookup`` on batches collated
   beforehand. ``mmvq_encode_ratio`` (same target): the command line, ``mmvq encode MODEL --data
   rows.parquet --out codes.jsonl`` on the same rows, run in this process and timed whole (the
   model and the file loaded, every row written as a JSON line).

Variants are interleaved round by round (alternating order); figures are medians. The tokenizer
model is the default recipe's (``recipes/fuse_image_text.py``), untrained unless ``--model DIR``
(a saved model) is given. The last line printed is a JSON object of the figures.

    python bench/bench_prior.py                   # CPU
    python bench/bench_prior.py --quick --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "recipes"))

SAMPLING_TARGET = 5.0
ENCODE_TARGET = 0.8


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=None, help="a saved MultimodalVQ (default: untrained)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--num_samples", type=int, default=16, help="sequences sampled per variant")
    p.add_argument("--batch_size", type=int, default=16, help="sequences per generate() call")
    p.add_argument(
        "--encode_rows",
        type=int,
        default=2048,
        help="dataset rows to tokenise (default: the default recipe's whole training set)",
    )
    p.add_argument("--encode_batch_size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="fewer samples, rows and rounds")
    return p.parse_args()


def _model(path: str | None, device: torch.device):
    from fuse_image_text import DEFAULTS

    from mmvq.training.recipe import build_model
    from mmvq.training.recipe_args import parse_recipe_args

    if path:
        from mmvq.model import MultimodalVQ

        return MultimodalVQ.from_pretrained(path).to(device).eval()
    torch.manual_seed(0)
    return build_model(parse_recipe_args([], DEFAULTS).model).to(device).eval()


def _interleave(variants: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run every variant once per round (alternating order); each returns its seconds."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            times[name].append(variants[name]())
    return times


def _full_recompute_sampler(prior, num_samples: int, batch_size: int, seed: int) -> Callable:
    """Taming's sampling loop: the whole sequence through the LM at every step."""
    from mmvq.prior.grammar import ConstrainedLogitsProcessor

    tok = prior.tokenizer
    order = ["image", "text"]
    processor = ConstrainedLogitsProcessor(tok.vocab, order)
    steps = tok.sequence_length(order) - 2

    @torch.no_grad()
    def run() -> float:
        torch.manual_seed(seed)
        start = time.perf_counter()
        for first in range(0, num_samples, batch_size):
            rows = min(batch_size, num_samples - first)
            ids = torch.tensor(
                [[tok.bos_token_id, tok.begin_token_id("image")]] * rows, device=prior.device
            )
            for _ in range(steps):
                logits = prior.lm(ids, use_cache=False).logits[:, -1]
                scores = processor(ids, logits)
                nxt = torch.multinomial(torch.softmax(scores.float(), dim=-1), 1)
                ids = torch.cat([ids, nxt], dim=1)
            assert all(s.complete for s in tok.parse(ids.cpu()))
        return time.perf_counter() - start

    return run


def bench_sampling(model, args) -> dict[str, float]:
    from mmvq.prior import MultimodalPrior, MultimodalTokenizer, PriorConfig
    from mmvq.prior.generation import PriorSamplingConfig

    tok = MultimodalTokenizer.from_model(model, padding={"image": False, "text": True})
    torch.manual_seed(0)
    prior = MultimodalPrior.build(tok, PriorConfig()).to(model.codebook.codebook.device)
    prior.lm.eval()
    cfg = PriorSamplingConfig(seed=0, batch_size=args.batch_size)

    def kv_cache() -> float:
        start = time.perf_counter()
        out = prior.generate(
            args.num_samples, modalities=["image", "text"], config=cfg, decode=False
        )
        assert out.sequences.shape == (args.num_samples, tok.sequence_length(["image", "text"]))
        return time.perf_counter() - start

    variants = {
        "kv_cache": kv_cache,
        "full_recompute": _full_recompute_sampler(prior, args.num_samples, args.batch_size, 0),
    }
    kv_cache()  # warm-up
    times = _interleave(variants, args.rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    new = tok.sequence_length(["image", "text"]) - 2
    return {
        "sequence_length": float(tok.sequence_length(["image", "text"])),
        "prior_parameters": float(prior.num_parameters()),
        "kv_cache_tokens_per_s": args.num_samples * new / med["kv_cache"],
        "full_recompute_tokens_per_s": args.num_samples * new / med["full_recompute"],
        "sampling_ratio": med["full_recompute"] / med["kv_cache"],
    }


def bench_encoding(model, args) -> dict[str, float]:
    from mmvq.data import MultimodalCollator
    from mmvq.prior.data import encode_dataset
    from mmvq_adapters.shapes import make_shapes_dataset

    ds = make_shapes_dataset(num_train=args.encode_rows, num_eval=0)["train"]
    ds = ds.select_columns(["image", "text"])
    bs = args.encode_batch_size
    collate = MultimodalCollator(dict(model.adapters))
    device = model.codebook.codebook.device

    def bare_batches():
        for batch in ds.iter(batch_size=bs):
            rows = [
                {m: model.adapters[m].preprocess(batch[m][i]) for m in ("image", "text")}
                for i in range(len(batch["text"]))
            ]
            yield {m: {k: v.to(device) for k, v in sub.items()} for m, sub in collate(rows).items()}

    @torch.no_grad()
    def encode_and_lookup(batch) -> list[torch.Tensor]:
        out = []
        for m, sub in batch.items():
            tokens = model.adapters[m].encode(sub)
            mask = tokens.mask.bool()
            out.append(model.codebook.lookup(tokens.z).masked_fill(~mask, -1).cpu())
            if model.concept is not None:  # the same codes as encode_dataset: both levels
                present = torch.ones(mask.shape[0], dtype=torch.bool, device=mask.device)
                out.append(model.concept.encode(m, tokens.z, mask, present).cpu())
        return out

    def bare() -> float:
        start = time.perf_counter()
        kept = [encode_and_lookup(b) for b in bare_batches()]
        assert sum(k[0].shape[0] for k in kept) == len(ds)
        return time.perf_counter() - start

    collated = list(bare_batches())

    def encoders_only() -> float:
        start = time.perf_counter()
        for b in collated:
            encode_and_lookup(b)
        return time.perf_counter() - start

    def datasets_map() -> float:
        with tempfile.TemporaryDirectory(prefix="mmvq_bench_prior_") as tmp:
            start = time.perf_counter()
            out = encode_dataset(model, ds, batch_size=bs, cache_dir=tmp, desc=None)
            assert len(out.cache_files) == 1 and len(out) == len(ds)
            return time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="mmvq_bench_encode_") as tmp:
        model_dir, data_file = Path(tmp) / "model", Path(tmp) / "rows.parquet"
        model.save_pretrained(str(model_dir))
        ds.to_parquet(str(data_file))
        variants = {
            "datasets_map": datasets_map,
            "bare": bare,
            "encoders_only": encoders_only,
            "mmvq_encode": lambda: _mmvq_encode(model_dir, data_file, Path(tmp), bs, len(ds)),
        }
        bare()  # warm-up
        times = _interleave(variants, args.rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "encode_rows": float(len(ds)),
        "datasets_map_rows_per_s": len(ds) / med["datasets_map"],
        "bare_rows_per_s": len(ds) / med["bare"],
        "encoders_only_rows_per_s": len(ds) / med["encoders_only"],
        "mmvq_encode_rows_per_s": len(ds) / med["mmvq_encode"],
        "encode_ratio": med["bare"] / med["datasets_map"],
        "mmvq_encode_ratio": med["bare"] / med["mmvq_encode"],
    }


def _mmvq_encode(model_dir: Path, data_file: Path, tmp: Path, batch_size: int, rows: int) -> float:
    """``mmvq encode MODEL --data rows.parquet --out codes.jsonl`` in this process, timed whole
    (loading the model and the file included)."""
    from mmvq.cli.parser import main as cli_main

    out = tmp / "codes.jsonl"
    out.unlink(missing_ok=True)
    argv = ["encode", str(model_dir), "--data", str(data_file), "--out", str(out)]
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = cli_main([*argv, "--batch-size", str(batch_size)])
    seconds = time.perf_counter() - start
    with out.open(encoding="utf-8") as f:
        assert code == 0 and sum(1 for _ in f) == rows
    return seconds


def main() -> None:
    warnings.filterwarnings("ignore")
    args = _args()
    if args.quick:
        args.num_samples, args.batch_size, args.encode_rows, args.rounds = 8, 8, 128, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()
    device = torch.device(args.device)
    model = _model(args.model, device)
    figures = {"threads": float(torch.get_num_threads())}
    print("sampling ...", file=sys.stderr, flush=True)
    figures.update(bench_sampling(model, args))
    print(
        f"sampling {args.num_samples} sequences of {int(figures['sequence_length'])} ids, "
        f"batch {args.batch_size}: KV cache {figures['kv_cache_tokens_per_s']:.0f} ids/s, "
        f"full recompute {figures['full_recompute_tokens_per_s']:.0f} ids/s -> "
        f"{figures['sampling_ratio']:.1f}x (target >= {SAMPLING_TARGET:g}x)"
    )
    print("tokenising ...", file=sys.stderr, flush=True)
    figures.update(bench_encoding(model, args))
    print(
        f"tokenising {int(figures['encode_rows'])} rows, batch {args.encode_batch_size}: "
        f"datasets.map {figures['datasets_map_rows_per_s']:.0f} rows/s, bare encoders + lookup "
        f"{figures['bare_rows_per_s']:.0f} rows/s -> {figures['encode_ratio']:.2f}x (target >= "
        f"{ENCODE_TARGET:g}x); encoders alone on collated batches "
        f"{figures['encoders_only_rows_per_s']:.0f} rows/s; `mmvq encode --data` over a parquet "
        f"file {figures['mmvq_encode_rows_per_s']:.0f} rows/s -> "
        f"{figures['mmvq_encode_ratio']:.2f}x"
    )
    print(json.dumps({k: round(v, 4) for k, v in figures.items()}))


if __name__ == "__main__":
    main()
