"""The prior on the Hugging Face Hub: it lives in the ``prior/`` folder of its tokenizer model's
repo, so one repo holds both::

    org/name/
      config.json, model.safetensors, adapters/...   the tokenizer model (MultimodalVQ)
      prior/prior_config.json, prior/prior_tokenizer.json, prior/lm/...   the prior
      prior/README.md (+ eval_results.json, sample_grid.png)   its model card (mmvq.prior.card)

    prior.push_to_hub("org/name")                             # uploads prior/ only
    MultimodalPrior.from_pretrained("org/name", model=vq)     # downloads prior/ only

A push replaces the whole ``prior/`` folder (stale files of an earlier push are deleted in the
same commit) and leaves the tokenizer model's files alone; pushing the tokenizer model
(:meth:`mmvq.MultimodalVQ.push_to_hub`) leaves ``prior/`` alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmvq.hub.safety import DATA_SUFFIXES

__all__ = ["PRIOR_DOWNLOAD_PATTERNS", "PRIOR_SUBFOLDER", "push_prior", "resolve_prior_dir"]

PRIOR_SUBFOLDER = "prior"
"""The folder of a tokenizer model's repo (or saved directory) that holds its prior."""
PRIOR_DOWNLOAD_PATTERNS = [f"*{suffix}" for suffix in DATA_SUFFIXES]
"""The files of the prior's folder a download fetches: data file types only, never code
(:mod:`mmvq.hub.safety`); a repo with a code file anywhere is refused before any download."""


def resolve_prior_dir(
    name_or_path: str | os.PathLike,
    config_file: str,
    *,
    subfolder: str = PRIOR_SUBFOLDER,
    **hub_kwargs: Any,
) -> Path:
    """The local directory of a saved prior: ``name_or_path`` when it holds ``config_file``, else
    its ``subfolder``; a name that is no directory is a Hub repo id, whose ``subfolder`` only is
    downloaded, its data files only (:data:`PRIOR_DOWNLOAD_PATTERNS`; a repo holding code is
    refused: :func:`mmvq.hub.transfer.download_snapshot`; ``hub_kwargs``: ``revision``,
    ``token``, ``cache_dir``, ``force_download``, ``local_files_only``)."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / config_file).is_file() and (path / subfolder / config_file).is_file():
            return path / subfolder
        return path  # a directory without the file: the loader's error names it
    from mmvq.hub.transfer import download_snapshot

    return download_snapshot(
        os.fspath(name_or_path),
        subfolder=subfolder,
        patterns=PRIOR_DOWNLOAD_PATTERNS,
        required=config_file,
        saved_by="a repo with an mmvq prior (push one with prior.push_to_hub(repo_id))",
        **hub_kwargs,
    )


def push_prior(
    prior: Any,
    repo_id: str,
    *,
    subfolder: str = PRIOR_SUBFOLDER,
    commit_message: str = "Upload mmvq prior",
    card: dict[str, Any] | None = None,
    **hub_kwargs: Any,
) -> str:
    """Upload ``prior.save_pretrained(...)`` to ``subfolder`` of ``repo_id`` in one commit that
    also deletes the folder's stale files (:func:`mmvq.hub.transfer.upload_saved`; ``card``: the
    model card's arguments of ``save_pretrained``; ``hub_kwargs``: ``token``, ``private``,
    ``branch``); returns the commit URL."""
    from mmvq.hub.transfer import upload_saved

    return upload_saved(
        lambda tmp, _: prior.save_pretrained(tmp / subfolder, **(card or {})),
        repo_id,
        commit_message=commit_message,
        path_in_repo=subfolder,
        delete_patterns="*",
        **hub_kwargs,
    )
