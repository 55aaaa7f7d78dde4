"""Open-set evaluation metrics: closed-set accuracy, unknown AUROC, OSCR, unknown accuracy.

Inputs are per test item: ``is_unknown_true`` (N,) bool (its type was not trained),
``correct`` (N,) bool (predicted known label equals the truth; meaningless for unknowns),
``score`` (N,) float unknown score (higher = more unknown) and the deployed ``threshold``.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def unknown_auroc(is_unknown_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC of the unknown-vs-known score (unknown = positive)."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(is_unknown_true, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, np.asarray(score, dtype=np.float64)))


def oscr_curve(
    is_unknown_true: np.ndarray, correct: np.ndarray, score: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, CCR) points of the open-set classification rate curve (Dhamija et al., NeurIPS 2018).

    For every threshold t on the unknown score (accept when score <= t):
    CCR(t) = fraction of known items that are accepted *and* correctly classified;
    FPR(t) = fraction of unknown items that are accepted. Runs from (0, 0) to (1, accuracy).
    """
    unk = np.asarray(is_unknown_true, dtype=bool)
    ok = np.asarray(correct, dtype=bool) & ~unk
    s = np.asarray(score, dtype=np.float64)
    n_known, n_unknown = int((~unk).sum()), int(unk.sum())
    order = np.argsort(s, kind="stable")
    s_sorted = s[order]
    ccr = np.cumsum(ok[order]) / max(n_known, 1)
    fpr = np.cumsum(unk[order]) / max(n_unknown, 1)
    last = np.r_[s_sorted[1:] != s_sorted[:-1], True]  # one point per distinct threshold
    return np.r_[0.0, fpr[last]], np.r_[0.0, ccr[last]]


def oscr(is_unknown_true: np.ndarray, correct: np.ndarray, score: np.ndarray) -> float:
    """Area under the OSCR curve (1 = every known correct and accepted before any unknown)."""
    fpr, ccr = oscr_curve(is_unknown_true, correct, score)
    return float(np.trapezoid(ccr, fpr))


def openset_report(
    is_unknown_true: np.ndarray, correct: np.ndarray, score: np.ndarray, threshold: float
) -> dict[str, Any]:
    """All four protocol numbers plus the two rates behind the unknown accuracy.

    ``unknown_accuracy``: accuracy of the unknown-vs-known decision (score > threshold) over all
    test items; ``known_accept_rate`` / ``unknown_reject_rate`` are its per-side rates.
    """
    unk = np.asarray(is_unknown_true, dtype=bool)
    flagged = np.asarray(score, dtype=np.float64) > threshold
    known_correct = np.asarray(correct, dtype=bool)[~unk]
    return {
        "closed_set_accuracy": float(known_correct.mean()) if known_correct.size else float("nan"),
        "unknown_auroc": unknown_auroc(unk, score),
        "oscr": oscr(unk, correct, score),
        "unknown_accuracy": float((flagged == unk).mean()),
        "known_accept_rate": float((~flagged[~unk]).mean()) if (~unk).any() else float("nan"),
        "unknown_reject_rate": float(flagged[unk].mean()) if unk.any() else float("nan"),
        "threshold": float(threshold),
        "n_known": int((~unk).sum()),
        "n_unknown": int(unk.sum()),
    }
