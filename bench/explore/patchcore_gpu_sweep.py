"""GPU sweep (exploration; results in ``bench/results/explore/patchcore-gpu-sweep.md``): PatchCore feature/bank/score variants + PaDiM + z-score ensembles on
the suite sets at 256 px. Fit on the product's 85 % split (seed 0), held-out 15 % normals for
ensemble normalisation; test labels only for the reported AUROC.

Standalone (plain timm + torch + OpenCV + scikit-learn, no ``inspection`` import) so it runs on a
lent GPU machine: copy it next to the output of ``patchcore_gpu_prep.py`` and run
``python3 .gpu/patchcore_gpu_sweep.py`` there (``DEV=cpu SETS=mvtec_screw`` for a CPU check).
"""

import json
import os
import pickle
import time
from pathlib import Path

import cv2
import numpy as np
import timm
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

dev = os.environ.get("DEV", "cuda")
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.environ.get("OUT", "/tmp")
SETS = tuple(os.environ.get("SETS", "mt-exp,elpv_solar,mvtec_screw").split(","))
T0 = time.time()


def log(*a):
    print(f"[{time.time() - T0:6.1f}s]", *a, flush=True)


model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
model.load_state_dict({k: v.float() for k, v in torch.load(f"{HERE}/lite0.pt").items()})
model = model.to(dev).eval()


def decode(blobs):
    return np.stack([cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_GRAYSCALE) for b in blobs])


@torch.no_grad()
def blocks(images, standardize):
    """dict block index -> (N, C, h, w) fp16 outputs of Lite0 blocks 0..6."""
    outs = {i: [] for i in range(7)}
    for s in range(0, len(images), 64):
        x = (
            torch.from_numpy(images[s : s + 64])
            .to(dev)
            .float()
            .div(255)[:, None]
            .expand(-1, 3, -1, -1)
        )
        if standardize:
            m = x.mean(dim=(1, 2, 3), keepdim=True)
            sd = torch.sqrt(((x - m) ** 2).mean(dim=(1, 2, 3), keepdim=True) + 1e-6)
            x = (x - m) / sd * 0.2 + 0.5
        x = (x - 0.5) / 0.5
        x = model.bn1(model.conv_stem(x))
        for i, b in enumerate(model.blocks):
            x = b(x)
            outs[i].append(x.half())
    return {i: torch.cat(v) for i, v in outs.items()}


