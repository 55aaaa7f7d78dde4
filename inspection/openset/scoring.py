"""NumPy-only scoring of the open-set methods from network outputs (no torch, no scipy).

The station runs these functions on the outputs of the exported OpenVINO graph, and the
training side runs the very same functions on the torch head's outputs, so both agree to float
precision. A method's fitted statistics live in a :class:`ScorerState` (plain arrays plus a few
scalars) that saves to ``.npz`` + JSON.

Convention: every method returns, per item, the index of the nearest *known* class, a confidence
in [0, 1] for that class, and an unknown score where **higher means more likely unknown**; an
item is flagged unknown when its score is above the threshold calibrated on training data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np

from inspection.errors import ConfigError, ModelFileError

SCORER_FORMAT = "inspection-typing-scorer/1"


class TypingResult(NamedTuple):
    """Typing verdict for one defect image.

    Attributes:
        label: the most likely *known* defect type (also when ``is_unknown``: the closest one).
        confidence: the method's probability-like confidence in ``label``, in [0, 1].
        is_unknown: True when the unknown score is above the calibrated threshold, i.e. the
            defect looks like none of the known types and should go to an operator for a label.
        unknown_score: the method's raw unknown score (higher = more unknown; units per method).
    """

    label: str
    confidence: float
    is_unknown: bool
    unknown_score: float


class NetworkOutputs(NamedTuple):
    """What the typing network produces for a batch of N images.

    Attributes:
        features: (N, D) float32 pooled frozen-backbone features (D = 2560 for Lite0 avg+max).
        embedding: (N, E) float32 metric-head embedding.
        logits: (N, C) float32 classification-head logits over the C classes it was trained on.
    """

    features: np.ndarray
    embedding: np.ndarray
    logits: np.ndarray

    def take(self, index: np.ndarray) -> NetworkOutputs:
        """Rows ``index`` of every output."""
        return NetworkOutputs(self.features[index], self.embedding[index], self.logits[index])

    @staticmethod
    def concat(parts: list[NetworkOutputs]) -> NetworkOutputs:
        return NetworkOutputs(
            np.concatenate([p.features for p in parts]),
            np.concatenate([p.embedding for p in parts]),
            np.concatenate([p.logits for p in parts]),
        )


class MethodScores(NamedTuple):
    """Per-item scores of one method.

    Attributes:
        predicted: (N,) int64 index of the predicted known class.
        confidence: (N,) float64 confidence in that class, in [0, 1].
        unknown: (N,) float64 unknown score, higher = more likely unknown.
    """

    predicted: np.ndarray
    confidence: np.ndarray
    unknown: np.ndarray


@dataclass
class ScorerState:
    """Fitted statistics of one method.

    Attributes:
        method: method key (``msp``, ``max_logit``, ``energy``, ``mahalanobis``, ``metric``,
            ``openmax``).
        params: scalar settings (temperature, alpha, distance, space).
        arrays: named arrays, e.g. ``means`` (K, D), ``scale`` (D,), ``basis`` (D, r), ``coef``
            (r,), ``iso`` () for Mahalanobis (see :func:`mahalanobis_sq`),
            ``means`` (K, E) for metric, ``mavs`` (K, C) + ``weibull_shape``/``weibull_scale``
            (K,) for OpenMax, ``bank`` (M, D) unit rows + ``centre``/``scale`` (D,) for k-NN.
            Logit methods hold none.
    """

    method: str
    params: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)

    def save(self, path: str | Path) -> None:
        """Write ``<path>.npz`` (arrays) and ``<path>.json`` (method, params)."""
        path = Path(path)
        np.savez(path.with_suffix(".npz"), **cast(dict[str, Any], self.arrays))
        meta = {"format": SCORER_FORMAT, "method": self.method, "params": self.params}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ScorerState:
        path = Path(path)
        try:
            meta = json.loads(path.with_suffix(".json").read_text())
            with np.load(path.with_suffix(".npz")) as data:
                arrays = {k: np.asarray(data[k]) for k in data.files}
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"cannot read scorer state {path}: {exc}") from exc
        if meta.get("format") != SCORER_FORMAT:
            raise ModelFileError(f"{path} is not a {SCORER_FORMAT} file")
        return cls(meta["method"], dict(meta.get("params", {})), arrays)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float64."""
    z = np.asarray(x, dtype=np.float64)
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def logsumexp(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable log-sum-exp in float64."""
    z = np.asarray(x, dtype=np.float64)
    m = z.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def squared_distances(x: np.ndarray, means: np.ndarray) -> np.ndarray:
    """(N, K) squared euclidean distances between rows of ``x`` (N, D) and ``means`` (K, D)."""
    x = np.asarray(x, dtype=np.float64)
    m = np.asarray(means, dtype=np.float64)
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ m.T + (m * m).sum(1)[None, :]
    return np.maximum(d2, 0.0)


def mahalanobis_sq(x: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(N, K) squared Mahalanobis distances to the class means under the tied precision.

    ``arrays``: ``means`` (K, D), ``scale`` (D,) per-dimension standardisation, and the precision
    ``iso * I + basis diag(coef) basis^T`` (``basis`` (D, r), ``coef`` (r,), ``iso`` scalar).
    """
    scale = np.asarray(arrays["scale"], np.float64)
    xs = np.asarray(x, np.float64) * scale
    ms = np.asarray(arrays["means"], np.float64) * scale
    basis = np.asarray(arrays["basis"], np.float64)
    coef = np.asarray(arrays["coef"], np.float64)
    proj = (xs @ basis)[:, None, :] - (ms @ basis)[None, :, :]  # (N, K, r)
    d2 = float(arrays["iso"]) * squared_distances(xs, ms) + (proj * proj * coef).sum(-1)
    return np.maximum(d2, 0.0)


def _logit_scores(logits: np.ndarray, unknown: np.ndarray) -> MethodScores:
    prob = softmax(logits)
    return MethodScores(prob.argmax(1), prob.max(1), unknown)


def openmax_distance(av: np.ndarray, mav: np.ndarray, kind: str) -> np.ndarray:
    """(N,) distance between activation vectors ``av`` (N, C) and one MAV (C,).

    ``eucos`` is euclidean / 200 + cosine distance, the OpenMax paper's choice.
    """
    av = np.asarray(av, dtype=np.float64)
    mav = np.asarray(mav, dtype=np.float64)
    euc = np.linalg.norm(av - mav[None, :], axis=1)
    if kind == "euclidean":
        return euc
    denom = np.linalg.norm(av, axis=1) * np.linalg.norm(mav) + 1e-12
    cos = 1.0 - (av @ mav) / denom
    if kind == "cosine":
        return cos
    if kind == "eucos":
        return euc / 200.0 + cos
    raise ConfigError(f"unknown OpenMax distance {kind!r}")


def weibull_cdf(x: np.ndarray, shape: float, scale: float, loc: float = 0.0) -> np.ndarray:
    """CDF of ``scipy.stats.weibull_min(shape, loc, scale)`` in NumPy: 1 - exp(-((x-loc)/s)^c)."""
    z = np.maximum((np.asarray(x, dtype=np.float64) - loc) / scale, 0.0)
    return 1.0 - np.exp(-np.power(z, shape))


def openmax_probabilities(
    logits: np.ndarray,
    mavs: np.ndarray,
    shape: np.ndarray,
    scale: np.ndarray,
    loc: np.ndarray,
    alpha: int,
    distance: str,
) -> np.ndarray:
    """(N, C + 1) OpenMax probabilities; column 0 is "unknown" (Bendale & Boult, CVPR 2016).

    For the ``alpha`` top-ranked classes of each activation vector, the activation is scaled by
    ``1 - (alpha - r) / alpha * W_k(d_k)`` (rank r = 0 for the top class), where ``W_k`` is the
    class's Weibull CDF of the distance to its MAV; the removed mass becomes the unknown logit.
    """
    av = np.asarray(logits, dtype=np.float64)
    n, c = av.shape
    alpha = min(alpha, c)
    w_score = np.zeros((n, c))
    for k in range(c):
        d = openmax_distance(av, mavs[k], distance)
        w_score[:, k] = weibull_cdf(d, float(shape[k]), float(scale[k]), float(loc[k]))
    ranks = np.argsort(-av, axis=1)
    weight = np.ones((n, c))
    rows = np.arange(n)
    for r in range(alpha):
        top = ranks[:, r]
        weight[rows, top] = 1.0 - (alpha - r) / alpha * w_score[rows, top]
    revised = av * weight
    unknown = (av - revised).sum(1, keepdims=True)
    return softmax(np.concatenate([unknown, revised], axis=1))


def knn_normalise(x: np.ndarray, arrays: dict[str, np.ndarray]) -> np.ndarray:
    """(N, D) -> (N, D) float64 rows ``(x - centre) * scale``, scaled to unit length."""
    z = (np.asarray(x, np.float64) - np.asarray(arrays["centre"], np.float64)) * np.asarray(
        arrays["scale"], np.float64
    )
    return z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)


