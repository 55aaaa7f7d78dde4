"""PatchCore's fast coreset gives the same kind of cover as exact greedy; the bank is bounded."""

from __future__ import annotations

import numpy as np
import torch
from anomalib.models.components import KCenterGreedy

from inspection.detectors.patchcore import (
    PatchcoreConfig,
    PatchcoreDetector,
    coverage_radius,
    greedy_coreset,
    project,
)
from tests.conftest import synthetic_set


def _clustered(n: int = 3000, d: int = 152, seed: int = 0) -> torch.Tensor:
    """Features in a few tight clusters plus scattered rare points (like normal patches)."""
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(12, d, generator=gen) * 4
    points = centres[torch.randint(12, (n,), generator=gen)] + torch.randn(n, d, generator=gen)
    points[:30] += torch.randn(30, d, generator=gen) * 6  # rare patches a cover must reach
    return points


def test_coreset_covers_like_exact_greedy() -> None:
    x = _clustered()
    k = 150
    ours = greedy_coreset(x, k, projection_dim=128, seed=0)
    assert ours.shape == (k,) and len(set(ours.tolist())) == k
    exact = KCenterGreedy(x, sampling_ratio=k / len(x)).select_coreset_idxs()
    random = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:k]
    r_ours = coverage_radius(x, ours)
    r_exact = coverage_radius(x, torch.as_tensor(exact))
    r_random = coverage_radius(x, random)
    # greedy on a projection covers almost as tightly as greedy on the full features,
    # and far better than a random subset of the same size
    assert r_ours <= 1.25 * r_exact
    assert r_ours < 0.8 * r_random


def test_coreset_without_projection_is_exact_greedy_from_the_same_start() -> None:
    x = _clustered(800, 16)
    ours = greedy_coreset(x, 40, projection_dim=16, seed=3)
    # exact greedy from the same first point, written out plainly
    chosen = [int(ours[0])]
    dist = ((x - x[chosen[0]]) ** 2).sum(1)
    for _ in range(39):
        nxt = int(torch.argmax(dist))
        chosen.append(nxt)
        dist = torch.minimum(dist, ((x - x[nxt]) ** 2).sum(1))
    assert ours.tolist() == chosen


def test_coreset_edge_cases() -> None:
    x = torch.randn(10, 4)
    assert greedy_coreset(x, 20).tolist() == list(range(10))
    assert project(x, 8).shape == (10, 4)
    assert project(x, 0).shape == (10, 4)
    assert project(torch.randn(5, 64), 8).shape == (5, 8)


def test_bank_is_capped() -> None:
    train = synthetic_set(64, 12, 0, seed=1)
    det = PatchcoreDetector(PatchcoreConfig(image_size=64, max_bank=100, coreset_ratio=1.0))
    det.fit(train.images)
    bank = det.torch_model.memory_bank
    assert bank.shape == (100, 152)
    assert det.bank_size(10) == 10 and det.bank_size(10**7) == 100
    out = det.predict(train.images[:2])
    assert np.isfinite(out.score).all()


def test_fast_inference_equals_anomalibs_forward() -> None:
    """One augmented product + row maximum gives anomalib's distances, score and map."""
    from anomalib.models.image.patchcore.torch_model import PatchcoreModel

    data = synthetic_set(64, 12, 4, seed=2)
    det = PatchcoreDetector(
        PatchcoreConfig(image_size=64, max_bank=300, score="reweighted", fine_bank=False)
    )
    det.fit(data.images[:12])
    model = det.torch_model.eval()
    x = det._prepare(data.images)
    with torch.no_grad():
        ours = model(x)
        reference = PatchcoreModel.forward(model, x)
    torch.testing.assert_close(ours.pred_score, reference.pred_score, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours.anomaly_map, reference.anomaly_map, rtol=1e-4, atol=1e-4)


def test_top_mean_score_is_the_mean_of_the_largest_patch_distances() -> None:
    data = synthetic_set(64, 12, 4, seed=2)
    det = PatchcoreDetector(
        PatchcoreConfig(image_size=64, max_bank=300, top_fraction=0.2, fine_bank=False)
    )
    assert det.config.score == "top_mean"  # the default
    det.fit(data.images[:12])
    model = det.torch_model.eval()
    x = det._prepare(data.images)
    with torch.no_grad():
        ours = model(x).pred_score
        feats = {k: model.feature_pooler(v) for k, v in model.feature_extractor(x).items()}
        emb = model.generate_embedding(feats)
        b, d, h, w = emb.shape
        patches = emb.permute(0, 2, 3, 1).reshape(b, h * w, d)
        dist = torch.cdist(patches, model.memory_bank[None]).amin(2)  # (B, P)
    k = int(h * w * 0.2)
    expected = dist.topk(k, dim=1).values.mean(1)
    torch.testing.assert_close(ours, expected, rtol=1e-3, atol=1e-3)