def embed(maps, layers, pool=3):
    """(N, P, D) float patch embeddings (anomalib PatchCore: avg pool k, bilinear to first grid)."""
    res = []
    n = len(maps[layers[0]])
    for s in range(0, n, 128):
        parts = [
            F.avg_pool2d(maps[k][s : s + 128].float(), pool, 1, pool // 2)
            if pool > 1
            else maps[k][s : s + 128].float()
            for k in layers
        ]
        e = parts[0]
        for p in parts[1:]:
            e = torch.cat([e, F.interpolate(p, size=e.shape[-2:], mode="bilinear")], 1)
        b, d, h, w = e.shape
        res.append(e.permute(0, 2, 3, 1).reshape(b, h * w, d))
    return torch.cat(res)


def coreset(pool, k, seed=0):
    n = len(pool)
    if k >= n:
        return torch.arange(n, device=dev)
    sq = (pool * pool).sum(1)
    g = torch.Generator().manual_seed(seed)
    idx = int(torch.randint(n, (1,), generator=g))
    mind = torch.full((n,), float("inf"), device=dev)
    sel = torch.empty(k, dtype=torch.long, device=dev)
    idx_t = torch.tensor(idx, device=dev)
    for i in range(k):
        sel[i] = idx_t
        d = sq - 2 * (pool @ pool[idx_t]) + sq[idx_t]
        torch.minimum(mind, d, out=mind)
        idx_t = torch.argmax(mind)
    return sel


def knn(patches, bank, k=1):
    """(N, P) mean distance to the k nearest bank rows."""
    out = []
    bsq = (bank * bank).sum(1)
    step = max(1, min(32, int(1e9 // (patches.shape[1] * len(bank)))))
    for s in range(0, len(patches), step):
        x = patches[s : s + step]
        d2 = (x * x).sum(2, keepdim=True) - 2 * x @ bank.T + bsq
        v = d2.topk(k, dim=2, largest=False).values.clamp_min(0).sqrt()
        out.append(v.mean(2))
    return torch.cat(out)


def image_scores(dist):
    p = dist.shape[1]
    srt = dist.sort(1, descending=True).values
    res = {"max": srt[:, 0]}
    for f in (0.005, 0.01, 0.02, 0.05):
        res[f"top{f * 100:g}"] = srt[:, : max(1, int(p * f))].mean(1)
    return res


def auroc(labels, s):
    return float(roc_auc_score(labels, s.detach().cpu().numpy()))


def padim(maps_fit, maps_val, maps_test, n_features=120, seed=0):
    layers = (1, 2, 4)

    def emb(maps):
        e = maps[layers[0]].float()
        for k in layers[1:]:
            e = torch.cat([e, F.interpolate(maps[k].float(), size=e.shape[-2:], mode="nearest")], 1)
        return e

    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(176, generator=g)[:n_features].to(dev)

    def emb_sel(maps):
        res = []
        n = len(maps[1])
        for s in range(0, n, 64):
            res.append(emb({k: v[s : s + 64] for k, v in maps.items()})[:, idx])
        return torch.cat(res)

    e = emb_sel(maps_fit)  # (N, D, h, w)
    n, d, h, w = e.shape
    e = e.permute(2, 3, 0, 1).reshape(h * w, n, d)
    mean = e.mean(1)
    c = e - mean[:, None]
    cov = c.transpose(1, 2) @ c / (n - 1) + 0.01 * torch.eye(d, device=dev)
    inv = torch.linalg.inv(cov)
    del e, c

    def score(maps):
        t = emb_sel(maps)
        m, _, _, _ = t.shape
        t = t.permute(2, 3, 0, 1).reshape(h * w, m, d) - mean[:, None]
        dist = torch.einsum("pnd,pde,pne->pn", t, inv, t).clamp_min(0).sqrt()
        amap = dist.T.reshape(m, 1, h, w)
        amap = F.interpolate(amap, size=(256, 256), mode="bilinear")
        amap = torch.from_numpy(
            np.stack([cv2.GaussianBlur(a[0], (33, 33), 4) for a in amap.cpu().numpy()])
        ).to(dev)
        return amap.flatten(1).max(1).values

    return score(maps_val), score(maps_test)


def main():
    results = {}
    for name in SETS:
        d = pickle.loads(Path(f"{HERE}/{name}-256.pkl").read_bytes())
        train = decode(d["train"])
        test = decode(d["test"])
        labels = np.asarray(d["labels"]).astype(int)
        order = np.random.default_rng(0).permutation(len(train))
        n_val = max(1, round(len(train) * 0.15))
        fit_i, val_i = np.sort(order[n_val:]), np.sort(order[:n_val])
        log(name, "fit", len(fit_i), "val", len(val_i), "test", len(test), "std", d["standardize"])
        mfit = blocks(train[fit_i], d["standardize"])
        mval = blocks(train[val_i], d["standardize"])
        mtest = blocks(test, d["standardize"])
        log(name, "features", {k: tuple(v.shape[1:]) for k, v in mfit.items()})
        res = {}
        pv, pt = padim(mfit, mval, mtest)
        res["padim"] = {"max": auroc(labels, pt)}
        scores_for_ens = {"padim": (pv, pt)}
        log(name, "padim", res["padim"])
        variants = [
            ("L24", (2, 4), 3, 4096, 0, None),
            ("L24+full", (2, 4), 3, 10**9, 0, None),
            ("L24+random", (2, 4), 3, 4096, 0, "random"),
            ("L24+chz", (2, 4), 3, 4096, 0, "chz"),
            ("L24+lz", (2, 4), 3, 4096, 0, "lz"),
            ("L124", (1, 2, 4), 3, 4096, 0, None),
            ("L234", (2, 3, 4), 3, 4096, 0, None),
            ("L23", (2, 3), 3, 4096, 0, None),
            ("L245", (2, 4, 5), 3, 4096, 0, None),
            ("L246", (2, 4, 6), 3, 4096, 0, None),
            ("L2345", (2, 3, 4, 5), 3, 4096, 0, None),
            ("L34", (3, 4), 3, 4096, 0, None),
            ("L24+pool1", (2, 4), 1, 4096, 0, None),
            ("L24+pool5", (2, 4), 5, 4096, 0, None),
            ("L24+bank2048", (2, 4), 3, 2048, 0, None),
            ("L24+bank8192", (2, 4), 3, 8192, 0, None),
            ("L24+bank16384", (2, 4), 3, 16384, 0, None),
            ("L124+bank8192", (1, 2, 4), 3, 8192, 0, None),
            ("L234+bank8192", (2, 3, 4), 3, 8192, 0, None),
        ]
        if os.environ.get("VARIANTS"):
            variants = [v for v in variants if v[0] in os.environ["VARIANTS"].split(",")]
        for vname, layers, pool, bank_n, seed, norm in variants:
            t = time.time()
            pool_f = embed(mfit, layers, pool)
            n, p, dim = pool_f.shape
            flat = pool_f.reshape(n * p, dim)
            val_e = embed(mval, layers, pool)
            test_e = embed(mtest, layers, pool)
            if norm == "chz":
                mu, sd = flat.mean(0), flat.std(0) + 1e-3
                flat, val_e, test_e = (flat - mu) / sd, (val_e - mu) / sd, (test_e - mu) / sd
            elif norm == "lz":
                # each layer scaled to the same mean patch norm
                chans = [mfit[k].shape[1] for k in layers]
                scales = []
                s0 = 0
                for c in chans:
                    scales.append(
                        torch.full(
                            (c,), 1.0 / flat[:, s0 : s0 + c].norm(dim=1).mean().item(), device=dev
                        )
                    )
                    s0 += c
                sc = torch.cat(scales)
                flat, val_e, test_e = flat * sc, val_e * sc, test_e * sc
            row = {"dim": dim, "pool": len(flat)}
            per_seed = []
            for seed in (0,) if bank_n >= len(flat) else (0, 1, 2):
                n_keep = (
                    len(flat) if bank_n >= 10**9 else min(bank_n, int(np.ceil(0.1 * len(flat))))
                )
                if norm == "random":
                    sel = torch.randperm(len(flat), generator=torch.Generator().manual_seed(seed))[
                        :n_keep
                    ].to(dev)
                else:
                    sel = coreset(flat, n_keep, seed)
                bank = flat[sel].contiguous()
                row["bank"] = len(bank)
                r = {}
                for k in (1, 3):
                    dt = knn(test_e, bank, k)
                    dv = knn(val_e, bank, k)
                    st, sv = image_scores(dt), image_scores(dv)
                    for key in st:
                        r[f"k{k}_{key}"] = auroc(labels, st[key])
                    if k == 1 and seed == 0:
                        scores_for_ens[vname] = (sv["top1"], st["top1"])
                per_seed.append(r)
            for key in per_seed[0]:
                row[key] = float(np.mean([r[key] for r in per_seed]))
            row["k1_top1_seeds"] = [round(r["k1_top1"], 4) for r in per_seed]
            row["sec"] = round(time.time() - t, 1)
            res[vname] = row
            log(
                name,
                vname,
                {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()},
            )
            del flat, pool_f
            torch.cuda.empty_cache()

        # z-score ensembles on held-out normals
        def z(pair):
            v, t = pair
            return (t - v.mean()) / (v.std() + 1e-9)

        ens = {}
        for other in [k for k in scores_for_ens if k != "padim"]:
            a, b = z(scores_for_ens["padim"]), z(scores_for_ens[other])
            ens[f"padim+{other}:mean"] = auroc(labels, (a + b) / 2)
            ens[f"padim+{other}:max"] = auroc(labels, torch.maximum(a, b))
        res["ensembles"] = ens
        log(
            name,
            "ens",
            {
                k: round(v, 4)
                for k, v in ens.items()
                if "L24" in k and "+" not in k.split("padim+")[1][3:]
            },
        )
        results[name] = res
        Path(f"{OUT}/sweep.json").write_text(json.dumps(results, indent=1))
    # summary: per variant, mean and min over sets of k1_top1
    keys = [k for k in results[SETS[0]] if k not in ("padim", "ensembles")]
    for k in keys:
        vals = [results[s][k]["k1_top1"] for s in SETS if k in results[s]]
        print(
            f"{k:18s} "
            + " ".join(f"{v:.3f}" for v in vals)
            + f"  mean {np.mean(vals):.4f} min {min(vals):.3f}"
        )
    for k in results[SETS[0]]["ensembles"]:
        vals = [results[s]["ensembles"][k] for s in SETS if k in results[s]["ensembles"]]
        print(f"{k:30s} " + " ".join(f"{v:.3f}" for v in vals) + f"  mean {np.mean(vals):.4f}")
    print("padim", [round(results[s]["padim"]["max"], 3) for s in SETS])
    log("done")


if __name__ == "__main__":
    main()
