"""Exploration for issue 22: head-based methods per feature level set, training data only.

Same nested inner leave-one-known-type-out splits as ``openset_select.py`` (test images never
read); one head per inner split (no cross-fitting: AUROC needs no threshold). Prints inner
AUROC per method and the known validation accuracy, per protocol and level set.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
from sklearn.metrics import roc_auc_score

from bench.explore.openset_select import OUT, cols, train_ids
from inspection.openset.config import HeadConfig, KnnConfig, method_config
from inspection.openset.head import head_outputs, train_head
from inspection.openset.methods import fit_state
from inspection.openset.scoring import score

METHODS = {
    "msp": method_config("msp"),
    "energy": method_config("energy"),
    "metric": method_config("metric"),
    "knn_b": KnnConfig(k=5),
    "knn_e": KnnConfig(space="embedding", k=5),
}


def main(level_sets: list[tuple[str, ...]], max_inner: int) -> None:
    result: dict[str, dict[str, dict[str, float]]] = {}
    for protocol in ("mt-open", "neu-open"):
        feats = np.load(OUT / f"{protocol}-views.npy", mmap_mode="r")
        meta = json.loads((OUT / f"{protocol}-ids.json").read_text())
        ids, types = meta["ids"], meta["types"]
        row = {i: n for n, i in enumerate(ids)}
        tr_ids = train_ids(protocol, ids, types)
        classes = sorted({types[i] for i in ids})
        rng = np.random.default_rng(0)
        splits = []
        for outer in classes:
            known = [c for c in classes if c != outer]
            for inner in known[:max_inner]:
                rest = [i for i in tr_ids if types[i] in known and types[i] != inner]
                unk = [row[i] for i in tr_ids if types[i] == inner]
                mask = rng.random(len(rest)) < 0.2
                bank = [(row[i], types[i]) for i, v in zip(rest, mask, strict=True) if not v]
                val = [(row[i], types[i]) for i, v in zip(rest, mask, strict=True) if v]
                splits.append((bank, val, unk))
        for levels in level_sets:
            c = cols(levels)
            aucs: dict[str, list[float]] = {m: [] for m in METHODS}
            accs = []
            t0 = time.time()
            for bank, val, unk in splits:
                names = sorted({t for _, t in bank})
                y = np.array([names.index(t) for _, t in bank])
                v = feats[[r for r, _ in bank]][:, :, c]
                _, nv, d = v.shape
                head = train_head(v.reshape(-1, d), np.repeat(y, nv), len(names), HeadConfig())
                tr_out = head_outputs(head, v.reshape(-1, d))
                q = feats[[r for r, _ in val] + unk][:, 0, c]
                q_out = head_outputs(head, q)
                truth = np.r_[np.zeros(len(val)), np.ones(len(unk))]
                yv = np.array([names.index(t) for _, t in val])
                for m, cfg in METHODS.items():
                    st = fit_state(cfg, tr_out, np.repeat(y, nv), len(names))
                    s = score(st, q_out)
                    aucs[m].append(roc_auc_score(truth, s.unknown))
                    if m == "msp":
                        accs.append(float((s.predicted[: len(val)] == yv).mean()))
            key = "+".join(levels)
            entry = {m: float(np.mean(a)) for m, a in aucs.items()}
            entry["val_acc"] = float(np.mean(accs))
            result.setdefault(key, {})[protocol] = entry
            print(
                protocol,
                key,
                f"{time.time() - t0:.0f}s",
                " ".join(f"{m} {x:.3f}" for m, x in entry.items()),
                flush=True,
            )
    (OUT / "select-head.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    sets = [tuple(a.split("+")) for a in sys.argv[2:]]
    sys.exit(main(sets, int(sys.argv[1])))
