"""Windowed training statistics (mmvq/training/logs.py)."""

from __future__ import annotations

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
