"""The recipe runner (what ``recipes/*.py`` and ``mmvq train CONFIG.yaml`` call): build the model
from the parsed options, load the data, train, save ``OUTPUT_DIR/final`` (and push it) with a card
that records the training data, and print a summary. The options themselves are
:mod:`mmvq.training.recipe_args`; what the card says about the data, :mod:`~.recipe_card`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mmvq.data import DataConfig, load_data
from mmvq.data.builtin import get_builtin_dataset
from mmvq.model import MultimodalVQ, MultimodalVQConfig
from mmvq.registry import get_adapter
from mmvq.training.config import TrainConfig
from mmvq.training.cpu_threads import use_physical_cores
from mmvq.training.loop import TrainResult, train
from mmvq.training.recipe_args import (
    HubArguments,
    ModelArguments,
    RecipeArguments,
    data_config,
    parse_recipe_args,
)
from mmvq.training.recipe_card import model_license, training_data_record
from mmvq.training.run_dir import RunDirectory
from mmvq.utils.logging import get_logger

__all__ = [
    "build_model",
    "default_scorers",
    "recipe_main",
    "recipe_script",
    "run_recipe",
    "summary_keys",
]

logger = get_logger(__name__)


def build_model(args: ModelArguments) -> MultimodalVQ:
    """The :class:`mmvq.MultimodalVQ` the arguments describe (adapters from the registry)."""
    values = args.resolved()
    code_dim = int(values["code_dim"])
    adapters = {}
    for m in args.modality_list:
        config_class = get_adapter(m).config_class
        overrides = {**args.adapter_overrides.get(m, {}), "code_dim": code_dim}
        if hasattr(config_class, "preset"):
            adapters[m] = (m, config_class.preset(args.preset, **overrides))
        else:
            adapters[m] = (m, config_class(**overrides))
    config = MultimodalVQConfig(
        codebook={
            "num_codes": values["num_codes"],
            "code_dim": code_dim,
            **args.codebook_overrides,
        },
        decoder={
            "dim": values["decoder_dim"],
            "depth": values["decoder_depth"],
            "heads": values["decoder_heads"],
            "mlp_ratio": values["decoder_mlp_ratio"],
        },
        concept=dict(args.concept),
        modality_dropout=args.modality_dropout,
    )
    return MultimodalVQ.build(adapters, config)


def default_scorers(data: DataConfig, modalities: Sequence[str]) -> dict[str, Callable[..., Any]]:
    """The translation scorers the built-in dataset offers when the data is built in, else none
    (e.g. ``text->image`` scoring on the shapes data read from its own columns)."""
    if not data.uses_builtin:
        return {}
    dataset = get_builtin_dataset(str(data.builtin))
    return dataset.translation_scorers(data.column_map(modalities))


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _cpu_run(train: TrainConfig) -> bool:
    """Whether the run will train on the CPU (``--cpu``, or no accelerator present)."""
    import torch

    if train.cpu:
        return True
    mps = getattr(torch.backends, "mps", None)
    xpu = getattr(torch, "xpu", None)
    return not (
        torch.cuda.is_available()
        or (mps is not None and mps.is_available())
        or (xpu is not None and xpu.is_available())
    )


def _save_final(result: TrainResult, hub: HubArguments, card: dict[str, Any]) -> Path:
    """``OUTPUT_DIR/final`` (model card with the run's metrics, its newest sample grid, the
    training data and license) and the optional push, with the same card."""
    model, run_dir = result.model, RunDirectory(result.output_dir)
    card = dict(card)
    if run_dir.metrics.is_file():
        card["metrics"] = str(run_dir.metrics)
    grid = run_dir.latest_sample_grid(model.modalities)
    if grid is not None:
        card["sample_image"] = str(grid)
    repo_id = hub.hub_model_id if hub.push_to_hub else None
    model.save_pretrained(str(run_dir.final), repo_id=repo_id, **card)
    if hub.push_to_hub:
        url = model.push_to_hub(
            hub.hub_model_id, private=hub.hub_private, token=hub.hub_token, **card
        )
        logger.info("Pushed the final model and its card to %s", url)
    return run_dir.final


def run_recipe(
    args: RecipeArguments, translation_scorers: Mapping[str, Callable[..., Any]] | None = None
) -> TrainResult:
    """Build the model, load the data, train, save ``OUTPUT_DIR/final`` (and push it with
    ``--push_to_hub``); returns the TrainResult. On a CPU run under ``accelerate launch`` whose
    thread count is accelerate's default, every physical core is used
    (:func:`~mmvq.training.cpu_threads.use_physical_cores`)."""
    from accelerate.utils import set_seed

    threads = use_physical_cores(_cpu_run(args.train))
    logger.info("CPU threads: %d (%s)", threads.threads, threads.reason)
    modalities = args.model.modality_list
    data = data_config(args.data, args.train)
    set_seed(args.train.seed)  # before anything random is built: the same command, the same run
    model = build_model(args.model)
    train_ds, eval_ds = load_data(data, dict(model.adapters))
    scorers = (
        default_scorers(data, modalities)
        if translation_scorers is None
        else dict(translation_scorers)
    )
    card = {
        "training_data": training_data_record(data, modalities, train_ds, eval_ds),
        "license": model_license(args.hub.license, data, train_ds),
    }
    result = train(
        model,
        train_ds,
        args.train,
        eval_ds,
        translation_scorers=scorers,
        column_map=data.column_map(modalities),
    )
    if _is_main_process():
        final = _save_final(result, args.hub, card)
        _print_summary(result, final)
    return result


def summary_keys(model: MultimodalVQ) -> list[str]:
    """The metrics a run's summary shows, as the adapters declare them: each modality's headline
    metrics, then per translation ``<s>_to_<t>_score`` (a scorer's) and ``t``'s translation
    metrics, then the codebook figures (both levels), retrieval by concept codes and timing."""
    keys = [f"{m}_{name}" for m, a in model.adapters.items() for name in a.headline_metrics]
    for target, adapter in model.adapters.items():
        for source in model.modalities:
            if source != target:
                keys.append(f"{source}_to_{target}_score")
                keys += [f"{source}_to_{target}_{name}" for name in adapter.translation_metrics]
    keys += ["codebook_usage", "same_code_agreement"]
    if model.concept is not None:
        keys += ["concept_codebook_usage", "concept_same_code_agreement"]
        keys += [
            f"retrieval_r1_{a}_to_{b}" for a in model.modalities for b in model.modalities if a != b
        ]
    return keys + ["train_seconds", "steps"]


def _print_summary(result: TrainResult, final: Path) -> None:
    m = result.metrics
    out = RunDirectory(result.output_dir)
    print("\n==== mmvq training finished ====")
    for k in summary_keys(result.model):
        if k in m:
            v = m[k]
            print(f"  {k:32s} {v:.4f}" if isinstance(v, float) else f"  {k:32s} {v}")
    if "perplexity" in m:
        print(
            f"  {'perplexity':32s} " + ", ".join(f"{k}={v:.1f}" for k, v in m["perplexity"].items())
        )
    print(f"Outputs in {out.root.resolve()}:")
    print(f"  metrics      {out.metrics}")
    print(
        f"  samples      {out.samples_root} (one folder per evaluation: PNG grids, .txt and .wav "
        "files)"
    )
    print(f"  checkpoints  {out.checkpoints} (resume with --resume_from_checkpoint latest)")
    print(f"  logs         {out.train_log} and {out.logs} (tensorboard --logdir {out.logs})")
    print(f"  final model  {final} (MultimodalVQ.from_pretrained('{final}'))")


def recipe_main(
    argv: Sequence[str] | None = None, defaults: Mapping[str, Any] | None = None
) -> TrainResult:
    """Parse ``argv`` (see :func:`parse_recipe_args`) and :func:`run_recipe`; the CLI's entry."""
    return run_recipe(parse_recipe_args(argv, defaults))


def recipe_script(
    defaults: Mapping[str, Any] | None = None, main: Callable[..., Any] | None = None
) -> int:
    """What a recipe script runs: ``main`` (default :func:`recipe_main`; another recipe's entry,
    e.g. :func:`mmvq.prior.recipe.prior_recipe_main`) on ``sys.argv`` with ``defaults``, an error
    reported as one line on stderr with exit code 2 (as the ``mmvq`` command does;
    ``MMVQ_DEBUG=1`` prints the traceback instead). Returns the exit code."""
    import os
    import sys
    import traceback

    try:
        (main or recipe_main)(defaults=defaults)
    except KeyboardInterrupt:
        print(f"{Path(sys.argv[0]).name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every error becomes one line (or the traceback)
        if os.environ.get("MMVQ_DEBUG"):
            traceback.print_exc()
        line = " ".join(str(exc).split()) or type(exc).__name__
        hint = "" if os.environ.get("MMVQ_DEBUG") else " (MMVQ_DEBUG=1 prints the traceback)"
        print(f"{Path(sys.argv[0]).name}: error: {line}{hint}", file=sys.stderr)
        return 2
    return 0
