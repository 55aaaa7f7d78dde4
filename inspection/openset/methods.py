"""Fitting each open-set method's statistics from the trained network's outputs (NumPy/SciPy).

Everything here works on :class:`~inspection.openset.scoring.NetworkOutputs` of *training*
images and produces a :class:`~inspection.openset.scoring.ScorerState` that
:func:`inspection.openset.scoring.score` evaluates. Class-mean methods (``mahalanobis``,
``metric``) also accept a new class's images later (:func:`add_class_state`) without
retraining: the new class mean is appended, the shared covariance is kept.
"""

from __future__ import annotations

import logging

import numpy as np

from inspection.errors import ConfigError, InvalidStateError
from inspection.openset.config import (
    EnergyConfig,
    KnnConfig,
    MahalanobisConfig,
    MethodConfig,
    MetricConfig,
    OpenMaxConfig,
)
from inspection.openset.scoring import (
    NetworkOutputs,
    ScorerState,
    knn_normalise,
    openmax_distance,
)

logger = logging.getLogger(__name__)

#: Methods whose class model is a set of class means (new classes need no retraining).
CLASS_MEAN_METHODS = frozenset({"mahalanobis", "metric"})


def _class_means(x: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    means = np.zeros((n_classes, x.shape[1]), dtype=np.float64)
    for k in range(n_classes):
        sel = labels == k
        if not sel.any():
            raise ConfigError(f"class index {k} has no training samples")
        means[k] = x[sel].mean(0)
    return means


def ledoit_wolf_shrinkage(gram_fro2: float, fourth: float, trace: float, n: int, p: int) -> float:
    """Ledoit-Wolf shrinkage coefficient from sufficient statistics of centred data X (n, p).

    Args:
        gram_fro2: ||X^T X||_F^2 (= ||X X^T||_F^2, so the dual Gram matrix serves as well).
        fourth: sum_k ||x_k||^4.
        trace: trace(X^T X).

    Same estimator as ``sklearn.covariance.ledoit_wolf_shrinkage`` (Ledoit & Wolf, J. Multivar.
    Anal. 2004), without ever forming a (p, p) matrix when n < p.
    """
    mu = trace / n / p
    delta = gram_fro2 / n**2 - 2.0 * mu * trace / n + p * mu**2
    beta = (fourth / n - gram_fro2 / n**2) / (p * n)
    delta /= p
    beta = min(beta, delta)
    return 0.0 if delta <= 0 else float(beta / delta)


def shrunk_precision(
    z: np.ndarray, shrinkage: float | None, min_shrinkage: float = 1e-3
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Low-rank form of the inverse of the shrunk covariance ``(1 - s) S + s mu I``.

    ``z`` (n, p) are centred (within-class residual) vectors, S = z^T z / n, mu = trace(S) / p.
    Returns (V (p, r), c (r,), a, s) with ``Sigma^-1 = a I + V diag(c) V^T``, so the squared
    Mahalanobis norm of y is ``a ||y||^2 + sum_i c_i (v_i^T y)^2``. Works in the dual (n, n) Gram
    space when n < p, so a 2560-d feature space costs O(n^2 p), never O(p^3).
    """
    z = np.asarray(z, dtype=np.float64)
    n, p = z.shape
    if n <= p:
        gram = z @ z.T
        evals, u = np.linalg.eigh(gram)
        keep = evals > evals.max() * 1e-10
        evals, u = evals[keep], u[:, keep]
        basis = z.T @ u / np.sqrt(evals)[None, :]
        fro2 = float((gram * gram).sum())
        fourth = float((np.diag(gram) ** 2).sum())
    else:
        cov_n = z.T @ z
        evals, basis = np.linalg.eigh(cov_n)
        keep = evals > evals.max() * 1e-10
        evals, basis = evals[keep], basis[:, keep]
        fro2 = float((cov_n * cov_n).sum())
        fourth = float(((z * z).sum(1) ** 2).sum())
    trace = float((z * z).sum())
    s = ledoit_wolf_shrinkage(fro2, fourth, trace, n, p) if shrinkage is None else shrinkage
    s = max(float(s), min_shrinkage)
    mu = trace / n / p
    a = 1.0 / (s * mu)
    lam = evals / n  # eigenvalues of S
    c = 1.0 / ((1.0 - s) * lam + s * mu) - a
    return basis, c, a, s


def fit_mahalanobis(
    x: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    shrinkage: float | None,
    max_samples: int,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Class means and a tied, shrunk precision in low-rank form (Lee et al., NeurIPS 2018).

    Dimensions are standardised first (avg- and max-pooled channels differ in scale; a floor of
    1 % of the mean variance keeps dead channels from exploding). The covariance of within-class
    residuals uses at most ``max_samples`` rows (random, seeded) to bound the cost.
    """
    x = np.asarray(x, dtype=np.float64)
    means = _class_means(x, labels, n_classes)
    resid = x - means[labels]
    var = resid.var(0)
    scale = 1.0 / np.sqrt(var + 0.01 * var.mean() + 1e-12)
    if len(resid) > max_samples:
        rows = np.random.default_rng(seed).choice(len(resid), max_samples, replace=False)
        resid = resid[rows]
    basis, coef, iso, s = shrunk_precision(resid * scale[None, :], shrinkage)
    logger.debug("Mahalanobis: %d dims, rank %d, shrinkage %.3f", x.shape[1], len(coef), s)
    return {
        "means": means.astype(np.float32),
        "scale": scale.astype(np.float32),
        "basis": basis.astype(np.float32),
        "coef": coef,
        "iso": np.array(iso),
        "shrinkage": np.array(s),
    }


def fit_weibull_tail(distances: np.ndarray, tail_size: int) -> tuple[float, float, float]:
    """(shape, scale, loc) of a Weibull fitted to the ``tail_size`` largest distances.

    ``scipy.stats.weibull_min`` with the location fixed at 0, in place of libMR's ``FitHigh``.
    """
    from scipy.stats import weibull_min

    d = np.sort(np.asarray(distances, dtype=np.float64))[-tail_size:]
    d = np.maximum(d, 1e-9)
    if d.size < 2 or np.ptp(d) < 1e-12:
        return 50.0, float(d.max() * 1.05 + 1e-9), 0.0  # degenerate: step just past the tail
    shape, loc, scale = weibull_min.fit(d, floc=0.0)
    return float(shape), float(scale), float(loc)


def fit_state(
    config: MethodConfig, outputs: NetworkOutputs, labels: np.ndarray, n_classes: int
) -> ScorerState:
    """Fit method ``config`` on training outputs; ``labels`` (N,) are class indices."""
    labels = np.asarray(labels, dtype=np.int64)
    method = config.method
    if method in ("msp", "max_logit"):
        return ScorerState(method)
    if isinstance(config, EnergyConfig):
        return ScorerState(method, {"temperature": config.temperature})
    if isinstance(config, MahalanobisConfig):
        x = outputs.features if config.space == "backbone" else outputs.embedding
        x = np.asarray(x, dtype=np.float64)
        arrays = fit_mahalanobis(x, labels, n_classes, config.shrinkage, config.max_samples)
        return ScorerState(method, {"space": config.space}, arrays)
    if isinstance(config, MetricConfig):
        means = _class_means(np.asarray(outputs.embedding, np.float64), labels, n_classes)
        return ScorerState(
            method, {"temperature": config.temperature}, {"means": means.astype(np.float32)}
        )
    if isinstance(config, OpenMaxConfig):
        return _fit_openmax(config, np.asarray(outputs.logits, np.float64), labels, n_classes)
    if isinstance(config, KnnConfig):
        return fit_knn(config, outputs)
    raise ConfigError(f"unknown typing method {method!r}")


def _fit_openmax(
    config: OpenMaxConfig, logits: np.ndarray, labels: np.ndarray, n_classes: int
) -> ScorerState:
    """MAVs from correctly classified training activations, one Weibull per class."""
    pred = logits.argmax(1)
    mavs = np.zeros((n_classes, logits.shape[1]))
    shape = np.zeros(n_classes)
    scale = np.zeros(n_classes)
    loc = np.zeros(n_classes)
    for k in range(n_classes):
        sel = (labels == k) & (pred == k)
        if sel.sum() < 3:  # too few correct ones: fall back to every sample of the class
            sel = labels == k
        av = logits[sel]
        mavs[k] = av.mean(0)
        d = openmax_distance(av, mavs[k], config.distance)
        shape[k], scale[k], loc[k] = fit_weibull_tail(d, min(config.tail_size, len(d)))
    return ScorerState(
        "openmax",
        {"alpha": config.alpha, "distance": config.distance, "tail_size": config.tail_size},
        {
            "mavs": mavs.astype(np.float32),
            "weibull_shape": shape,
            "weibull_scale": scale,
            "weibull_loc": loc,
        },
    )


def fit_knn(config: KnnConfig, outputs: NetworkOutputs, seed: int = 0) -> ScorerState:
    """Bank of L2-normalised training vectors for deep k-NN (Sun et al., ICML 2022).

    With ``standardise``, backbone features are scaled per dimension by the training mean and
    standard deviation (1 % of the mean variance as a floor for dead channels) before
    normalising; otherwise vectors are normalised as they are. At most ``max_bank`` rows are
    kept (seeded subsample).
    """
    x = np.asarray(
        outputs.features if config.space == "backbone" else outputs.embedding, np.float64
    )
    if config.space == "backbone" and config.standardise:
        mean = x.mean(0)
        var = x.var(0)
        scale = 1.0 / np.sqrt(var + 0.01 * var.mean() + 1e-12)
    else:
        mean, scale = np.zeros(x.shape[1]), np.ones(x.shape[1])
    if len(x) > config.max_bank:
        rows = np.sort(np.random.default_rng(seed).choice(len(x), config.max_bank, replace=False))
        x = x[rows]
    arrays = {"centre": mean.astype(np.float32), "scale": scale.astype(np.float32)}
    arrays["bank"] = knn_normalise(x, arrays).astype(np.float32)
    k = min(config.k, len(x))
    logger.debug("knn: bank %s, k %d, space %s", arrays["bank"].shape, k, config.space)
    return ScorerState("knn", {"k": k, "space": config.space}, arrays)


def add_class_state(state: ScorerState, outputs: NetworkOutputs) -> ScorerState:
    """A copy of ``state`` with one more class whose mean comes from ``outputs`` (its images).

    Only class-mean methods support this; the others need a new head (call ``fit`` again).
    """
    if state.method not in CLASS_MEAN_METHODS:
        raise InvalidStateError(
            f"method {state.method!r} cannot add a class without retraining; use "
            f"one of {sorted(CLASS_MEAN_METHODS)} or fit() with the new labels"
        )
    if state.method == "mahalanobis" and state.params.get("space", "backbone") == "backbone":
        x = outputs.features
    else:
        x = outputs.embedding
    mean = np.asarray(x, dtype=np.float64).mean(0, keepdims=True).astype(np.float32)
    arrays = dict(state.arrays)
    arrays["means"] = np.concatenate([state.arrays["means"], mean])
    return ScorerState(state.method, dict(state.params), arrays)
