"""TrainConfig (mmvq/training/config.py): nested-config forms, CLI parsing and validation."""

from __future__ import annotations

import pytest
from transformers import HfArgumentParser

from mmvq.training.align import AlignmentConfig
from mmvq.training.balance import BalancerConfig
from mmvq.training.config import TrainConfig


def test_nested_configs_accept_names_pairs_json_and_dicts():
    assert TrainConfig(balancer="gradnorm").balancer == BalancerConfig(name="gradnorm")
    cfg = TrainConfig(
        balancer='name=static,weights={"image": 2.0, "text": 1.0}',
        alignment="weight=0.1,temperature=0.5",
    )
    assert cfg.balancer == BalancerConfig(name="static", weights={"image": 2.0, "text": 1.0})
    assert cfg.alignment == AlignmentConfig(weight=0.1, temperature=0.5)
    assert TrainConfig(alignment="0.2").alignment.weight == 0.2
    assert (
        TrainConfig(balancer='{"name": "dwa", "dwa_temperature": 3.0}').balancer.dwa_temperature
        == 3.0
    )
    assert TrainConfig(balancer={"name": "uncertainty"}).balancer.name == "uncertainty"
    assert TrainConfig(balancer=None).balancer == BalancerConfig()


def test_dict_round_trip():
    cfg = TrainConfig(max_steps=7, balancer="dwa", alignment="0.3", resume_from_checkpoint="latest")
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown option"):
        TrainConfig.from_dict({"max_step": 3})


def test_hf_argument_parser_reads_flags_and_nested_groups():
    (cfg,) = HfArgumentParser(TrainConfig).parse_args_into_dataclasses(
        [
            "--max_steps",
            "5",
            "--balancer",
            "gradnorm",
            "--alignment",
            "weight=0.1",
            "--cpu",
            "--mixed_precision",
            "bf16",
        ]
    )
    assert cfg.max_steps == 5 and cfg.cpu and cfg.mixed_precision == "bf16"
    assert cfg.balancer.name == "gradnorm" and cfg.alignment.weight == 0.1


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"per_device_batch_size": 0}, "per_device_batch_size must be an int >= 1, got 0"),
        ({"gradient_accumulation_steps": 1.5}, "gradient_accumulation_steps must be an int"),
        ({"learning_rate": 0.0}, "learning_rate must be a finite number > 0"),
        ({"learning_rate": float("nan")}, "learning_rate must be a finite number"),
        ({"adam_beta2": 1.5}, "adam_beta2 must be a finite number >= 0.0 and <= 1.0"),
        ({"max_grad_norm": -1.0}, "max_grad_norm must be a finite number >= 0"),
        ({"mixed_precision": "fp8"}, "mixed_precision must be one of"),
        ({"lr_scheduler": "step"}, "lr_scheduler must be one of"),
        ({"gan_loss": "wasserstein"}, "gan_loss must be one of"),
        ({"ema_decay": 1.0}, "ema_decay=1.0 would freeze"),
        ({"log_every": 0}, "log_every must be an int >= 1"),
        ({"max_eval_samples": 0}, "max_eval_samples must be None or an int >= 1"),
        ({"output_dir": " "}, "output_dir must be a non-empty path"),
        ({"report_to": ""}, "report_to must be a tracker name"),
        ({"cpu": "yes"}, "cpu must be True or False"),
        ({"balancer": "fancy"}, "not a balancer"),
        ({"balancer": "nme=static"}, r"unknown option\(s\) \['nme'\]"),
        ({"balancer": "{not json"}, "is not valid JSON"),
        ({"balancer": 3}, "must be a BalancerConfig, a dict, or a string"),
        ({"alignment": "weight=-1"}, "weight must be >= 0"),
        ({"resume_from_checkpoint": 5}, "resume_from_checkpoint must be None, 'latest'"),
    ],
)
def test_bad_options_name_the_field_and_the_value(options, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TrainConfig(**options)
