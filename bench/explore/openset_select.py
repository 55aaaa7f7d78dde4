"""Exploration for issue 22: choose deep k-NN settings on training data only (nested LOO).

For every outer fold of ``mt-open`` and ``neu-open`` only the known types' *training* images are
used: each known type in turn plays "unknown" (inner leave-one-type-out); the others' training
images are split 80/20 (seeded, stratified) into bank and known validation. Reports the mean
inner AUROC per variant and protocol. Test images are never read.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

OUT = Path("runs/explore")
SLICES = {"b4": (0, 224), "b5": (224, 608), "b6": (608, 1248), "head": (1248, 3808)}


def train_ids(protocol: str, ids: list[str], types: dict[str, str]) -> list[str]:
    if protocol == "mt-open":
        from inspection.data.magnetic_tile import TRAIN_GROUPS, group_of

        return [i for i in ids if group_of(i) in TRAIN_GROUPS]
    from inspection.data.neu_surface import TEST_DIGITS

    return [
        i
        for i in ids
        if int("".join(c for c in Path(i).stem if c.isdigit())) % 10 not in TEST_DIGITS
    ]


def cols(levels: tuple[str, ...]) -> np.ndarray:
    return np.concatenate([np.arange(*SLICES[lv]) for lv in levels])


KS = (1, 5, 20)


def knn_scores(bank: np.ndarray, q: np.ndarray, std: bool) -> dict[int, np.ndarray]:
    if std:
        mu, var = bank.mean(0), bank.var(0)
        sc = 1 / np.sqrt(var + 0.01 * var.mean() + 1e-12)
        bank, q = (bank - mu) * sc, (q - mu) * sc
    bank = bank / np.linalg.norm(bank, axis=1, keepdims=True)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    sim = q @ bank.T
    top = -np.sort(np.partition(-sim, max(KS) - 1, axis=1)[:, : max(KS)], axis=1)
    return {k: np.sqrt(np.maximum(2 - 2 * top[:, k - 1], 0)) for k in KS}


def main() -> None:
    variants = list(
        itertools.product(
            [("b5", "b6"), ("b4", "b5", "b6"), ("b5",), ("b6",), ("b4", "b5", "b6", "head")],
            [False, True],  # standardise
            ["views"],
        )
    )
    table: dict[str, dict[str, float]] = {}
    for protocol in ("mt-open", "neu-open"):
        feats = np.load(OUT / f"{protocol}-views.npy")
        meta = json.loads((OUT / f"{protocol}-ids.json").read_text())
        ids, types = meta["ids"], meta["types"]
        row = {i: n for n, i in enumerate(ids)}
        tr_ids = train_ids(protocol, ids, types)
        classes = sorted({types[i] for i in ids})
        rng = np.random.default_rng(0)
        splits = []  # (bank rows, known val rows, unknown rows)
        for outer in classes:
            known = [c for c in classes if c != outer]
            for inner in known:
                rest = [i for i in tr_ids if types[i] in known and types[i] != inner]
                unk = [row[i] for i in tr_ids if types[i] == inner]
                val_mask = rng.random(len(rest)) < 0.2
                if protocol == "mt-open":  # hold out an acquisition group, as the protocol does
                    from inspection.data.magnetic_tile import group_of

                    val_mask = np.array([group_of(i) == 4 for i in rest])
                bank = [row[i] for i, v in zip(rest, val_mask, strict=True) if not v]
                val = [row[i] for i, v in zip(rest, val_mask, strict=True) if v]
                splits.append((bank, val, unk))
        print(protocol, len(splits), "inner splits", flush=True)
        for levels, std, bank_kind in variants:
            c = cols(levels)
            aucs: dict[int, list[float]] = {k: [] for k in KS}
            for bank, val, unk in splits:
                b = feats[bank][:, :, c] if bank_kind == "views" else feats[bank][:, :1, c]
                b = b.reshape(-1, len(c))
                q = feats[val + unk][:, 0, c]
                y = np.r_[np.zeros(len(val)), np.ones(len(unk))]
                for k, s in knn_scores(b, q, std).items():
                    aucs[k].append(roc_auc_score(y, s))
            for k in KS:
                key = f"{'+'.join(levels)} std={int(std)} k={k} {bank_kind}"
                table.setdefault(key, {})[protocol] = float(np.mean(aucs[k]))
                print(
                    f"{protocol} {key}: {np.mean(aucs[k]):.3f} (min {np.min(aucs[k]):.3f})",
                    flush=True,
                )
    rows = sorted(table.items(), key=lambda kv: -min(kv[1].values()))
    for key, v in rows[:15]:
        print(f"{key:40s} mt {v['mt-open']:.3f} neu {v['neu-open']:.3f} min {min(v.values()):.3f}")
    (OUT / "select-knn-grouped.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    sys.exit(main())
