"""Hugging Face Hub integration of :class:`~mmvq.model.MultimodalVQ`: save, load, push.

:class:`MultimodalVQHubMixin` is a :class:`huggingface_hub.ModelHubMixin` (``library_name="mmvq"``)
whose ``_save_pretrained`` / ``from_pretrained`` speak the format of :mod:`mmvq.hub.format`::

    model.save_pretrained("out/", metrics="runs/x/metrics.json", sample_image="grid.png")
    model = MultimodalVQ.from_pretrained("out/")                        # a local directory
    model = MultimodalVQ.from_pretrained("org/name", revision="v1")     # a Hub repo
    model.push_to_hub("org/name", private=True)

Loading never unpickles anything (safetensors only) and resolves adapters only through the
registry. Every failure is a :class:`~mmvq.hub.format.PretrainedError` that names the file or repo,
the problem and the fix.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import torch
from huggingface_hub import ModelCard, ModelHubMixin
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from mmvq.hub.card_inputs import EVAL_RESULTS_NAME, MetricsInput, TrainingData, card_kwargs
from mmvq.hub.format import (
    ADAPTERS_DIR,
    CONFIG_NAME,
    WEIGHTS_NAME,
    PretrainedError,
    PretrainedNotFoundError,
    describe_model,
    load_pretrained_dir,
    save_pretrained_files,
)
from mmvq.hub.loading import (
    FROM_PRETRAINED_ARGUMENTS,
    check_strict,
    check_subfolder,
    file_dtype,
    resolve_device,
    resolve_dtype,
)
from mmvq.hub.model_card import build_model_card, write_model_card
from mmvq.hub.safety import DOWNLOAD_PATTERNS
from mmvq.hub.transfer import download_snapshot, upload_saved

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image
    from typing_extensions import Self  # typing.Self needs Python 3.11

__all__ = ["DOWNLOAD_PATTERNS", "MultimodalVQHubMixin", "resolve_model_dir"]

SampleImage = Union[str, os.PathLike, "Image.Image", None]


STALE_PATTERNS = [f"{ADAPTERS_DIR}/*", "sample_grid.*", EVAL_RESULTS_NAME]
"""Remote files a push deletes unless it re-uploads them (left over from an earlier push)."""

_PATH_LIKE = re.compile(r"^(\.{1,2}|~)?[/\\]|^\.{1,2}$|[/\\].*[/\\]|\\")


def _looks_like_path(name: str) -> bool:
    """Whether ``name`` is meant as a filesystem path rather than ``org/name``."""
    return bool(_PATH_LIKE.search(name)) or os.path.isabs(name)


def resolve_model_dir(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
    local_files_only: bool = False,
    subfolder: str | None = None,
) -> Path:
    """The local directory holding a saved model: ``name_or_path`` itself, or a Hub snapshot;
    ``subfolder`` of it when given (a model saved in a folder of the directory or repo).

    A Hub repo is fetched with :func:`huggingface_hub.snapshot_download` (only
    :data:`DOWNLOAD_PATTERNS`, under ``subfolder``), honouring ``revision``, ``cache_dir``,
    ``token``, ``force_download`` and ``local_files_only``.

    Raises:
        PretrainedNotFoundError: no such directory, repo, revision, or no ``config.json`` in it.
        PretrainedError: ``name_or_path`` is neither a directory nor a valid repo id, or the Hub
            cannot be reached and nothing is cached.
    """
    name = os.fspath(name_or_path)
    if not isinstance(name, str) or not name:
        raise PretrainedError(
            "from_pretrained needs a directory or a Hub repo id such as 'org/name', got "
            f"{name_or_path!r}"
        )
    subfolder = check_subfolder(subfolder)
    path = Path(name).expanduser()
    if path.is_dir():
        if subfolder:
            path = path / subfolder
        if not (path / CONFIG_NAME).is_file():
            raise PretrainedNotFoundError(
                f"{path} has no {CONFIG_NAME}: it is not a model saved by mmvq (save one with "
                "model.save_pretrained(directory), or pass the directory that holds config.json "
                "and model.safetensors"
                + (", and the subfolder=... it was saved in" if subfolder else "")
                + ")."
            )
        return path
    if path.exists():
        raise PretrainedError(
            f"{path} is a file; from_pretrained needs the directory that holds {CONFIG_NAME} and "
            f"{WEIGHTS_NAME} (e.g. {path.parent})."
        )
    if _looks_like_path(name):
        raise PretrainedNotFoundError(
            f"no such directory: {path}; pass the directory written by save_pretrained, or a Hub "
            "repo id such as 'org/name'."
        )
    try:
        validate_repo_id(name)
    except HFValidationError as exc:
        raise PretrainedError(
            f"{name!r} is neither a directory nor a valid Hub repo id ({exc}); pass a saved "
            "model's "
            "directory or a repo id such as 'org/name'."
        ) from None
    return download_snapshot(
        name,
        revision=revision,
        cache_dir=cache_dir,
        token=token,
        force_download=force_download,
        local_files_only=local_files_only,
        subfolder=subfolder,
    )


class MultimodalVQHubMixin(
    ModelHubMixin,
    library_name="mmvq",
    tags=["mmvq"],
):
    """Hub save/load/push for :class:`~mmvq.model.MultimodalVQ` (see the module docstring)."""

    # ------------------------------------------------------------------ saving
    def _save_pretrained(self, save_directory: Path) -> None:
        """Write ``config.json``, ``model.safetensors`` and ``adapters/<modality>/``."""
        save_pretrained_files(self, save_directory)  # type: ignore[arg-type]

    def save_pretrained(  # type: ignore[override]
        self,
        save_directory: str | os.PathLike,
        *,
        config: dict | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        metrics: MetricsInput = None,
        sample_image: SampleImage = None,
        training_data: TrainingData = None,
        license: str | None = None,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Save the model (weights, config, adapter files, model card) into ``save_directory``.

        Args:
            save_directory: created if needed. ``config.json``, ``model.safetensors``,
                ``README.md``, ``eval_results.json``, ``sample_grid.*`` and ``adapters/`` in it
                are overwritten.
            config: not supported (the config is always the model's own); must be ``None``.
            repo_id: the Hub repo id, for the card's loading snippet and for ``push_to_hub=True``.
            push_to_hub: also push to ``repo_id`` (default: the directory name).
            model_card_kwargs: alternative way to pass ``metrics`` / ``sample_image`` /
                ``training_data`` / ``license`` (what :class:`~huggingface_hub.ModelHubMixin`
                callers use).
            metrics: the last evaluation's metrics for the card (dict or ``metrics.json`` path);
                kept as ``eval_results.json``.
            sample_image: an image (path or PIL) copied into the repo and shown in the card.
            training_data: the training data for the card (see
                :func:`~mmvq.hub.model_card.build_model_card`).
            license: the card's license identifier (e.g. ``"apache-2.0"``).
            push_to_hub_kwargs: passed to :meth:`push_to_hub`.

        Returns:
            The commit URL when ``push_to_hub``, else ``None``.
        """
        if config is not None:
            raise TypeError(
                "save_pretrained(config=...) is not supported: config.json always records the "
                "model's own config (model.config) and adapter configs."
            )
        card = card_kwargs(
            model_card_kwargs,
            metrics=metrics,
            sample_image=sample_image,
            training_data=training_data,
            license=license,
        )
        describe_model(self)  # type: ignore[arg-type]  # unsaveable (unregistered adapter): fail before writing
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._save_pretrained(directory)
        write_model_card(
            self,  # type: ignore[arg-type]
            directory,
            repo_id=repo_id,
            card_data=self._hub_mixin_info.model_card_data,
            **card,
        )
        if push_to_hub:
            return self.push_to_hub(repo_id or directory.name, **card, **push_to_hub_kwargs)
        return None

    def generate_model_card(  # type: ignore[override]
        self,
        *,
        metrics: MetricsInput = None,
        sample_image_name: str | None = None,
        training_data: TrainingData = None,
        repo_id: str | None = None,
        license: str | None = None,
    ) -> ModelCard:
        """The model card (see :func:`mmvq.hub.model_card.build_model_card`)."""
        return build_model_card(
            self,  # type: ignore[arg-type]
            metrics=metrics,
            sample_image_name=sample_image_name,
            training_data=training_data,
            repo_id=repo_id,
            card_data=self._hub_mixin_info.model_card_data,
            license=license,
        )

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        subfolder: str | None = None,
        torch_dtype: torch.dtype | str | None = None,
        dtype: torch.dtype | str | None = None,
        device_map: str | int | torch.device | dict[str, Any] | None = None,
        map_location: str | torch.device | None = None,
        strict: bool = True,
        **unknown: Any,
    ) -> Self:
        """Load a model saved by :meth:`save_pretrained` / :meth:`push_to_hub`.

        Args:
            pretrained_model_name_or_path: a local directory, or a Hub repo id (``org/name``).
            force_download, token, cache_dir, local_files_only, revision: as in
                :func:`huggingface_hub.snapshot_download` (only ``subfolder`` applies to a local
                directory).
            subfolder: the folder of the directory or repo the model was saved in.
            dtype: cast the floating-point weights to it: a ``torch.dtype``, its name
                (``"bfloat16"``, ``"float16"``...) or ``"auto"`` (the dtype of the saved
                weights); default float32. The codebook's statistics stay float32.
                ``torch_dtype`` is the older name of the same argument.
            device_map: the device to load onto: ``"cpu"``, ``"auto"`` (the first CUDA, MPS or
                XPU device, else the CPU), ``"cuda:1"``, a CUDA index, a ``torch.device`` or
                ``{"": device}`` (an mmvq model is not split over devices). ``map_location`` is
                the Hub mixin's name of the same argument. Default: the CPU.
            strict: every tensor of the model must be in the file and vice versa (default); with
                ``False``, missing tensors keep their initial values and extra ones are skipped
                (a warning lists them). Shapes must match either way.

        Returns:
            The model, in eval mode.

        Raises:
            TypeError: an argument ``from_pretrained`` does not take.
            PretrainedNotFoundError: missing directory / repo / revision / config / weights.
            PretrainedError: unreadable or mismatching files, unknown format version, or an
                adapter that is not installed (the message names the package to install);
                :class:`~mmvq.hub.errors.HubAccessError` when the Hub cannot be reached.
        """
        if unknown:
            raise TypeError(
                f"{cls.__name__}.from_pretrained got unexpected keyword argument(s) "
                f"{sorted(unknown)}; it accepts {list(FROM_PRETRAINED_ARGUMENTS)}"
            )
        device = resolve_device(device_map, map_location)
        cast = resolve_dtype(torch_dtype, dtype)
        strict = check_strict(strict)
        directory = resolve_model_dir(
            pretrained_model_name_or_path,
            revision=revision,
            cache_dir=cache_dir,
            token=token,
            force_download=force_download,
            local_files_only=local_files_only,
            subfolder=subfolder,
        )
        model = load_pretrained_dir(cls, directory, strict=strict)  # type: ignore[arg-type]
        if cast == "auto":
            cast = file_dtype(directory / WEIGHTS_NAME)
        model.to(device=device, dtype=cast)  # type: ignore[call-overload]
        model.eval()
        return model  # type: ignore[return-value]

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        **model_kwargs: Any,
    ) -> Self:
        """ModelHubMixin's hook; :meth:`from_pretrained` does the work."""
        return cls.from_pretrained(
            model_id,
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            **model_kwargs,
        )

    # -------------------------------------------------------------------- pushing
    def push_to_hub(  # type: ignore[override]
        self,
        repo_id: str,
        *,
        config: dict | None = None,
        commit_message: str = "Upload mmvq model",
        private: bool | None = None,
        token: str | None = None,
        branch: str | None = None,
        create_pr: bool | None = None,
        allow_patterns: list[str] | str | None = None,
        ignore_patterns: list[str] | str | None = None,
        delete_patterns: list[str] | str | None = None,
        model_card_kwargs: dict[str, Any] | None = None,
        metrics: MetricsInput = None,
        sample_image: SampleImage = None,
        training_data: TrainingData = None,
        license: str | None = None,
    ) -> str:
        """Create the repo if needed and upload the saved model, its card, the card's sample
        grid and ``eval_results.json`` (one commit).

        Args:
            repo_id: ``org/name`` (or ``name`` under the token's user).
            branch: the branch to commit to (created from ``main`` if missing); default ``main``.
            private: visibility of a repo created here (an existing repo keeps its own).
            token: the Hub token (default: the logged-in one / ``HF_TOKEN``).
            metrics, sample_image, training_data, license: for the model card (see
                :meth:`save_pretrained`).
            delete_patterns: remote files to delete in the same commit; default
                :data:`STALE_PATTERNS` (adapter files and sample grids of an earlier push that this
                push does not re-upload).
            Other arguments as in :meth:`huggingface_hub.HfApi.upload_folder`.

        Returns:
            The URL of the commit.

        Raises:
            HubAccessError: the Hub cannot be reached (network, ``HF_ENDPOINT``, offline mode) or
                refused the token; one line that says which and what to do.
        """
        if config is not None:
            raise TypeError(
                "push_to_hub(config=...) is not supported: the model's own config is pushed."
            )
        card = card_kwargs(
            model_card_kwargs,
            metrics=metrics,
            sample_image=sample_image,
            training_data=training_data,
            license=license,
        )

        def save(tmp: Path, repo_id: str) -> Path:
            saved = tmp / repo_id.split("/")[-1]
            self.save_pretrained(saved, repo_id=repo_id, **card)
            return saved

        return upload_saved(
            save,
            repo_id,
            token=token,
            private=private,
            branch=branch,
            commit_message=commit_message,
            create_pr=create_pr,
            allow_patterns=allow_patterns,
            ignore_patterns=ignore_patterns,
            delete_patterns=STALE_PATTERNS if delete_patterns is None else delete_patterns,
        )
