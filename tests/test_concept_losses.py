"""mmvq.concept.losses: joint assignment, contrastive positives, slot decorrelation, the terms."""

from __future__ import annotations

import torch

from mmvq.concept import ConceptConfig
from mmvq.concept.losses import concept_losses, joint_assignment, row_groups, slot_cka
from mmvq.quantize import CodebookConfig, SharedCodebook


def _codebook(k: int = 8, d: int = 4) -> SharedCodebook:
    torch.manual_seed(0)
    cb = SharedCodebook(CodebookConfig(num_codes=k, code_dim=d, kmeans_init=False), ["a", "b"])
    return cb.eval()


def test_joint_code_is_nearest_to_both_partners():
    cb = _codebook()
    codes = cb.codebook  # [K, D]
    # a sits on code 1, b on code 2, the midpoint of codes 1 and 2 is nearest to... both sums
    a = codes[1].view(1, 1, -1)
    b = codes[2].view(1, 1, -1)
    present = {"a": torch.tensor([True]), "b": torch.tensor([True])}
    joint = joint_assignment({"a": a, "b": b}, present, cb).codes
    d = cb.distances(a) + cb.distances(b)
    assert joint["a"].item() == joint["b"].item() == int(d.argmin())
    # an absent partner does not pull: the code is a's own nearest
    alone = joint_assignment(
        {"a": a, "b": b}, {"a": present["a"], "b": torch.tensor([False])}, cb
    ).codes
    assert alone["a"].item() == 1
    # with an anchor, the anchor's own nearest code wins
    anchored = joint_assignment({"a": a, "b": b}, present, cb, anchor="b").codes
    assert anchored["a"].item() == anchored["b"].item() == 2


def test_joint_centroid_is_where_the_joint_code_would_sit():
    """A code restarted onto a row's joint centroid is that row's joint choice, for plain and
    cosine codebooks, with an absent partner and with an anchor."""
    for cosine in (False, True):
        torch.manual_seed(1)
        cb = SharedCodebook(
            CodebookConfig(num_codes=16, code_dim=4, kmeans_init=False, l2_normalize=cosine),
            ["a", "b", "c"],
        ).eval()
        concepts = {m: torch.randn(6, 3, 4) for m in "abc"}
        present = {m: torch.ones(6, dtype=torch.bool) for m in "abc"}
        present["c"][:2] = False
        for anchor in ("", "b"):
            centre = joint_assignment(concepts, present, cb, anchor).centroids
            assert centre["a"] is centre["b"] is centre["c"]
            assert centre["a"].shape == (6, 3, cb.lookup_dim)
            # put the centroid of row 0 / slot 0 and of row 3 / slot 2 into the codebook:
            # joint assignment then picks exactly those codes for those (row, slot)s
            book = cb.code_vectors.data
            book[5], book[9] = centre["a"][0, 0], centre["a"][3, 2]
            joint = joint_assignment(concepts, present, cb, anchor).codes["a"]
            assert (joint[0, 0].item(), joint[3, 2].item()) == (5, 9)
        if cosine:
            assert torch.allclose(centre["a"].norm(dim=-1), torch.ones(6, 3))


def test_row_groups_mark_identical_inputs():
    sub = {
        "ids": torch.tensor([[1, 2], [3, 4], [1, 2]]),
        "present": torch.ones(3, dtype=torch.bool),
    }
    groups = row_groups(sub, torch.tensor([True, True, False]))
    assert groups[0] != groups[1] and groups[2] == -1
    both = row_groups(sub, torch.ones(3, dtype=torch.bool))
    assert both[0] == both[2]


def test_slot_cka_sees_redundant_slots():
    torch.manual_seed(0)
    x = torch.randn(64, 1, 8)
    assert slot_cka(torch.cat([x, 2 * x, -x], dim=1)).item() > 0.99
    assert slot_cka(torch.randn(64, 3, 8)).item() < 0.3


def test_terms_are_weighted_finite_and_reach_both_modalities():
    cb = _codebook(k=16, d=4)
    torch.manual_seed(1)
    ca = torch.randn(6, 2, 4, requires_grad=True)
    cbz = torch.randn(6, 2, 4, requires_grad=True)
    present = {"a": torch.ones(6, dtype=torch.bool), "b": torch.ones(6, dtype=torch.bool)}
    joint = joint_assignment({"a": ca, "b": cbz}, present, cb).codes
    groups = {"a": torch.arange(6), "b": torch.arange(6)}
    config = ConceptConfig(match_weight=2.0, contrastive_weight=1.0, decorrelation_weight=0.5)
    losses, log = concept_losses({"a": ca, "b": cbz}, joint, present, groups, cb, config)
    assert set(losses) == {"contrastive", "match", "decorrelation"}
    assert torch.allclose(losses["match"], 2.0 * log["concept/match"])
    sum(losses.values()).backward()
    assert ca.grad.abs().sum() > 0 and cbz.grad.abs().sum() > 0
    off = ConceptConfig(match_weight=0.0, contrastive_weight=0.0, decorrelation_weight=0.0)
    assert concept_losses({"a": ca, "b": cbz}, joint, present, groups, cb, off)[0] == {}


def test_duplicate_rows_are_positives_not_negatives():
    cb = _codebook(k=16, d=4)
    v = torch.randn(1, 2, 4)
    w = torch.randn(1, 2, 4)
    # rows 0 and 1 are the same item (same "a" input), with identical concepts in both modalities
    ca = torch.cat([v, v, w]).requires_grad_(True)
    cbz = torch.cat([v, v, w]).requires_grad_(True)
    present = {m: torch.ones(3, dtype=torch.bool) for m in ("a", "b")}
    config = ConceptConfig(match_weight=0.0, decorrelation_weight=0.0)
    same = {"a": torch.tensor([0, 0, 1]), "b": torch.tensor([0, 1, 2])}
    distinct = {"a": torch.tensor([0, 1, 2]), "b": torch.tensor([0, 1, 2])}
    joint = joint_assignment({"a": ca, "b": cbz}, present, cb).codes
    with_dups = concept_losses({"a": ca, "b": cbz}, joint, present, same, cb, config)[0]
    without = concept_losses({"a": ca, "b": cbz}, joint, present, distinct, cb, config)[0]
    # counted as negatives, the identical rows could never be told apart: a higher loss
    assert with_dups["contrastive"] < without["contrastive"]
