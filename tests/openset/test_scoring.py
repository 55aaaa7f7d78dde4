"""NumPy scorer conventions, checked against reference implementations."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from inspection.openset.config import METHODS, method_config
from inspection.openset.methods import (
    add_class_state,
    fit_state,
    fit_weibull_tail,
    shrunk_precision,
)
from inspection.openset.scoring import (
    NetworkOutputs,
    ScorerState,
    mahalanobis_sq,
    openmax_probabilities,
    results,
    score,
    weibull_cdf,
)


def _outputs(
    rng: np.random.Generator, n: int = 60, k: int = 3
) -> tuple[NetworkOutputs, np.ndarray]:
    labels = np.arange(n) % k
    centres = rng.normal(0, 3, size=(k, 20))
    feats = centres[labels] + rng.normal(size=(n, 20))
    emb = feats[:, :4]
    logits = np.eye(k)[labels] * 4 + rng.normal(size=(n, k))
    return NetworkOutputs(feats.astype(np.float32), emb.astype(np.float32), logits), labels


def test_logit_scores_follow_convention(rng: np.random.Generator) -> None:
    logits = np.array([[5.0, 0.0, 0.0], [0.2, 0.1, 0.0]])
    out = NetworkOutputs(np.zeros((2, 1)), np.zeros((2, 1)), logits)
    for m in ("msp", "max_logit", "energy"):
        s = score(ScorerState(m, {"temperature": 1.0}), out)
        assert list(s.predicted) == [0, 0]
        assert s.unknown[1] > s.unknown[0], m  # the flat one is more unknown
        assert np.all((s.confidence > 0) & (s.confidence <= 1))


@pytest.mark.parametrize("n", [15, 200])
def test_shrunk_precision_matches_sklearn_ledoit_wolf(rng: np.random.Generator, n: int) -> None:
    from sklearn.covariance import LedoitWolf

    z = rng.normal(size=(n, 30)) * rng.uniform(0.5, 3, size=30)
    lw = LedoitWolf(assume_centered=True).fit(z)
    basis, coef, iso, s = shrunk_precision(z, None)
    precision = iso * np.eye(30) + basis @ np.diag(coef) @ basis.T
    assert s == pytest.approx(lw.shrinkage_)
    np.testing.assert_allclose(precision, lw.precision_, rtol=1e-6, atol=1e-8)


def test_mahalanobis_distance_is_explicit_quadratic_form(rng: np.random.Generator) -> None:
    out, labels = _outputs(rng)
    state = fit_state(method_config("mahalanobis"), out, labels, 3)
    a = state.arrays
    precision = float(a["iso"]) * np.eye(20) + a["basis"] @ np.diag(a["coef"]) @ a["basis"].T
    x = out.features[:5].astype(np.float64)
    y = (x[:, None, :] - a["means"][None].astype(np.float64)) * a["scale"]
    explicit = np.einsum("nkd,de,nke->nk", y, precision, y)
    np.testing.assert_allclose(mahalanobis_sq(x, a), explicit, rtol=1e-4)


def test_weibull_cdf_matches_scipy(rng: np.random.Generator) -> None:
    from scipy.stats import weibull_min

    d = rng.gamma(5.0, 1.0, size=200)
    shape, scale, loc = fit_weibull_tail(d, 20)
    x = np.linspace(0, 20, 50)
    np.testing.assert_allclose(
        weibull_cdf(x, shape, scale, loc), weibull_min.cdf(x, shape, loc, scale)
    )


def test_openmax_probabilities_sum_to_one_and_far_points_are_unknown(
    rng: np.random.Generator,
) -> None:
    out, labels = _outputs(rng)
    state = fit_state(method_config("openmax"), out, labels, 3)
    a = state.arrays
    far = np.array([[40.0, -30.0, 25.0]])
    prob = openmax_probabilities(
        np.concatenate([out.logits[:3], far]),
        a["mavs"],
        a["weibull_shape"],
        a["weibull_scale"],
        a["weibull_loc"],
        2,
        "eucos",
    )
    np.testing.assert_allclose(prob.sum(1), 1.0)
    assert prob[-1, 0] > prob[:3, 0].max()


@pytest.mark.parametrize("method", METHODS)
def test_every_method_separates_far_points_and_round_trips(
    rng: np.random.Generator, method: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    out, labels = _outputs(rng)
    state = fit_state(method_config(method), out, labels, 3)
    s = score(state, out)
    assert (s.predicted == labels).mean() > 0.9
    state.save(tmp_path / "scorer")
    again = ScorerState.load(tmp_path / "scorer")
    np.testing.assert_allclose(score(again, out).unknown, s.unknown)
    res = results(s, ["a", "b", "c"], threshold=float(np.quantile(s.unknown, 0.5)))
    assert sum(r.is_unknown for r in res) == pytest.approx(len(res) / 2, abs=1)


def test_add_class_state_only_for_class_mean_methods(rng: np.random.Generator) -> None:
    from inspection.errors import InvalidStateError

    out, labels = _outputs(rng)
    for method in ("mahalanobis", "metric"):
        state = add_class_state(
            fit_state(method_config(method), out, labels, 3), out.take(np.arange(5))
        )
        assert state.arrays["means"].shape[0] == 4
    with pytest.raises(InvalidStateError):
        add_class_state(fit_state(method_config("msp"), out, labels, 3), out)


def test_runtime_imports_no_torch() -> None:
    code = "import sys, inspection.openset.typer_runtime; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
