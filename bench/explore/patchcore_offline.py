"""Exploration, not a benchmark: PatchCore bank and score variants on cached patch features.

Question: which general change to the default ``patchcore`` (Lite0 ``blocks.2`` + ``blocks.4``,
greedy coreset capped at 4096) lifts image AUROC on every set of protocol ``suite`` at once?
Retraining through ``training.train_auto`` costs minutes per (variant, set); here the patch
embeddings of the normal training images and of the test images are computed once per set and
side (the detector's own feature path), then each variant only rebuilds the bank and scores.
The bank is built on all training normals (the product holds some out for thresholds), so
absolute figures differ slightly from ``bench/results/suite.json``; the base row shows how much.

Variants (each general, none reads a test label):
- ``base``: the detector as shipped (greedy cover of the raw 152-d patches, reweighted max).
- ``layernorm``: each layer's channels scaled so both layers have the same mean patch norm on
  the training pool (Lite0's two stages differ in scale, so the concatenation lets one
  dominate the distance).
- ``rot``: the bank also covers the training images rotated by 90, 180 and 270 degrees and
  mirrored (parts that lie in any orientation); cover size as base.
- ``max``: no reweighting (image score = the largest patch distance).
- Image scores computed for every bank: ``reweighted`` (paper, eq. 7), ``max``,
  ``top1pct_mean`` / ``top5pct_mean`` (mean of the largest 1 % / 5 % of the image's patch
  distances: a defect covering several patches counts more than one odd patch).
- Tokens joined by ``+`` on the raw-layer cache (every variant but ``rot``): ``L<stages>`` the
  Lite0 stages that feed the patch features (``L24`` = ``blocks.2`` + ``blocks.4``, the default;
  ``L246``; timm exposes only the stage ends 0, 1, 2, 4, 6 of Lite0), ``pool<k>`` the k x k neighbourhood averaging (default 3),
  ``bank<n>`` the coreset cap (default 4096), ``fit85`` the bank built on the 85 % of the training
  normals the product fits on (``training.split_validation``, seed 0: the rest sets thresholds),
  ``seed<n>`` the coreset's first point drawn with seed n (default 0).

    .venv/bin/python bench/explore/patchcore_offline.py --size 256 --name patchcore-offline
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from inspection.bench.report import markdown_table, stamp, write_results

OUT = Path("bench/results/explore")
ABOUT = (
    "PatchCore bank and score variants on cached Lite0 patch embeddings (exploration; method: "
    "`bench/explore/patchcore_offline.py`). Bank built on all training normals, test image AUROC "
    "from test labels, which choose nothing here: a variant becomes a default only if it is "
    "better on every set. `reweighted` is the detector's image score, `max` the largest patch "
    "distance, `top1pct_mean` the mean of the largest 1 % of patch distances. `select_s` is the "
    "coreset time on one thread of a loaded 2-core machine.\n\n"
)
CACHE = Path.home() / ".cache/inspection/explore-features"
SETS = ("mt-exp", "elpv_solar", "mvtec_screw")
logger = logging.getLogger("patchcore_offline")


def embed(det: Any, images: np.ndarray) -> torch.Tensor:
    """(N, h*w, D) patch embeddings of (N, S, S, 3) uint8 images through ``det``'s model."""
    model = det.torch_model
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(images), 16):
            x = det._prepare(images[start : start + 16])
            feats = model.feature_extractor(x)
            feats = {k: model.feature_pooler(v) for k, v in feats.items()}
            emb = model.generate_embedding(feats)
            b, d, h, w = emb.shape
            out.append(emb.permute(0, 2, 3, 1).reshape(b, h * w, d).half())
    return torch.cat(out)


