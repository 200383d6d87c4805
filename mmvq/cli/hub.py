"""``mmvq push MODEL REPO_ID``: a saved model to the Hugging Face Hub, with its model card."""

from __future__ import annotations

import argparse

from mmvq.cli.models import MODEL_HELP
from mmvq.cli.parser import subcommand


def _push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    parser.add_argument("repo_id", metavar="REPO_ID", help="the Hub repo to push to, e.g. org/name")
    parser.add_argument(
        "--private",
        action="store_true",
        help="create the repo private (an existing repo keeps its visibility)",
    )
    parser.add_argument(
        "--token", help="Hub token with write access (default: HF_TOKEN or the logged-in one)"
    )
    parser.add_argument("--revision", help="branch to push to (created if missing; default: main)")
    parser.add_argument("--commit-message", default="Upload mmvq model", help="the commit message")
    parser.add_argument(
        "--metrics",
        help="metrics JSON for the model card (default: MODEL's eval_results.json, which "
        "save_pretrained keeps)",
    )
    parser.add_argument(
        "--sample-image", help="image shown in the model card (default: MODEL's own sample grid)"
    )
    parser.add_argument(
        "--training-data",
        help="one-line description of the training data for the card (default: what MODEL's "
        "card records)",
    )
    parser.add_argument(
        "--license", help="license of the model for the card (default: what MODEL's card says)"
    )


@subcommand(
    "push",
    help="push a saved model to the Hugging Face Hub (with its model card)",
    arguments=_push_arguments,
)
def push_command(args: argparse.Namespace) -> int:
    """``mmvq push MODEL REPO_ID [--private] [--token T] [--revision BRANCH]``: the card keeps
    what MODEL's own card records (metrics, sample grid, training data, license) unless the
    options override it."""
    from pathlib import Path

    from mmvq.hub import resolve_model_dir
    from mmvq.hub.card_inputs import read_card_inputs
    from mmvq.model import MultimodalVQ

    directory = resolve_model_dir(args.model, token=args.token)
    card = read_card_inputs(directory) if Path(args.model).is_dir() else {}
    given = {
        "metrics": args.metrics,
        "sample_image": args.sample_image,
        "training_data": args.training_data,
        "license": args.license,
    }
    card = {k: v if v is not None else card.get(k) for k, v in given.items()}
    model = MultimodalVQ.from_pretrained(directory)
    url = model.push_to_hub(
        args.repo_id,
        private=args.private or None,
        token=args.token,
        branch=args.revision,
        commit_message=args.commit_message,
        **card,
    )
    print(url)
    return 0
