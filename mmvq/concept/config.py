"""`ConceptConfig`: the options of the concept level (:mod:`mmvq.concept`), validated on
construction."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mmvq.quantize import CodebookConfig
from mmvq.utils.checks import check_bool, check_int, check_number, check_positive_int
from mmvq.utils.configs import check_known_fields

__all__ = ["CONCEPT_CODEBOOK_DEFAULTS", "ConceptConfig"]

CONCEPT_CODEBOOK_DEFAULTS: dict[str, Any] = {
    # cosine codes: the contrastive and matching terms compare directions, and so does the lookup
    "l2_normalize": True,
    # concept tokens start out nearly identical for every sample (the learned queries dominate):
    # a k-means on the first batch would put every code on that one point
    "kmeans_init": False,
    # codes the summaries have not reached yet move onto recent summaries soon, but only early.
    # They restart onto the *joint* centroid of a pair's concept tokens (where joint assignment
    # puts the pair: mmvq.concept.losses.joint_assignment), not onto one modality's token: such
    # a code would win that modality's own lookup at evaluation without being the pair's joint
    # choice in training (on the digits bench, own-token restarts for all 600 steps left
    # evaluation agreement at 0.0; stopping them at step 100 gave 0.996). Restarts split the
    # pairs' clusters and cost agreement while they run (shapes recipe, joint restarts for all
    # 800 steps: agreement 0.86 against 0.94 when they stop at step 100), so they stop early;
    # a recipe whose summaries spread late (three modalities) restarts longer, and the image +
    # text recipe all run long (stopped at step 100, its concept codebook shrank on some seeds
    # until attribute combinations shared codes: retrieval missed on three seeds of six).
    "restart_every": 25,
    "restart_until": 100,
    # both partners are pulled onto their one joint code
    "beta": 1.0,
}
"""Options of the concept codebook that differ from :class:`~mmvq.quantize.CodebookConfig`'s
defaults (``ConceptConfig.codebook`` overrides them)."""


@dataclass
class ConceptConfig:
    """Options of the concept level.

    Attributes:
        num_concepts: ``S``, concept codes per sample and modality; ``0`` turns the level off
            (the model then has detail codes only, as before the concept level existed).
        num_codes: ``Kc``, the size of the concept codebook shared by every modality.
        dim: width of the concept summariser.
        depth: summariser blocks (cross-attention to the modality's tokens, self-attention among
            the concepts, MLP).
        heads: attention heads of the summariser; must divide ``dim``.
        detail_dropout: in training, the probability that a visible modality's detail codes are
            hidden from the fusion decoder for a row, so that it learns to reconstruct (and
            translate) from concept codes alone. Without it the decoder leans on the detail
            codes and translation falls; at 0.5 the image lost about 0.5-1 dB of PSNR to 0.25 and
            translated worse on two seeds of the shapes recipe (image -> text exact match 0.91
            and 0.35 against 0.96 and 0.77), so 0.25 is the default.
        contrastive_weight: weight of the contrastive term between paired samples' concept
            tokens (rows with identical inputs in some modality count as positives).
        contrastive_temperature: its temperature (cosine similarities).
        match_weight: weight of the code-matching term: each modality's concept tokens are
            classified, over the concept codebook, into the code the pair shares.
        match_temperature: its temperature, in units of each token's spread of distances.
        decorrelation_weight: weight of the term that keeps the ``S`` concepts of a sample from
            carrying the same information (linear CKA between concept slots over the batch).
            Without it the slots learn one summary: on the shapes data every slot of every
            sample held the same code, 72 distinct codes for 95 attribute combinations, so
            retrieval by codes could not tell colours apart (R@1 0.77); with it each combination
            got its own code tuple (R@1 0.97) at a small cost in agreement (0.98 -> 0.93).
        joint_assignment: in training, quantise paired samples' concept tokens to the code
            nearest to all of them (or to the ``anchor``'s), so that partners commit to one code.
        anchor: a modality whose own nearest codes are the joint codes of the rows that hold it
            (``""``: the code nearest to every present modality).
        lr_scale: the summariser's learning rate relative to the model's (attention over
            summaries is less stable than the convolutional adapters at the same rate).
        codebook: overrides of the concept codebook's :class:`~mmvq.quantize.CodebookConfig`
            (on top of :data:`CONCEPT_CODEBOOK_DEFAULTS`; ``num_codes`` and ``code_dim`` are set
            from this config and the model).
    """

    num_concepts: int = 4
    num_codes: int = 256
    dim: int = 128
    depth: int = 2
    heads: int = 4
    detail_dropout: float = 0.25
    contrastive_weight: float = 1.0
    contrastive_temperature: float = 0.1
    match_weight: float = 0.5
    match_temperature: float = 0.5
    decorrelation_weight: float = 1.0
    joint_assignment: bool = True
    anchor: str = ""
    lr_scale: float = 0.1
    codebook: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = "ConceptConfig."
        check_int(name + "num_concepts", self.num_concepts, minimum=0, fix="; 0 turns it off.")
        check_positive_int(name + "num_codes", self.num_codes, fix="; e.g. 256.")
        check_positive_int(name + "dim", self.dim, fix="; e.g. 128.")
        check_positive_int(name + "depth", self.depth, fix="; e.g. 2.")
        check_positive_int(name + "heads", self.heads, fix="; e.g. 4.")
        if self.dim % self.heads:
            raise ValueError(
                f"ConceptConfig.dim={self.dim} is not divisible by heads={self.heads}; choose "
                "heads that divide dim (e.g. dim=128, heads=4)."
            )
        check_number(name + "detail_dropout", self.detail_dropout, low=0.0, high=0.99)
        for weight in ("contrastive_weight", "match_weight", "decorrelation_weight"):
            check_number(name + weight, getattr(self, weight), low=0.0, fix="; 0 turns it off.")
        for temp in ("contrastive_temperature", "match_temperature"):
            check_number(name + temp, getattr(self, temp), low=0.0, low_open=True)
        check_number(name + "lr_scale", self.lr_scale, low=0.0, low_open=True)
        check_bool(name + "joint_assignment", self.joint_assignment)
        if not isinstance(self.anchor, str):
            raise TypeError(
                f"ConceptConfig.anchor must be a modality name or '', got {self.anchor!r}"
            )
        if not isinstance(self.codebook, Mapping):
            raise TypeError(
                "ConceptConfig.codebook must be a dict of CodebookConfig overrides, got "
                f"{type(self.codebook).__name__}"
            )
        check_known_fields(CodebookConfig, self.codebook, "ConceptConfig.codebook", "override")
        fixed = sorted({"num_codes", "code_dim"} & set(self.codebook))
        if fixed:
            raise ValueError(
                f"ConceptConfig.codebook sets {fixed}: the concept codebook's size is "
                "ConceptConfig.num_codes and its dimension the model's code_dim."
            )
        self.codebook = dict(self.codebook)

    @property
    def enabled(self) -> bool:
        """Whether the model has a concept level (``num_concepts > 0``)."""
        return self.num_concepts > 0

    def codebook_config(self, code_dim: int) -> CodebookConfig:
        """The concept codebook's options."""
        return CodebookConfig(
            num_codes=self.num_codes,
            code_dim=code_dim,
            **{**CONCEPT_CODEBOOK_DEFAULTS, **self.codebook},
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConceptConfig:
        check_known_fields(cls, data, "ConceptConfig.from_dict")
        return cls(**dict(data))
