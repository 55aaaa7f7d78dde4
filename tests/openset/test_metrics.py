"""Open-set metrics on hand-made cases."""

from __future__ import annotations

import numpy as np
import pytest

from inspection.openset.metrics import openset_report, oscr, oscr_curve


def test_perfect_separation_and_classification() -> None:
    unk = np.array([False, False, True, True])
    correct = np.array([True, True, False, False])
    score = np.array([0.1, 0.2, 0.8, 0.9])
    rep = openset_report(unk, correct, score, threshold=0.5)
    assert rep["closed_set_accuracy"] == 1.0
    assert rep["unknown_auroc"] == 1.0
    assert rep["oscr"] == pytest.approx(1.0)
    assert rep["unknown_accuracy"] == 1.0


def test_oscr_is_bounded_by_accuracy_and_drops_with_misranking() -> None:
    unk = np.array([False, False, False, False, True, True])
    correct = np.array([True, True, True, False, False, False])
    good = oscr(unk, correct, np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9]))
    bad = oscr(unk, correct, np.array([0.9, 0.8, 0.3, 0.4, 0.1, 0.2]))
    assert good == pytest.approx(0.75)  # closed-set accuracy 3/4, perfectly ranked
    assert bad < good
    fpr, ccr = oscr_curve(unk, correct, np.array([0.1, 0.2, 0.3, 0.4, 0.8, 0.9]))
    assert fpr[0] == 0 and ccr[0] == 0 and fpr[-1] == 1 and ccr[-1] == pytest.approx(0.75)


def test_unknown_accuracy_counts_both_sides() -> None:
    unk = np.array([False, False, True, True])
    rep = openset_report(unk, np.ones(4, bool), np.array([0.1, 0.9, 0.2, 0.8]), threshold=0.5)
    assert rep["unknown_accuracy"] == 0.5
    assert rep["known_accept_rate"] == 0.5
    assert rep["unknown_reject_rate"] == 0.5
