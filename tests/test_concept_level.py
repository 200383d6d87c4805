"""The concept level inside a model: a plugin adapter gets it for free, paired samples learn to
agree on concept codes within a few steps, and both levels flow through encode/decode."""

from __future__ import annotations

import pytest
import torch
from toy_adapters import SeqAdapter, VecAdapter

from mmvq import MultimodalVQ
from mmvq.concept import MultimodalCodes
from mmvq.concept.retrieval import retrieval_at_1

CLASSES = 4


def _model(concept: dict) -> MultimodalVQ:
    torch.manual_seed(0)
    return MultimodalVQ(
        {"vec": VecAdapter(code_dim=16), "seq": SeqAdapter(code_dim=16)},
        {
            "codebook": {"num_codes": 16, "code_dim": 16},
            "decoder": {"dim": 32, "depth": 1, "heads": 2},
            "concept": {
                "num_codes": 16,
                "dim": 32,
                "depth": 1,
                "heads": 2,
                "codebook": {"restart_every": 10, "restart_until": 50},
                **concept,
            },
        },
    )


def _paired(model: MultimodalVQ, n: int, gen: torch.Generator) -> tuple[dict, torch.Tensor]:
    """``n`` rows of class c: a noisy prototype vector and the sequence [c+1, c+1, c+1]."""
    protos = torch.randn(CLASSES, 12, generator=torch.Generator().manual_seed(7))
    labels = torch.randint(CLASSES, (n,), generator=gen)
    vec, seq = model.adapters["vec"], model.adapters["seq"]
    vecs = [protos[c] + 0.1 * torch.randn(12, generator=gen) for c in labels.tolist()]
    seqs = [[c + 1] * 3 for c in labels.tolist()]
    batch = {
        "vec": vec.collate([vec.preprocess(v) for v in vecs]),
        "seq": seq.collate([seq.preprocess(s) for s in seqs]),
    }
    return batch, labels


def _train(model: MultimodalVQ, steps: int) -> None:
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.AdamW(model.parameter_groups(3e-3))
    model.train()
    for _ in range(steps):
        batch, _ = _paired(model, 32, gen)
        out = model(batch)
        opt.zero_grad()
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()


def _scores(model: MultimodalVQ) -> tuple[float, float]:
    batch, labels = _paired(model, 64, torch.Generator().manual_seed(99))
    codes = model.eval().encode(batch).concept
    agreement = (codes["vec"] == codes["seq"]).float().mean().item()
    same_class = labels[:, None] == labels[None, :]
    return agreement, retrieval_at_1(codes["vec"], codes["seq"], same_class)


def test_plugin_adapters_get_a_concept_level_without_code_of_their_own():
    model = _model({"num_concepts": 3, "decorrelation_weight": 1.0})
    batch, _ = _paired(model, 5, torch.Generator().manual_seed(0))
    out = model(batch)
    assert {m: tuple(c.shape) for m, c in out.concept_codes.items()} == {
        "vec": (5, 3),
        "seq": (5, 3),
    }
    assert {"commit", "contrastive", "match", "decorrelation"} <= set(out.concept.loss)
    codes = model.eval().encode(batch)
    assert set(codes.concept) == {"vec", "seq"} and codes.detail["seq"].shape == (5, 5)
    # decode from concept codes alone, from one modality's codes into the other, from both levels
    alone = model.decode(MultimodalCodes(concept={"seq": codes.concept["seq"]}), targets=["vec"])
    assert alone["vec"].shape == (5, 12)
    both = model.decode(codes.select(["seq"]), targets=["vec"])
    assert not torch.equal(both["vec"], alone["vec"])  # the detail codes are used too
    assert [(s.modality, s.level, s.length) for s in model.code_layout()] == [
        ("vec", "concept", 3),
        ("vec", "detail", 3),
        ("seq", "concept", 3),
        ("seq", "detail", 5),
    ]


def test_paired_samples_learn_to_agree_on_concept_codes():
    model = _model({"num_concepts": 2})
    _train(model, 100)  # the default detail dropout (0.25) reached 0.77 at 70 steps, 0.86 at 100
    agreement, r1 = _scores(model)
    # chance: independent codes agree on 1/16 of the slots, retrieval hits 1/4 of the time
    assert agreement > 0.8, agreement
    assert r1 > 0.9, r1


def test_by_default_the_slots_of_a_sample_do_not_all_collapse_onto_one_code():
    """Without slot decorrelation every slot learns the same summary (each row's two slots hold
    one code); the default (decorrelation on) keeps them apart without costing retrieval."""

    def slots_equal(model: MultimodalVQ) -> float:
        batch, _ = _paired(model, 64, torch.Generator().manual_seed(99))
        codes = model.eval().encode(batch).concept["vec"]
        return (codes[:, 0] == codes[:, 1]).float().mean().item()

    collapsed = _model({"num_concepts": 2, "decorrelation_weight": 0.0})
    _train(collapsed, 70)
    assert slots_equal(collapsed) == 1.0
    default = _model({"num_concepts": 2})
    _train(default, 70)
    assert slots_equal(default) < 0.9
    assert _scores(default)[1] > 0.9


