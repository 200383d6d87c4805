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
        "--metrics", help="metrics JSON for the model card (e.g. the run's metrics.json)"
    )
    parser.add_argument(
        "--sample-image", help="image shown in the model card (default: MODEL's own sample grid)"
    )
    parser.add_argument(
        "--training-data", help="one-line description of the training data for the card"
    )


@subcommand(
    "push",
    help="push a saved model to the Hugging Face Hub (with its model card)",
    arguments=_push_arguments,
)
def push_command(args: argparse.Namespace) -> int:
    """``mmvq push MODEL REPO_ID [--private] [--token T] [--revision BRANCH]``."""
    from pathlib import Path

    from mmvq.hub.model_card import SAMPLE_IMAGE_STEM
    from mmvq.model import MultimodalVQ

    sample = args.sample_image
    if sample is None and Path(args.model).is_dir():
        sample = next(
            (str(p) for p in sorted(Path(args.model).glob(f"{SAMPLE_IMAGE_STEM}.*"))), None
        )
    model = MultimodalVQ.from_pretrained(args.model, token=args.token)
    url = model.push_to_hub(
        args.repo_id,
        private=args.private or None,
        token=args.token,
        branch=args.revision,
        commit_message=args.commit_message,
        metrics=args.metrics,
        sample_image=sample,
        training_data=args.training_data,
    )
    print(url)
    return 0
