"""The prior's recipe runner (what ``recipes/train_prior.py`` calls): load a trained tokenizer
model, load its data, :func:`~mmvq.prior.train.train_prior`, save ``OUTPUT_DIR/final`` and print
a summary.

The options are four groups parsed with ``HfArgumentParser``, the conventions of
:mod:`mmvq.training.recipe_args` (flags, a ``.yaml``/``.json`` file, or a file then flags):

* :class:`PriorRecipeArguments`: ``--model`` (the saved :class:`mmvq.MultimodalVQ`) and
  ``--threads``;
* the recipes' data options (:func:`mmvq.training.recipe_args.data_arguments_class`: the built-in
  dataset and its ``--builtin_*`` options, or your files and ``--<modality>_column`` flags);
* :class:`~mmvq.prior.train_config.PriorTrainConfig` (steps, batch, LR, checkpoints...) and
  :class:`~mmvq.prior.model.PriorConfig` (the LM's size);
* :class:`~mmvq.training.recipe_args.HubArguments` (``--push_to_hub``: the prior goes to the
  ``prior/`` folder of ``--hub_model_id``, beside the tokenizer model).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from mmvq.prior.model import PRIOR_SUBFOLDER, PriorConfig
from mmvq.prior.train import PriorTrainResult, train_prior
from mmvq.prior.train_config import PriorTrainConfig
from mmvq.training.recipe_args import (
    HubArguments,
    data_arguments_class,
    data_config,
    parse_argument_groups,
)
from mmvq.training.run_dir import RunDirectory
from mmvq.utils.checks import check_int

__all__ = [
    "PriorRecipe",
    "PriorRecipeArguments",
    "parse_prior_args",
    "prior_recipe_main",
    "run_prior_recipe",
]


@dataclass
class PriorRecipeArguments:
    """What the prior is trained over, and how many CPU threads it uses."""

    model: str | None = field(
        default=None,
        metadata={
            "help": "The trained mmvq model whose codes the prior models: a directory written by "
            "save_pretrained (e.g. a training recipe's OUTPUT_DIR/final) or a Hub repo id."
        },
    )
    threads: int = field(
        default=1,
        metadata={
            "help": "torch CPU threads (0: torch's default). One was fastest on a shared 2-core "
            "CPU: the prior's small matrices gain little from a second thread."
        },
    )

    def __post_init__(self) -> None:
        if not self.model:
            raise ValueError(
                "--model is required: the trained mmvq model (a directory written by "
                "save_pretrained, e.g. a training recipe's OUTPUT_DIR/final, or a Hub repo id)"
            )
        check_int("--threads", self.threads, minimum=0)


class PriorRecipe(NamedTuple):
    """Everything the prior recipe parsed."""

    recipe: PriorRecipeArguments
    data: Any  # an instance of data_arguments_class()
    train: PriorTrainConfig
    prior: PriorConfig
    hub: HubArguments


def _groups() -> list[type]:
    return [
        PriorRecipeArguments,
        data_arguments_class(),
        PriorTrainConfig,
        PriorConfig,
        HubArguments,
    ]


def parse_prior_args(
    argv: Sequence[str] | None = None, defaults: Mapping[str, Any] | None = None
) -> PriorRecipe:
    """Parse flags, a ``.yaml``/``.json`` file, or a file followed by overriding flags
    (:func:`mmvq.training.recipe_args.parse_argument_groups`); ``defaults`` lie under both."""
    return PriorRecipe(*parse_argument_groups(_groups(), argv, defaults))


def run_prior_recipe(args: PriorRecipe) -> PriorTrainResult:
    """Load the tokenizer model and its data, train the prior, save ``OUTPUT_DIR/final`` (and
    push it to ``<hub_model_id>/prior/`` with ``--push_to_hub``); returns the result."""
    import torch

    from mmvq.data import load_data
    from mmvq.model import MultimodalVQ

    if args.recipe.threads:
        torch.set_num_threads(args.recipe.threads)
    model = MultimodalVQ.from_pretrained(args.recipe.model).eval()
    data = data_config(args.data, args.train)
    train_ds, eval_ds = load_data(data, dict(model.adapters))
    result = train_prior(
        model,
        train_ds,
        args.train,
        args.prior,
        eval_ds,
        column_map=data.column_map(list(model.modalities)),
    )
    from accelerate import PartialState

    if PartialState().is_main_process:
        hub = args.hub
        if hub.push_to_hub:
            result.prior.push_to_hub(
                hub.hub_model_id,
                metrics=result.metrics,
                private=hub.hub_private,
                token=hub.hub_token,
            )
        _print_summary(result, args)
    return result


def _print_summary(result: PriorTrainResult, args: PriorRecipe) -> None:
    m, run_dir = result.metrics, RunDirectory(result.output_dir)
    print("\n==== mmvq prior training finished ====")
    for key in ("eval_loss", "eval_perplexity", "steps", "train_seconds", "num_parameters"):
        if key in m:
            print(f"  {key:20s} {m[key]}")
    print(f"Outputs in {run_dir.root.resolve()}:")
    print(f"  metrics      {run_dir.metrics}")
    print(f"  checkpoints  {run_dir.checkpoints} (resume with --resume_from_checkpoint latest)")
    print(f"  final prior  {run_dir.final} (MultimodalPrior.from_pretrained('{run_dir.final}'))")
    print(
        f"  sample       mmvq generate {args.recipe.model} --prior {run_dir.final} --to "
        f"{result.prior.tokenizer.modalities[0]} --num-samples 10 --out samples/"
    )
    if args.hub.push_to_hub:
        print(f"  pushed to    {args.hub.hub_model_id} ({PRIOR_SUBFOLDER}/)")


def prior_recipe_main(
    argv: Sequence[str] | None = None, defaults: Mapping[str, Any] | None = None
) -> PriorTrainResult:
    """Parse ``argv`` (:func:`parse_prior_args`) and :func:`run_prior_recipe`."""
    return run_prior_recipe(parse_prior_args(argv, defaults))
