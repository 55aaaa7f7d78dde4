"""Exploration, not a benchmark: STFPM on ``mt-exp`` over the paper's 100 epochs, test metrics per epoch.

Question: is STFPM held back on ``mt-exp`` by the 2-core CPU budget (which stops it at <= 30
epochs, and where label-free epoch selection keeps epoch 3)? This trains plain STFPM (Lite0
teacher, Lite0 student from scratch, photometric standardisation as the detector does) for 100
epochs on a GPU and reports test image / pixel AUROC after every few epochs. It reads test labels
after every epoch *by design*, so nothing in the detector is chosen from it; the best epoch it
shows is an upper bound no honest selection could beat.

Three steps, the middle one on a machine with a CUDA GPU and only torch, timm and OpenCV::

    .venv/bin/python bench/explore/stfpm_epochs.py pack --data ../shared/data/magnetic_tile --out .gpu
    python3 bench/explore/stfpm_epochs.py run --pack .gpu --out OUT '[{"name": ..., "epochs": 100,
        "lr": 0.4, "wd": 0.001, "batch": 16}]'
    .venv/bin/python bench/explore/stfpm_epochs.py report OUT/stfpm_explore.json

``report`` writes ``bench/results/explore/stfpm-epochs.{json,md}``.
"""

import json
import os
import pickle
import sys
import time

import numpy as np


