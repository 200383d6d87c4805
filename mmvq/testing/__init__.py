"""The adapter contract kit: :func:`check_adapter` runs every rule of :mod:`mmvq.adapter`.

Any adapter, built-in or third party, can prove it honours the contract the core relies on
(shapes and masks, a gradient through encode -> decode, persistence through safetensors,
deterministic evaluation, clear errors on bad input) with one call in its own test suite::

    # tests/test_my_adapter.py of a plugin distribution
    from mmvq.testing import check_adapter
    from my_plugin import MyAdapter, MyAdapterConfig

    def test_my_adapter_honours_the_mmvq_contract():
        report = check_adapter(MyAdapter, [example_a, example_b], config=MyAdapterConfig(width=8))
        assert "bad_inputs" in report.names  # the report lists the checks that ran

``examples`` are raw examples as users hold them (what ``preprocess`` accepts); give at least two,
ideally of different sizes where the modality has sizes, and keep the config small so the check
runs in seconds on a CPU. Declare the inputs ``preprocess`` must refuse in
:meth:`~mmvq.adapter.ModalityAdapter.bad_inputs`; each is checked to raise its declared error with
a message containing its ``match``. The first failing check raises :class:`AssertionError` naming
the check, what was expected, what was found, and the checks that passed before it; errors
raised by the adapter itself are chained as the cause.

Checks, in order (the names appear in :attr:`CheckReport.names`): ``config``, ``preprocess``,
``collate``, ``num_tokens``, ``encode``, ``decode``, ``reconstruction_loss``, ``postprocess``,
``metrics``, ``deterministic_eval`` (module ``checks``), ``gradient``, ``last_layer``, ``gan``
(``gradients``), ``state_dict``, ``extra_files`` (``persistence``), ``bad_inputs``
(``bad_inputs``); ``runner`` holds the report and the machinery. ``last_layer`` and ``gan`` are
skipped (and listed in :attr:`CheckReport.skipped`) when the adapter returns ``None`` for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from mmvq.adapter import AdapterConfig, ModalityAdapter
from mmvq.testing.bad_inputs import run_bad_input_check
from mmvq.testing.checks import Probe, run_model_checks
from mmvq.testing.gradients import run_gradient_checks
from mmvq.testing.persistence import run_persistence_checks
from mmvq.testing.runner import CheckReport, CheckResult, Runner, instantiate

__all__ = ["CheckReport", "CheckResult", "check_adapter"]


def check_adapter(
    adapter_or_class: ModalityAdapter | type[ModalityAdapter],
    examples: Sequence[Any],
    *,
    config: AdapterConfig | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    seed: int = 0,
) -> CheckReport:
    """Check that an adapter honours the :class:`~mmvq.adapter.ModalityAdapter` contract.

    Args:
        adapter_or_class: an adapter instance, or a class (built with ``config`` or its
            default config).
        examples: at least two raw examples that ``preprocess`` accepts.
        config: the config to build ``adapter_or_class`` with when it is a class.
        rtol, atol: tolerances for outputs that must be equal (eval determinism, reload).
        seed: seeds the RNG inside the check (the caller's RNG state is restored after).

    Returns:
        A :class:`CheckReport` listing the checks that passed and those skipped.

    Raises:
        AssertionError: the first failing check, with a message naming it.
        ValueError, TypeError: the arguments of ``check_adapter`` itself are unusable.
    """
    if isinstance(examples, (str, bytes)) or not isinstance(examples, Sequence):
        raise TypeError(
            f"check_adapter: examples must be a list of raw examples, got {type(examples).__name__}"
        )
    if len(examples) < 2:
        raise ValueError(
            f"check_adapter: give at least 2 examples (got {len(examples)}) so that batching is "
            "checked; examples of different sizes exercise padding best."
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter = instantiate(adapter_or_class, config)
        runner = Runner(adapter)
        probe = Probe(adapter, list(examples), rtol=rtol, atol=atol, seed=seed)
        was_training = adapter.training
        try:
            run_model_checks(runner, probe)
            run_gradient_checks(runner, probe)
            run_persistence_checks(runner, probe)
            run_bad_input_check(runner, adapter)
        finally:
            adapter.train(was_training)
    return runner.report
