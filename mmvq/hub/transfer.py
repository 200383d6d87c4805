"""Hub transfers shared by everything mmvq keeps in a model repo (the tokenizer model, and the
prior in its ``prior/`` folder): a download restricted to data files from a repo holding no code
(:func:`download_snapshot`), and a one-commit upload of a freshly saved folder
(:func:`upload_saved`). Every failure is worded: a missing repo, revision or file is a
:class:`~mmvq.hub.format.PretrainedNotFoundError`, an unreachable Hub a
:class:`~mmvq.hub.errors.HubAccessError`, code in the repo a
:class:`~mmvq.hub.safety.RemoteCodeError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import SoftTemporaryDirectory

from mmvq.hub.errors import not_downloaded, reword
from mmvq.hub.format import CONFIG_NAME, PretrainedNotFoundError
from mmvq.hub.safety import DOWNLOAD_PATTERNS, check_repo_files

__all__ = ["download_snapshot", "upload_saved"]


def download_snapshot(
    name: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    subfolder: str | None = None,
    patterns: Sequence[str] = DOWNLOAD_PATTERNS,
    required: str = CONFIG_NAME,
    saved_by: str = "a model saved by mmvq (push one with model.push_to_hub(repo_id))",
) -> Path:
    """A Hub repo's snapshot, every failure worded; the local folder of ``subfolder`` (else of
    the repo), which must hold ``required`` (else it is not ``saved_by``).

    Only ``patterns`` (default :data:`DOWNLOAD_PATTERNS`; data file types, never code) under
    ``subfolder`` are downloaded, and a repo whose listing has a code file anywhere is refused
    before anything is downloaded (:func:`mmvq.hub.safety.check_repo_files`).
    """
    where = (
        f"Hub repo {name!r}"
        + (f" at revision {revision!r}" if revision else "")
        + (f", subfolder {subfolder!r}" if subfolder else "")
    )
    allow = [f"{subfolder}/{p}" for p in patterns] if subfolder else list(patterns)
    try:
        if not local_files_only:
            _refuse_code(name, revision, token, where)
        folder = snapshot_download(
            repo_id=name,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            force_download=force_download,
            local_files_only=local_files_only,
            allow_patterns=allow,
        )
    except RevisionNotFoundError:
        raise PretrainedNotFoundError(
            f"{where}: no such revision; pass an existing branch, tag or commit (revision=...)."
        ) from None
    except RepositoryNotFoundError:
        raise PretrainedNotFoundError(
            f"{where} was not found; check the id, and if the repo is private pass token=... "
            "(or log in with `hf auth login`)."
        ) from None
    except (LocalEntryNotFoundError, EntryNotFoundError) as exc:
        raise not_downloaded(where, exc, token, local_files_only) from None
    except Exception as exc:
        reword(f"from_pretrained({name!r})", exc, token)
        raise
    folder_path = Path(folder) / subfolder if subfolder else Path(folder)
    if not (folder_path / required).is_file():
        raise PretrainedNotFoundError(f"{where} has no {required}: it is not {saved_by}.")
    return folder_path


def _refuse_code(name: str, revision: str | None, token: str | bool | None, where: str) -> None:
    """Refuse a repo holding code files before downloading anything (its listing). When the
    listing cannot be fetched (offline, with a cached copy) the downloaded files are still
    checked (:func:`mmvq.hub.safety.check_no_code`) and never include code types."""
    try:
        files = HfApi(token=token).list_repo_files(name, revision=revision)
    except (RepositoryNotFoundError, RevisionNotFoundError):
        raise
    except Exception:  # noqa: BLE001 - no listing (network): the snapshot is checked instead
        return
    check_repo_files(files, where)


def upload_saved(
    save: Callable[[Path, str], Path],
    repo_id: str,
    *,
    token: str | None = None,
    private: bool | None = None,
    branch: str | None = None,
    commit_message: str,
    path_in_repo: str | None = None,
    **upload_kwargs: Any,
) -> str:
    """Create the repo if needed (and ``branch``, from ``main``), call ``save(tmp_dir, repo_id)``
    for the folder to upload, and upload it in one commit; returns the commit URL.

    ``upload_kwargs`` go to :meth:`huggingface_hub.HfApi.upload_folder` (``create_pr``,
    ``allow_patterns``, ``ignore_patterns``, ``delete_patterns``...). A Hub that cannot be
    reached or refuses the token raises :class:`~mmvq.hub.errors.HubAccessError`.
    """
    api = HfApi(token=token)
    try:
        repo_id = api.create_repo(repo_id=repo_id, private=private, exist_ok=True).repo_id
        if branch and branch != "main":
            api.create_branch(repo_id=repo_id, branch=branch, exist_ok=True)
        with SoftTemporaryDirectory() as tmp:
            return api.upload_folder(
                repo_id=repo_id,
                repo_type="model",
                folder_path=save(Path(tmp), repo_id),
                path_in_repo=path_in_repo,
                commit_message=commit_message,
                revision=branch,
                **upload_kwargs,
            )
    except Exception as exc:
        reword(f"push_to_hub({repo_id!r})", exc, token)
        raise