def test_a_bundle_saved_before_the_score_option_keeps_the_reweighted_score(tmp_path) -> None:
    import json

    train = synthetic_set(64, 12, 0, seed=1)
    det = PatchcoreDetector(
        PatchcoreConfig(image_size=64, max_bank=100, score="reweighted", fine_bank=False)
    )
    det.fit(train.images)
    out = det.save(tmp_path / "old")
    meta = json.loads((out / "detector.json").read_text())
    for key in ("score", "top_fraction", "fine_bank"):
        del meta["config"][key]  # as written before the option existed
    (out / "detector.json").write_text(json.dumps(meta))
    loaded = PatchcoreDetector.load(out)
    assert loaded.config.score == "reweighted"
    np.testing.assert_allclose(
        loaded.predict(train.images[:2]).score, det.predict(train.images[:2]).score, rtol=1e-5
    )


def test_neighbourhood_one_keeps_each_cells_own_feature() -> None:
    """``neighbourhood: 1`` stores the un-averaged patch features; even sizes are refused."""
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="odd"):
        PatchcoreConfig(neighbourhood=2)
    train = synthetic_set(64, 6, 0, seed=1)
    det = PatchcoreDetector(
        PatchcoreConfig(image_size=64, neighbourhood=1, coreset_ratio=1.0, max_bank=10**6)
    )
    det.fit(train.images)
    model = det.torch_model.eval()
    with torch.no_grad():
        feats = model.feature_extractor(det._prepare(train.images))
        emb = model.generate_embedding(feats)  # no pooling at all
    expected = emb.permute(0, 2, 3, 1).reshape(-1, emb.shape[1])
    torch.testing.assert_close(model.memory_bank, expected)
    averaged = PatchcoreDetector(PatchcoreConfig(image_size=64))
    assert isinstance(averaged.torch_model.feature_pooler, torch.nn.AvgPool2d)


def test_the_fine_bank_scores_each_patch_by_both_banks_in_their_own_units() -> None:
    """Default: a context bank (3 x 3 averaged features) and a fine bank (each cell's own
    feature); a patch's score is the mean of its distances to each, each divided by that
    bank's mean coverage distance over the training patches."""
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="fine_bank"):
        PatchcoreConfig(score="reweighted")
    data = synthetic_set(64, 12, 4, seed=2)
    det = PatchcoreDetector(
        PatchcoreConfig(image_size=64, max_bank=200, coreset_ratio=0.5, top_fraction=0.2)
    )
    assert det.config.fine_bank and det.config.dual
    det.fit(data.images[:12])
    model = det.torch_model.eval()
    assert model.memory_bank.shape == model.fine_bank.shape == (200, 152)
    x = det._prepare(data.images)
    with torch.no_grad():
        ours = model(x).pred_score
        feats = model.feature_extractor(x)
        train_feats = model.feature_extractor(det._prepare(data.images[:12]))
    dists = []
    for pooler, bank, scale in (
        (model.feature_pooler, model.memory_bank, model.bank_scales[0]),
        (torch.nn.Identity(), model.fine_bank, model.bank_scales[1]),
    ):

        def patches(f: dict[str, torch.Tensor], pooler: torch.nn.Module = pooler) -> torch.Tensor:
            emb = model.generate_embedding({k: pooler(v) for k, v in f.items()})
            return emb.permute(0, 2, 3, 1).reshape(emb.shape[0], -1, emb.shape[1])

        coverage = torch.cdist(patches(train_feats).reshape(1, -1, 152), bank[None]).amin(2)
        torch.testing.assert_close(scale, coverage.mean(), rtol=1e-3, atol=1e-3)
        dists.append(torch.cdist(patches(feats), bank[None]).amin(2) / scale)
    combined = (dists[0] + dists[1]) / 2  # (B, P)
    expected = combined.topk(int(combined.shape[1] * 0.2), dim=1).values.mean(1)
    torch.testing.assert_close(ours, expected, rtol=1e-3, atol=1e-3)


def test_a_bundle_saved_before_the_fine_bank_keeps_one_bank(tmp_path) -> None:
    import json

    train = synthetic_set(64, 12, 0, seed=1)
    det = PatchcoreDetector(PatchcoreConfig(image_size=64, max_bank=100, fine_bank=False))
    det.fit(train.images)
    out = det.save(tmp_path / "old")
    meta = json.loads((out / "detector.json").read_text())
    del meta["config"]["fine_bank"]  # as written before the option existed
    (out / "detector.json").write_text(json.dumps(meta))
    loaded = PatchcoreDetector.load(out)
    assert not loaded.config.fine_bank and not hasattr(loaded.torch_model, "fine_bank")
    np.testing.assert_allclose(
        loaded.predict(train.images[:2]).score, det.predict(train.images[:2]).score, rtol=1e-5
    )
