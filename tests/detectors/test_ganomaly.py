"""GANomaly (anomalib reference) self-check: tiny fit, score and reconstruction map."""

from __future__ import annotations

from tests.detectors._tiny import check_output, fit_and_predict


def test_tiny_fit() -> None:
    _, out, labels = fit_and_predict("ganomaly")
    check_output(out, labels)
