"""The prior: a ``transformers`` causal LM (``LlamaForCausalLM``) over a tokenizer's id sequences.

:class:`PriorConfig` (a JSON round-tripping dataclass) sizes the LM; :class:`MultimodalPrior`
holds the LM and its :class:`~mmvq.prior.tokenizer.MultimodalTokenizer`, saves both, and
generates through HF ``generate()`` (:mod:`mmvq.prior.generation`).

Layout of a saved prior::

    prior_config.json        PriorConfig (+ format marker)
    prior_tokenizer.json     the tokenizer (lm_tokenizer/ too in LM-vocabulary mode)
    lm/config.json           LlamaConfig
    lm/model.safetensors     weights (safetensors only; loading never unpickles)
    lm/generation_config.json

The tokenizer model (the :class:`mmvq.MultimodalVQ` whose codes the prior models) is saved
separately; ``from_pretrained(dir, model=...)`` attaches it. On the Hub the prior is the
``prior/`` folder of the tokenizer model's repo (:mod:`mmvq.prior.hub`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mmvq.hub.safety import check_data_folder
from mmvq.prior.hub import PRIOR_SUBFOLDER, push_prior, resolve_prior_dir
from mmvq.prior.tokenizer import MultimodalTokenizer
from mmvq.prior.vocab import read_format_file
from mmvq.utils.checks import check_int, check_number, check_positive_int
from mmvq.utils.configs import check_known_fields

__all__ = ["LM_DIR", "PRIOR_CONFIG_FILE", "PRIOR_SUBFOLDER", "MultimodalPrior", "PriorConfig"]

PRIOR_CONFIG_FILE = "prior_config.json"
LM_DIR = "lm"
FORMAT = "mmvq-prior"
FORMAT_VERSION = 1


@dataclass
class PriorConfig:
    """Size of the prior's LM (a ``LlamaForCausalLM``). The defaults (0.85M parameters over the
    default recipe's codes) learn the shapes data in about 8 minutes on a 2-core CPU
    (``bench/bench_prior_quality.py``).

    Attributes:
        hidden_size: model width.
        num_hidden_layers: transformer layers.
        num_attention_heads: attention heads (must divide ``hidden_size``).
        intermediate_size: MLP width (``0``: ``4 * hidden_size``).
        max_position_embeddings: longest sequence (``0``: the tokenizer's longest sequence).
        attention_dropout: dropout on attention weights during training.
        initializer_range: std of the weight initialisation.
        tie_word_embeddings: share the input embedding and the output head.
    """

    hidden_size: int = 128
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    intermediate_size: int = 0
    max_position_embeddings: int = 0
    attention_dropout: float = 0.0
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    def __post_init__(self) -> None:
        owner = "PriorConfig"
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads"):
            check_positive_int(f"{owner}.{name}", getattr(self, name))
        for name in ("intermediate_size", "max_position_embeddings"):
            check_int(f"{owner}.{name}", getattr(self, name), minimum=0)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"PriorConfig.hidden_size={self.hidden_size} is not divisible by "
                f"num_attention_heads={self.num_attention_heads}; pick heads that divide it"
            )
        check_number(f"{owner}.attention_dropout", self.attention_dropout, low=0.0, high=1.0)
        if self.attention_dropout == 1.0:
            raise ValueError("PriorConfig.attention_dropout must be < 1, got 1.0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PriorConfig:
        check_known_fields(cls, data, "PriorConfig.from_dict")
        return cls(**dict(data))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json_string(cls, source: str) -> PriorConfig:
        return cls.from_dict(json.loads(source))

    def llama_config(self, tokenizer: MultimodalTokenizer) -> LlamaConfig:
        """The ``LlamaConfig`` of this size over ``tokenizer``'s vocabulary and special ids."""
        return LlamaConfig(
            vocab_size=tokenizer.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size or 4 * self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            max_position_embeddings=self.max_position_embeddings or tokenizer.sequence_length(),
            attention_dropout=float(self.attention_dropout),
            initializer_range=self.initializer_range,
            tie_word_embeddings=self.tie_word_embeddings,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )


class MultimodalPrior:
    """A causal LM over a :class:`MultimodalTokenizer`'s sequences.

    Args:
        lm: the ``LlamaForCausalLM`` (its vocabulary is the tokenizer's).
        tokenizer: the tokenizer (attach the tokenizer model to decode outputs).
        config: the LM's :class:`PriorConfig`.
    """

    def __init__(self, lm: LlamaForCausalLM, tokenizer: MultimodalTokenizer, config: PriorConfig):
        if lm.config.vocab_size < tokenizer.vocab_size:
            raise ValueError(
                f"the LM has {lm.config.vocab_size} ids but the tokenizer {tokenizer.vocab_size}; "
                "resize the LM's embeddings to tokenizer.vocab_size"
            )
        self.lm = lm
        self.tokenizer = tokenizer
        self.config = config

    @classmethod
    def build(
        cls, tokenizer: MultimodalTokenizer, config: PriorConfig | None = None
    ) -> MultimodalPrior:
        """A freshly initialised prior (seed the RNG first for reproducible weights)."""
        config = config or PriorConfig()
        return cls(LlamaForCausalLM(config.llama_config(tokenizer)), tokenizer, config)

    @property
    def device(self) -> torch.device:
        return next(self.lm.parameters()).device

    def to(self, device: str | torch.device) -> MultimodalPrior:
        self.lm.to(device)
        return self

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.lm.parameters())

    # ------------------------------------------------------------------ generation
    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """Sample sequences: :func:`mmvq.prior.generation.generate` with this prior."""
        from mmvq.prior.generation import generate

        return generate(self, *args, **kwargs)

    # ------------------------------------------------------------------ saving
    def save_pretrained(
        self,
        save_directory: str | os.PathLike,
        *,
        metrics: Any = None,
        sample_image: Any = None,
        repo_id: str | None = None,
    ) -> Path:
        """Write the prior (module docstring: layout); the LM with safetensors, and its model card
        (``README.md``: :func:`mmvq.prior.card.write_prior_card`, with ``metrics`` (a mapping or
        a ``metrics.json``), ``sample_image`` (a grid) and ``repo_id`` (the tokenizer model's
        repo, for the snippets)). The card's inputs are checked before anything is written."""
        from mmvq.hub.card_inputs import check_card_inputs
        from mmvq.prior.card import write_prior_card

        check_card_inputs(metrics, sample_image)
        path = Path(save_directory)
        path.mkdir(parents=True, exist_ok=True)
        data = {"format": FORMAT, "format_version": FORMAT_VERSION, "prior": self.config.to_dict()}
        (path / PRIOR_CONFIG_FILE).write_text(json.dumps(data, indent=2, sort_keys=True))
        self.tokenizer.save_pretrained(path)
        self.lm.save_pretrained(str(path / LM_DIR), safe_serialization=True)
        write_prior_card(self, path, metrics=metrics, sample_image=sample_image, repo_id=repo_id)
        return path

    def push_to_hub(
        self, repo_id: str, *, metrics: Any = None, sample_image: Any = None, **kwargs: Any
    ) -> str:
        """Upload the prior, its model card included (``metrics``, ``sample_image``: as
        :meth:`save_pretrained`), to the ``prior/`` folder of ``repo_id`` (the tokenizer model's
        repo); other keyword arguments as :func:`mmvq.prior.hub.push_prior`. Returns the commit
        URL."""
        card = {"metrics": metrics, "sample_image": sample_image, "repo_id": repo_id}
        return push_prior(self, repo_id, card=card, **kwargs)

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        *,
        model: Any = None,
        device: str | torch.device | None = None,
        **hub_kwargs: Any,
    ) -> MultimodalPrior:
        """Load a saved prior: safetensors weights, ``trust_remote_code=False``; a folder holding
        a code file or an ``auto_map`` is refused before anything in it is read
        (:class:`~mmvq.hub.safety.RemoteCodeError`).

        Args:
            directory: what :meth:`save_pretrained` wrote, a directory whose ``prior/`` folder
                holds it, or a Hub repo id (its ``prior/`` folder is downloaded).
            model: the tokenizer model (:class:`mmvq.MultimodalVQ`) to attach for outputs.
            device: where to put the LM.
            hub_kwargs: ``subfolder``, ``revision``, ``token``, ``cache_dir``,
                ``local_files_only`` (:func:`mmvq.prior.hub.resolve_prior_dir`).
        """
        path = resolve_prior_dir(directory, PRIOR_CONFIG_FILE, **hub_kwargs)
        if path.is_dir():
            check_data_folder(path)  # no code (.py, auto_map) from a prior's folder, ever
        data = read_format_file(
            path / PRIOR_CONFIG_FILE,
            FORMAT,
            FORMAT_VERSION,
            "not a saved mmvq prior (write one with MultimodalPrior.save_pretrained or "
            "mmvq.prior.train_prior)",
        )
        config = PriorConfig.from_dict(data["prior"])
        tokenizer = MultimodalTokenizer.from_pretrained(path, model=model)
        lm = LlamaForCausalLM.from_pretrained(
            str(path / LM_DIR),
            local_files_only=True,
            trust_remote_code=False,
            use_safetensors=True,
        )
        lm.eval()
        prior = cls(lm, tokenizer, config)
        return prior.to(device) if device is not None else prior