def test_without_the_alignment_terms_the_modalities_do_not_agree():
    model = _model(
        {
            "num_concepts": 2,
            "contrastive_weight": 0.0,
            "match_weight": 0.0,
            "joint_assignment": False,
        }
    )
    _train(model, 70)
    agreement, _ = _scores(model)
    assert agreement < 0.5, agreement


def test_dead_concept_codes_restart_onto_the_joint_centroid_of_paired_rows():
    """A restarted concept code sits where joint assignment puts a pair (the normalised mean of
    the partners' concept tokens), not on one modality's token."""
    from mmvq.concept.losses import joint_assignment

    model = _model(
        {
            "num_concepts": 2,
            "codebook": {"restart_every": 1, "restart_until": 0, "dead_code_threshold": 1e9},
        }
    ).train()
    seen = {}

    def capture(module, args, kwargs):
        seen["z"], seen["kw"] = args[0], kwargs

    handle = model.concept.codebook.register_forward_pre_hook(capture, with_kwargs=True)
    batch, _ = _paired(model, 8, torch.Generator().manual_seed(3))
    model(batch, modality_dropout=0.0)
    handle.remove()
    cb = model.concept.codebook
    joint = joint_assignment(seen["z"], seen["kw"]["present"], cb)
    centre = joint.centroids["vec"].reshape(-1, 16)
    assert torch.allclose(seen["kw"]["restart_from"]["seq"].reshape(-1, 16), centre)
    own = torch.cat([cb.lookup_space(seen["z"][m].detach()).reshape(-1, 16) for m in seen["z"]])
    # every code was dead: each now holds one of the 16 (row, slot) centroids, none a token
    book = cb.codebook
    to_centre = torch.cdist(book, centre).min(dim=1).values
    to_token = torch.cdist(book, own).min(dim=1).values
    assert (to_centre < 1e-5).all() and (to_token > 1e-3).all()


def test_summaries_ignore_padding_and_absent_rows():
    model = _model({"num_concepts": 2}).eval()
    batch, _ = _paired(model, 3, torch.Generator().manual_seed(0))
    ids = batch["seq"]["ids"].clone()
    ids[:, 4] = 0  # position 4 is padding in every row
    batch["seq"]["ids"], batch["seq"]["mask"] = ids, ids > 0
    first = model.encode(batch).concept["seq"]
    tokens = model.adapters["seq"].encode(batch["seq"])
    z = tokens.z.clone()
    z[:, 4] = 100.0  # whatever a padding token holds
    summary = model.concept.summariser("seq", tokens.z, tokens.mask)
    assert torch.allclose(summary, model.concept.summariser("seq", z, tokens.mask), atol=1e-5)
    batch["seq"]["present"] = torch.tensor([True, False, True])
    codes = model.encode(batch).concept["seq"]
    assert codes[1].tolist() == [-1, -1] and torch.equal(codes[[0, 2]], first[[0, 2]])


def test_similarity_and_parameter_groups():
    model = _model({"num_concepts": 2, "lr_scale": 0.5})
    codes = MultimodalCodes(concept={"vec": torch.tensor([[1, 2]]), "seq": torch.tensor([[1, 3]])})
    assert model.similarity(codes.select(["vec"]), codes.select(["seq"])).item() == 0.5
    with pytest.raises(ValueError, match="one modality"):
        model.similarity(codes, codes.select(["seq"]))
    groups = model.parameter_groups(1e-3)
    assert [g["lr"] for g in groups] == [1e-3, 5e-4]
    summariser = {id(p) for p in model.concept.summariser.parameters()}
    assert {id(p) for p in groups[1]["params"]} == summariser
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_a_model_without_concepts_keeps_the_detail_only_layout():
    model = _model({"num_concepts": 0})
    assert model.concept is None and model.num_concepts == 0
    batch, _ = _paired(model, 2, torch.Generator().manual_seed(0))
    codes = model.eval().encode(batch)
    assert not codes.concept
    assert model.decode(dict(codes.detail), targets=["vec"])["vec"].shape == (2, 12)
    with pytest.raises(ValueError, match="no concept level"):
        model.decode(MultimodalCodes(concept={"vec": torch.zeros(2, 2, dtype=torch.long)}))
    with pytest.raises(ValueError, match="no concept level"):
        model.similarity(torch.zeros(1, 2), torch.zeros(1, 2))