def pack(data: str, out: str) -> None:
    """Write the mt-exp split (JPEG q95 at 256 px, packed masks) and the Lite0 weights to ``out``."""
    import cv2
    import torch

    from inspection.backbone import convert_lite0_state_dict, lite0_weights_path
    from inspection.data.magnetic_tile import mt_exp

    os.makedirs(out, exist_ok=True)
    sd = convert_lite0_state_dict(torch.load(lite0_weights_path(), map_location="cpu"))
    torch.save(
        {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, f"{out}/lite0.pth"
    )
    train, test = mt_exp(data, 256)

    def enc(a: np.ndarray) -> list[bytes]:
        return [
            cv2.imencode(".jpg", im[..., 0], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
            for im in a
        ]

    blob = {
        "train": enc(train.images),
        "test": enc(test.images),
        "labels": test.labels.astype(np.uint8),
        "masks": np.packbits(test.masks.astype(bool), axis=-1),
    }
    with open(f"{out}/mt.pkl", "wb") as fh:
        pickle.dump(blob, fh)


def report(path: str) -> None:
    """Write bench/results/explore/stfpm-epochs.{json,md} from a run's JSON."""
    from inspection.bench.report import stamp

    with open(path) as fh:
        runs = json.load(fh)
    meta = stamp()
    device = runs[0].get("device")
    payload = {
        "what": "exploration (test labels read every epoch; chooses nothing)",
        **meta,
        "machine": f"{device} (training run); report written on {meta['machine']}",
        "runs": runs,
    }
    os.makedirs("bench/results/explore", exist_ok=True)
    with open("bench/results/explore/stfpm-epochs.json", "w") as fh:
        json.dump(payload, fh, indent=1)
    lines = [
        "# STFPM on mt-exp, long training on a GPU (exploration)",
        "",
        f"commit `{meta['commit']}` · {meta['date']} · run on {runs[0].get('device')} · "
        "script `bench/explore/stfpm_epochs.py`",
        "",
        "Test image / pixel AUROC after each listed epoch. Test labels are read every epoch by "
        "design, so the best row is an upper bound for any epoch choice; nothing in the "
        "detector is chosen from this. STFPM: Lite0 teacher, Lite0 student(s) from scratch "
        "(students 3: the Uninformed-Students ensemble, mean regression error plus predictive "
        "variance, as the detector's `n_students`), "
        "per-image photometric standardisation, score = maximum of the smoothed product map; no "
        "training augmentation, no epoch selection; fit split = the engine's 539 images.",
        "",
    ]
    for r in runs:
        best = max(r["history"], key=lambda h: h["image_auroc"])
        lines += [
            f"## {r['name']}: lr {r['lr']}, weight decay {r['weight_decay']}, batch {r['batch']}, "
            f"students {r.get('students', 1)}",
            "",
            f"best epoch by test image AUROC: {best['epoch']} ({best['image_auroc']:.3f} / "
            f"{best['pixel_auroc']:.3f}); last epoch: {r['history'][-1]['image_auroc']:.3f} / "
            f"{r['history'][-1]['pixel_auroc']:.3f}",
            "",
            "| epoch | loss | image_auroc | pixel_auroc |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| {h['epoch']} | {h['loss']:.4f} | {h['image_auroc']:.3f} | {h['pixel_auroc']:.3f} |"
            for h in r["history"]
        ]
        lines.append("")
    with open("bench/results/explore/stfpm-epochs.md", "w") as fh:
        fh.write("\n".join(lines) + "\n")


def run(pack_dir: str, out_dir: str, specs: list[dict]) -> None:
    """Train and evaluate each spec on the GPU (torch, timm and OpenCV only)."""
    import cv2
    import timm
    import torch
    from torch.nn import functional as F

    dev = "cuda"
    torch.backends.cudnn.benchmark = True
    with open(f"{pack_dir}/mt.pkl", "rb") as fh:
        d = pickle.load(fh)

    def dec(bs):
        return np.stack([cv2.imdecode(np.frombuffer(b, np.uint8), 0) for b in bs])

    train, test = dec(d["train"]), dec(d["test"])
    labels = np.asarray(d["labels"]).astype(bool)
    masks = np.unpackbits(d["masks"], axis=-1)[..., :256].astype(bool)
    order = np.random.default_rng(0).permutation(len(train))
    train = train[np.sort(order[round(0.15 * len(train)) :])]  # the engine's fit split

    def prep(a):
        x = torch.from_numpy(a).float().div(255)[:, None].repeat(1, 3, 1, 1)
        m = x.mean((1, 2, 3), keepdim=True)
        sd = ((x - m) ** 2).mean((1, 2, 3), keepdim=True).add(1e-6).sqrt()
        x = (x - m) / sd * 0.2 + 0.5
        return ((x - 0.5) / 0.5).to(dev)

    Xtr, Xte = prep(train), prep(test)
    state = {k: v.float() for k, v in torch.load(f"{pack_dir}/lite0.pth").items()}

    def make(pretrained):
        m = timm.create_model(
            "tf_efficientnet_lite0", features_only=True, out_indices=(1, 2, 3), pretrained=False
        )
        if pretrained:
            res = m.load_state_dict(state, strict=False)
            assert not res.missing_keys, res.missing_keys[:5]
        return m.to(dev)

    def gauss(sigma=4.0):
        r = round(4 * sigma)
        x = torch.arange(-r, r + 1, dtype=torch.float32, device=dev)
        k = torch.exp(-(x**2) / (2 * sigma**2))
        return k / k.sum()

    K = gauss()

    def smooth(a):
        p = K.numel() // 2
        a = F.conv2d(F.pad(a, (p, p, 0, 0), mode="reflect"), K.view(1, 1, 1, -1))
        return F.conv2d(F.pad(a, (0, 0, p, p), mode="reflect"), K.view(1, 1, -1, 1))

    def auroc(s, y):
        s = torch.as_tensor(s, device=dev, dtype=torch.float32).flatten()
        y = torch.as_tensor(y, device=dev).flatten().bool()
        r = torch.empty_like(s)
        r[torch.argsort(s)] = torch.arange(1, len(s) + 1, device=dev, dtype=torch.float32)
        npos, nneg = y.sum().double(), (~y).sum().double()
        return float((r[y].double().sum() - npos * (npos + 1) / 2) / (npos * nneg))

    @torch.no_grad()
    def evaluate(teacher, students):
        for st in students:
            st.eval()
        maps = []
        for i in range(0, len(Xte), 64):
            x = Xte[i : i + 64]
            a = torch.ones(len(x), 1, 256, 256, device=dev)
            outs = [st(x) for st in students]
            for k, t in enumerate(teacher(x)):
                t = F.normalize(t, dim=1)
                preds = torch.stack([F.normalize(o[k], dim=1) for o in outs])
                mean = preds.mean(0)
                e = 0.5 * ((t - mean) ** 2).sum(1, keepdim=True)
                if len(students) > 1:  # Uninformed Students: add the predictive variance
                    e = e + 0.5 * preds.var(0, unbiased=False).sum(1, keepdim=True)
                a = a * F.interpolate(e, size=(256, 256), mode="bilinear", align_corners=False)
            maps.append(smooth(a))
        m = torch.cat(maps)
        score = m.amax(dim=(1, 2, 3))
        for st in students:
            st.train()
        return auroc(score, torch.from_numpy(labels)), auroc(m, torch.from_numpy(masks))

    def train_eval(name, epochs, lr, wd, batch, every=5, students=1):
        torch.manual_seed(0)
        teacher = make(True).eval()
        nets = [make(False).train() for _ in range(students)]
        params = [p for st in nets for p in st.parameters()]
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
        g = torch.Generator(device="cpu").manual_seed(0)
        hist = []
        t0 = time.time()
        for ep in range(1, epochs + 1):
            perm = torch.randperm(len(Xtr), generator=g)
            tot = 0.0
            for i in range(0, len(Xtr), batch):
                x = Xtr[perm[i : i + batch].to(dev)]
                with torch.no_grad():
                    ts = teacher(x)
                loss = 0.0
                for st in nets:
                    for t, s in zip(ts, st(x), strict=True):
                        h, w = t.shape[-2:]
                        loss = loss + 0.5 / (h * w) * (
                            (F.normalize(t, dim=1) - F.normalize(s, dim=1)) ** 2
                        ).sum() / len(x)
                opt.zero_grad()
                loss.backward()
                opt.step()
                tot += float(loss.detach()) * len(x)
            if ep in (1, 2, 3) or ep % every == 0:
                ia, pa = evaluate(teacher, nets)
                hist.append(
                    {"epoch": ep, "loss": tot / len(Xtr), "image_auroc": ia, "pixel_auroc": pa}
                )
                print(name, hist[-1], f"{time.time() - t0:.0f}s", flush=True)
        return {
            "name": name,
            "epochs": epochs,
            "lr": lr,
            "weight_decay": wd,
            "batch": batch,
            "students": students,
            "history": hist,
        }

    results = []
    device = torch.cuda.get_device_name(0)
    for spec in specs:
        results.append({**train_eval(**spec), "device": device})
        with open(os.path.join(out_dir, "stfpm_explore.json"), "w") as fh:
            json.dump(results, fh, indent=1)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "pack":
        pack(sys.argv[sys.argv.index("--data") + 1], sys.argv[sys.argv.index("--out") + 1])
    elif cmd == "run":
        run(
            sys.argv[sys.argv.index("--pack") + 1],
            sys.argv[sys.argv.index("--out") + 1],
            json.loads(sys.argv[-1]),
        )
    elif cmd == "report":
        report(sys.argv[2])
    else:
        raise SystemExit(f"unknown step {cmd!r}: pack, run or report")
