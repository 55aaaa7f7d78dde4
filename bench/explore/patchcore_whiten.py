"""Exploration (CPU): does whitening the patch features (a shrunk Mahalanobis metric) help
PatchCore on every suite set?

PaDiM, which measures Mahalanobis distances, beats PatchCore's Euclidean nearest neighbour on
``mt-exp`` (0.953 against 0.925) and loses badly on the rotating screw. The GPU sweep's
per-channel z-score (``chz``) moved every set by under 0.01. Here the whole covariance of the
fit patches is whitened before the bank is built: ``x -> (x - mu) W`` with
``W = S^(-1/2)``, ``S = (1 - lam) C + lam (tr C / d) I`` (``lam`` = 1 is plain Euclidean up to
scale). Each of PatchCore's two banks (fine, 1 x 1; context, 3 x 3) gets its own whitening
from its own fit patches; the product's combination (each bank's distances in units of its mean
coverage distance, averaged) and image score (mean of the largest 1 %) are kept. ``k3`` rows
score each patch by its mean distance to the 3 nearest bank rows instead of 1.

Same data, split (85 / 15, seed 0), Lite0 features and greedy cover (4096 cap, seed 0) as
``patchcore_locality.py``. Test labels choose nothing; they only measure.

    PYTHONPATH=. .venv/bin/python bench/explore/patchcore_gpu_prep.py 256
    cp bench/explore/patchcore_gpu_sweep.py .gpu/   # plus .gpu/lite0.pt, see the prep script
    PYTHONPATH=. .venv/bin/python bench/explore/patchcore_whiten.py
"""

import json
import os
from pathlib import Path

import torch

os.environ.setdefault("DEV", "cpu")
from patchcore_locality import cover_of, log, suite_features, sw

SETS = tuple(os.environ.get("SETS", "mvtec_screw,elpv_solar,mt-exp").split(","))
LAMS = tuple(float(v) for v in os.environ.get("LAMS", "1,0.3,0.05").split(","))
OUT = Path(os.environ.get("OUT", "/tmp/pw"))
N_COV = 200_000  # fit patches used for the covariance


def whitener(flat: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu (D,), W (D, D)) with W = S^(-1/2) of the shrunk covariance of ``flat`` (N, D)."""
    g = torch.Generator().manual_seed(0)
    sub = flat[torch.randperm(len(flat), generator=g)[:N_COV]].double()
    mu = sub.mean(0)
    c = torch.cov((sub - mu).T)
    d = c.shape[0]
    s = (1 - lam) * c + lam * (torch.trace(c) / d) * torch.eye(d, dtype=c.dtype)
    evals, evecs = torch.linalg.eigh(s)
    w = evecs @ torch.diag(evals.clamp_min(1e-12).rsqrt()) @ evecs.T
    # keep the overall scale of the plain features, so lam = 1 is Euclidean exactly
    w = w * torch.sqrt(torch.trace(c) / d)
    return mu.float(), w.float()


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "whiten-256.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    for name in SETS:
        res = results.get(name, {})
        todo = [lam for lam in LAMS if f"wh{lam:g}" not in res]
        if not todo:
            continue
        mfit, _, mtest, labels = suite_features(name)
        # per bank: (pooled fit patches (N, 152), test patches (n_test, P, 152)), once per set
        embedded = {}
        for pool in (1, 3):
            f, t = (sw.embed(m, (2, 4), pool) for m in (mfit, mtest))
            embedded[pool] = (f.reshape(-1, f.shape[-1]), t)
        del mfit, mtest
        log(name, "features")
        for lam in todo:
            per_bank = []
            for pool, (fit_flat, test) in embedded.items():
                mu, w = whitener(fit_flat, lam)
                flat = (fit_flat - mu) @ w
                cover = cover_of(flat)
                bank = flat[cover.indices].contiguous()
                unit = float(cover.distances.mean())
                del flat
                t = (test - mu) @ w
                d1 = sw.knn(t, bank) / unit
                d3 = sw.knn(t, bank, k=3) / unit
                per_bank.append((d1, d3))
                res[f"wh{lam:g}:p{pool}"] = sw.auroc(labels, sw.image_scores(d1)["top1"])
                log(name, f"wh{lam:g} p{pool}", round(res[f"wh{lam:g}:p{pool}"], 4))
            both = (per_bank[0][0] + per_bank[1][0]) / 2
            both3 = (per_bank[0][1] + per_bank[1][1]) / 2
            res[f"wh{lam:g}"] = sw.auroc(labels, sw.image_scores(both)["top1"])
            res[f"wh{lam:g}:k3"] = sw.auroc(labels, sw.image_scores(both3)["top1"])
            for frac in ("top0.5", "top2", "top5"):
                res[f"wh{lam:g}:{frac}"] = sw.auroc(labels, sw.image_scores(both)[frac])
            log(
                name,
                f"wh{lam:g}",
                {k: round(x, 4) for k, x in res.items() if k.startswith(f"wh{lam:g}")},
            )
            results[name] = res
            path.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