def knn_distance(x: np.ndarray, arrays: dict[str, np.ndarray], k: int) -> np.ndarray:
    """(N,) euclidean distance of each normalised row of ``x`` to its ``k``-th nearest bank row.

    Deep k-NN (Sun et al., ICML 2022): on the unit sphere ``||a - b||^2 = 2 - 2 a.b``, so the
    search is one (N, D) x (D, M) product and a partial sort per row.
    """
    z = knn_normalise(x, arrays)
    sim = z @ np.asarray(arrays["bank"], np.float64).T  # (N, M)
    k = min(int(k), sim.shape[1])
    kth = -np.partition(-sim, k - 1, axis=1)[:, k - 1]
    return np.sqrt(np.maximum(2.0 - 2.0 * kth, 0.0))


def score(state: ScorerState, outputs: NetworkOutputs) -> MethodScores:
    """Score a batch with a fitted method; see the module docstring for the convention."""
    method = state.method
    logits = np.asarray(outputs.logits, dtype=np.float64)
    if method == "msp":
        prob = softmax(logits)
        return MethodScores(prob.argmax(1), prob.max(1), 1.0 - prob.max(1))
    if method == "max_logit":
        return _logit_scores(logits, -logits.max(1))
    if method == "energy":
        t = float(state.params.get("temperature", 1.0))
        return _logit_scores(logits, -t * logsumexp(logits / t))
    if method == "mahalanobis":
        space = state.params.get("space", "backbone")
        x = outputs.features if space == "backbone" else outputs.embedding
        d2 = mahalanobis_sq(x, state.arrays)
        return MethodScores(d2.argmin(1), softmax(-0.5 * d2).max(1), d2.min(1))
    if method == "metric":
        d2 = squared_distances(outputs.embedding, state.arrays["means"])
        t = float(state.params.get("temperature", 1.0))
        return MethodScores(d2.argmin(1), softmax(-d2 / t).max(1), np.sqrt(d2.min(1)))
    if method == "openmax":
        prob = openmax_probabilities(
            logits,
            state.arrays["mavs"],
            state.arrays["weibull_shape"],
            state.arrays["weibull_scale"],
            state.arrays["weibull_loc"],
            int(state.params["alpha"]),
            str(state.params["distance"]),
        )
        # Label: the closed-set argmax (OpenMax's revision may reorder close classes);
        # confidence: its OpenMax probability; unknown: 1 - the largest known probability.
        known = prob[:, 1:]
        pred = logits.argmax(1)
        return MethodScores(pred, known[np.arange(len(pred)), pred], 1.0 - known.max(1))
    if method == "knn":
        space = state.params.get("space", "backbone")
        x = outputs.features if space == "backbone" else outputs.embedding
        return _logit_scores(logits, knn_distance(x, state.arrays, int(state.params["k"])))
    raise ConfigError(f"unknown typing method {method!r}")


def operating_threshold(known_scores: np.ndarray, known_accept_rate: float) -> float:
    """Unknown-score threshold at which ``known_accept_rate`` of ``known_scores`` are accepted.

    ``known_scores``: (N,) out-of-fold unknown scores of known-type training defects (never
    test data). An item is called unknown when its score is *above* the threshold, so the
    threshold is the ``known_accept_rate`` quantile of those scores.
    """
    scores = np.asarray(known_scores, dtype=np.float64)
    if scores.size == 0:
        raise ConfigError("no out-of-fold known scores to set an operating point from")
    if not 0.0 < known_accept_rate < 1.0:
        raise ConfigError(f"known_accept_rate must be in (0, 1), got {known_accept_rate}")
    return float(np.quantile(scores, known_accept_rate))


def results(scores: MethodScores, classes: list[str], threshold: float) -> list[TypingResult]:
    """Per-item :class:`TypingResult` from method scores, class names and the threshold."""
    return [
        TypingResult(classes[int(i)], float(c), bool(u > threshold), float(u))
        for i, c, u in zip(scores.predicted, scores.confidence, scores.unknown, strict=True)
    ]