def features(dataset: str, size: int, data_root: Path, rotated: bool) -> dict[str, Any]:
    """Cached train/test embeddings (with ``rotated``, also of the train images rotated and
    mirrored) of one set at ``size``."""
    path = CACHE / f"{dataset}-{size}{'-rot' if rotated else ''}.pt"
    if path.exists():
        return torch.load(path)
    from inspection.bench.suite import DATASETS, load_dataset
    from inspection.detectors import registry

    train, test = load_dataset(DATASETS[dataset], data_root, size)
    det = registry.create({"type": "patchcore", "image_size": size})
    det._resolve_photometric(train.images)  # as fit() does: standardise when exposure varies
    variants = [np.rot90(train.images, k, axes=(1, 2)) for k in (1, 2, 3)] if rotated else []
    variants += [train.images[:, :, ::-1]] if rotated else []
    data = {
        "train": embed(det, train.images),
        "train_aug": [embed(det, np.ascontiguousarray(v)) for v in variants],
        "test": embed(det, test.images),
        "labels": torch.from_numpy(test.labels.astype(np.int64)),
        "channels": [int(c) for c in det.torch_model.feature_extractor.out_dims],
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data


RAW_LAYERS = ("blocks.2", "blocks.4", "blocks.6")  # timm exposes only stage ends: 0, 1, 2, 4, 6


def raw_features(dataset: str, size: int, data_root: Path) -> dict[str, Any]:
    """Cached un-pooled feature maps of Lite0 ``RAW_LAYERS`` for one set at ``size``:
    ``{"train": {layer: (N, C, h, w) half}, "test": ..., "labels": (N,)}``."""
    path = CACHE / f"{dataset}-{size}-raw.pt"
    if path.exists():
        return torch.load(path)
    from inspection.bench.suite import DATASETS, load_dataset
    from inspection.detectors import registry

    train, test = load_dataset(DATASETS[dataset], data_root, size)
    det = registry.create({"type": "patchcore", "image_size": size, "layers": RAW_LAYERS})
    det._resolve_photometric(train.images)  # as fit() does: standardise when exposure varies
    model = det.torch_model
    model.eval()

    def maps(images: np.ndarray) -> dict[str, torch.Tensor]:
        out: dict[str, list[torch.Tensor]] = {k: [] for k in RAW_LAYERS}
        with torch.no_grad():
            for start in range(0, len(images), 16):
                feats = model.feature_extractor(det._prepare(images[start : start + 16]))
                for k in RAW_LAYERS:
                    out[k].append(feats[k].half())
        return {k: torch.cat(v) for k, v in out.items()}

    data = {
        "train": maps(train.images),
        "test": maps(test.images),
        "labels": torch.from_numpy(test.labels.astype(np.int64)),
    }
    CACHE.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return data


def parse_variant(name: str) -> dict[str, Any]:
    """Settings of a ``+``-joined variant name (see the module docstring)."""
    spec: dict[str, Any] = {
        "layers": ("blocks.2", "blocks.4"),
        "pool": 3,
        "bank": None,
        "fit85": False,
        "seed": 0,
    }
    for token in name.split("+"):
        if token == "fit85":
            spec["fit85"] = True
        elif token.startswith("seed") and token[4:].isdigit():
            spec["seed"] = int(token[4:])
        elif token.startswith("L") and token[1:].isdigit():
            spec["layers"] = tuple(f"blocks.{c}" for c in token[1:])
        elif token.startswith("pool"):
            spec["pool"] = int(token[4:])
        elif token.startswith("bank"):
            spec["bank"] = int(token[4:])
    return spec


def embed_raw(maps: dict[str, torch.Tensor], layers: tuple[str, ...], pool: int) -> torch.Tensor:
    """(N, h*w, D) patch embeddings as the detector builds them (anomalib's pooling + bilinear
    upsampling to the first layer's grid + concatenation) from cached raw maps."""
    pooler = torch.nn.AvgPool2d(pool, 1, pool // 2)
    out = []
    n = len(maps[layers[0]])
    for start in range(0, n, 64):
        parts = [pooler(maps[k][start : start + 64].float()) for k in layers]
        emb = parts[0]
        for p in parts[1:]:
            emb = torch.cat([emb, F.interpolate(p, size=emb.shape[-2:], mode="bilinear")], 1)
        b, d, h, w = emb.shape
        out.append(emb.permute(0, 2, 3, 1).reshape(b, h * w, d))
    return torch.cat(out)


def nearest(patches: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """(N, P) distance of each patch to its nearest bank row."""
    out = torch.empty(patches.shape[:2])
    bank_sq = (bank * bank).sum(1)
    for i in range(len(patches)):
        x = patches[i].float()
        d2 = (x * x).sum(1)[:, None] - 2 * x @ bank.T + bank_sq[None]
        out[i] = d2.min(1).values.clamp_min(0).sqrt()
    return out


def reweighted(
    patches: torch.Tensor, dist: torch.Tensor, bank: torch.Tensor, k: int = 9
) -> torch.Tensor:
    """(N,) the paper's reweighted image score (as the detector computes it)."""
    s_star, top = dist.max(1)
    feature = patches[torch.arange(len(patches)), top].float()
    nearest_idx = torch.cdist(feature, bank).argmin(1)
    m_star = bank[nearest_idx]
    support = torch.cdist(m_star, bank).topk(k, dim=1, largest=False).indices
    d = torch.linalg.vector_norm(bank[support] - feature[:, None, :], dim=2)
    return (1.0 - torch.softmax(d, dim=1)[:, 0]) * s_star


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels.numpy(), scores.numpy()))


def run_variant(name: str, data: dict[str, Any], max_bank: int) -> dict[str, float]:
    from inspection.detectors.patchcore import greedy_coreset

    if "rot" in name:
        train = data["train"].reshape(-1, data["train"].shape[-1]).float()
        test = data["test"].float()
        channels = data["channels"]
    else:
        spec = parse_variant(name)
        max_bank = spec["bank"] or max_bank
        maps = data["train"]
        if spec["fit85"]:  # the images the product fits on: training.split_validation(seed 0)
            n = len(maps[spec["layers"][0]])
            order = np.random.default_rng(0).permutation(n)
            keep = torch.from_numpy(np.sort(order[max(1, round(n * 0.15)) :]))
            maps = {k: v[keep] for k, v in maps.items()}
        train_emb = embed_raw(maps, spec["layers"], spec["pool"])
        train = train_emb.reshape(-1, train_emb.shape[-1])
        del train_emb
        test = embed_raw(data["test"], spec["layers"], spec["pool"])
        channels = [int(data["train"][k].shape[1]) for k in spec["layers"]]
    scale = torch.ones(train.shape[1])
    if name.startswith("layernorm"):
        start = 0
        for c in channels:
            part = train[:, start : start + c]
            scale[start : start + c] = 1.0 / part.norm(dim=1).mean()
            start += c
    pool = train
    if "rot" in name:
        pool = torch.cat([train, torch.cat(data["train_aug"]).reshape(-1, train.shape[1]).float()])
    pool = pool * scale
    n_keep = max(1, min(max_bank, int(np.ceil(0.1 * len(pool)))))
    t0 = time.perf_counter()
    seed = parse_variant(name)["seed"] if "rot" not in name else 0
    chosen = greedy_coreset(pool, n_keep, seed=seed)
    select_s = time.perf_counter() - t0
    bank = pool[chosen].contiguous()
    test = test * scale
    dist = nearest(test, bank)
    labels = data["labels"]
    return {
        "reweighted": auroc(reweighted(test, dist, bank), labels),
        "max": auroc(dist.max(1).values, labels),
        "top1pct_mean": auroc(
            dist.topk(max(1, dist.shape[1] // 100), dim=1).values.mean(1), labels
        ),
        "top5pct_mean": auroc(dist.topk(max(1, dist.shape[1] // 20), dim=1).values.mean(1), labels),
        "dim": int(train.shape[1]),
        "select_s": round(select_s, 1),
        "bank": len(bank),
        "pool": len(pool),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument(
        "--variants", nargs="+", default=["base", "layernorm", "rot", "layernorm+rot"]
    )
    parser.add_argument("--max-bank", type=int, default=4096)
    parser.add_argument("--sets", nargs="+", default=list(SETS))
    parser.add_argument("--data-root", default="../shared/data")
    parser.add_argument("--name", default="patchcore-offline")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    out_json = OUT / f"{args.name}.json"
    rows: list[dict[str, Any]] = (
        json.loads(out_json.read_text())["rows"] if out_json.exists() else []
    )
    for dataset in args.sets:
        for variant in args.variants:
            if "rot" in variant:
                data = features(dataset, args.size, Path(args.data_root), True)
            else:
                data = raw_features(dataset, args.size, Path(args.data_root))
            result = run_variant(variant, data, args.max_bank)
            max_bank = (
                parse_variant(variant)["bank"] or args.max_bank
                if "rot" not in variant
                else args.max_bank
            )
            row = {
                "dataset": dataset,
                "features": "raw" if "rot" not in variant else "embedded",
                "size": args.size,
                "max_bank": max_bank,
                "variant": variant,
                **result,
            }
            logger.info("%s", row)
            rows = [
                r
                for r in rows
                if (r["dataset"], r["size"], r["max_bank"], r["variant"])
                != (dataset, args.size, max_bank, variant)
            ]
            rows.append(row)
            cols = [
                "dataset",
                "size",
                "max_bank",
                "variant",
                "reweighted",
                "max",
                "top1pct_mean",
                "top5pct_mean",
                "dim",
                "bank",
                "pool",
                "select_s",
            ]
            write_results(
                args.name, {**stamp(), "rows": rows}, ABOUT + markdown_table(rows, cols), OUT
            )


if __name__ == "__main__":
    main()
