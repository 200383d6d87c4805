"""Windowed training statistics (mmvq/training/logs.py)."""

from __future__ import annotations

import pytest
import torch

from mmvq.training.logs import MetricWindow


def test_means_skip_nonfinite_values_and_the_window_resets():
    w = MetricWindow()
    w.add("loss", 1.0)
    w.add("loss", torch.tensor(3.0))
    w.add("loss", float("nan"))
    w.add("loss", torch.tensor(float("inf")))
    w.add_all({"a": torch.tensor(2.0), "b": 4.0}, prefix="x/")
    w.add("only_nan", float("nan"))
    assert w.reduce() == {"loss": 2.0, "x/a": 2.0, "x/b": 4.0}
    assert w.reduce() == {}


def test_balance_summary_reads_the_runs_gradient_shares(tmp_path):
    from mmvq.training.balance import BalancerConfig, build_balancer
    from mmvq.training.logs import append_record, balance_summary

    log = tmp_path / "train_log.jsonl"
    balancer = build_balancer(BalancerConfig(weights={"image": 2.0}), ["image", "text"])
    assert balance_summary(log, balancer) == {  # no log yet: weights only
        "balancer": "static",
        "balance_weight_per_modality": {"image": 2.0, "text": 1.0},
    }
    append_record(log, {"step": 5, "balance/grad_share/image": 0.2, "balance/grad_share/text": 0.8})
    append_record(log, {"step": 10, "eval": {"image_psnr": 20.0}})
    append_record(log, {"step": 15, "balance/grad_share/image": 0.6})
    summary = balance_summary(log, balancer)
    assert summary["balance_grad_share_per_modality"] == pytest.approx({"image": 0.4, "text": 0.8})
