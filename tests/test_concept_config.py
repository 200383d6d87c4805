"""mmvq.concept.config: ConceptConfig validation and the concept codebook's options."""

from __future__ import annotations

import pytest

from mmvq.concept import ConceptConfig
from mmvq.concept.config import CONCEPT_CODEBOOK_DEFAULTS


def test_defaults_are_on_and_round_trip():
    config = ConceptConfig()
    assert config.enabled and config.num_concepts > 0
    assert ConceptConfig.from_dict(config.to_dict()) == config
    assert not ConceptConfig(num_concepts=0).enabled


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("num_concepts", -1, "num_concepts"),
        ("num_codes", 0, "num_codes"),
        ("heads", 3, "not divisible by heads"),
        ("detail_dropout", 1.0, "detail_dropout"),
        ("match_weight", -0.1, "match_weight"),
        ("contrastive_temperature", 0.0, "contrastive_temperature"),
        ("lr_scale", 0, "lr_scale"),
        ("joint_assignment", "yes", "joint_assignment"),
    ],
)
def test_bad_values_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        ConceptConfig(**{field: value})


def test_codebook_overrides_are_checked():
    with pytest.raises(ValueError, match="unknown override"):
        ConceptConfig(codebook={"no_such_option": 1})
    with pytest.raises(ValueError, match="ConceptConfig.num_codes"):
        ConceptConfig(codebook={"num_codes": 8})
    with pytest.raises(TypeError, match="anchor"):
        ConceptConfig(anchor=3)


def test_codebook_config_layers_defaults_and_overrides():
    cb = ConceptConfig(num_codes=32, codebook={"beta": 0.5}).codebook_config(code_dim=16)
    assert (cb.num_codes, cb.code_dim, cb.beta) == (32, 16, 0.5)
    assert cb.l2_normalize is CONCEPT_CODEBOOK_DEFAULTS["l2_normalize"]
    assert cb.kmeans_init is CONCEPT_CODEBOOK_DEFAULTS["kmeans_init"]
