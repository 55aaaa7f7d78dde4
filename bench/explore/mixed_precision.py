"""Method check, not a benchmark: bf16 with parts of the graph kept f32 (issue #20).

Question: CutPaste, STFPM and PatchCore flip more than 0.5 % of their verdicts in bf16, so a
station at its defaults runs them f32 against anomalib's bf16. Does keeping some parts of the
graph f32 (:func:`inspection.ov_export.keep_f32`, OpenVINO's keep-precision attribute in the
IR) keep the verdicts, and how much of bf16's speed is left?

For each detector: the station bench's bundle trained on the synthetic line at 256 px (reused or
trained under ``--workdir``), its graph without marks (``plain``) and copies with ``head``,
``stem`` and ``stem+head`` kept f32, then

* flips: the export check's images (the 48 held-out normals :func:`prepare_bundles` holds out,
  one saturated and one subtle painted defect each, :func:`inspection.precision.check_images`
  with the detector's seed), f32 verdicts of the plain graph against bf16 on each graph
  (:mod:`inspection.precision`'s own comparison);
* the export itself: :func:`inspection.training.export_openvino` of the trained detector again
  with these held-out images, what it kept (``f32_parts``) and its record of each trial;
* what ran: layer types of each compiled runtime model per runtime precision;
* ms per image at batch 1 (latency hint, every core): every graph compiled in this one process
  and timed in turn, ``--repeats`` rounds of ``--seconds`` each, with the 1-minute load average
  before each round (the machine is shared). ``export`` is the re-exported bundle at
  ``inference_precision: auto`` (what a station at its defaults compiles).

    PYTHONPATH=. .venv/bin/python bench/explore/mixed_precision.py --detectors cutpaste,stfpm

writes ``bench/results/explore/mixed-precision.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from inspection import precision as prec
from inspection import training
from inspection.bench import station_bench as sb
from inspection.bench.report import markdown_table, stamp, write_results
from inspection.ov_export import drop_precision_marks, keep_f32
from inspection.runtime import OpenVinoModel

#: Graph variants: name -> parts kept f32 (none: plain bf16).
VARIANTS: dict[str, tuple[str, ...]] = {
    "bf16": (),
    "head": ("head",),
    "stem": ("stem",),
    "stem_head": ("stem", "head"),
}


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def variant_bundle(bundle: Path, out: Path, parts: tuple[str, ...]) -> int:
    """``bundle``'s graph without marks, then with ``parts`` kept f32, saved with the bundle's
    ``model.json`` in ``out``; returns the number of operations marked."""
    import openvino as ov

    model = ov.Core().read_model(bundle / "model.xml")
    drop_precision_marks(model)
    n = keep_f32(model, parts) if parts else 0
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, out / "model.xml", compress_to_fp16=False)
    shutil.copy2(bundle / "model.json", out / "model.json")
    return n


def runtime_layers(model: OpenVinoModel) -> dict[str, dict[str, int]]:
    """Layer types of the compiled runtime model, counted per runtime precision."""
    out: dict[str, Counter[str]] = {}
    for op in model.compiled.get_runtime_model().get_ops():
        rt = op.get_rt_info()
        kind = rt["layerType"].astype(str)
        if kind in ("Input", "Output", "Const", "Reorder"):
            continue
        out.setdefault(rt["runtimePrecision"].astype(str), Counter())[kind] += 1
    return {p: dict(c.most_common()) for p, c in sorted(out.items())}


def ms_per_image(model: OpenVinoModel, images: np.ndarray, seconds: float) -> float:
    """Mean ms per image of ``infer_raw`` on one image at a time over about ``seconds``."""
    for i in range(3):
        model.infer_raw(images[i : i + 1])
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model.infer_raw(images[n % len(images) : n % len(images) + 1])
        n += 1
    return 1000 * (time.perf_counter() - start) / n


def _trial(record: dict[str, Any], parts: list[str]) -> dict[str, Any]:
    for t in record.get("mixed_trials", []):
        if t["f32_parts"] == parts:
            return dict(t.get("bf16", {}))
    return {}


def detector_rows(
    key: str, workdir: Path, images: np.ndarray, repeats: int, seconds: float
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from inspection.data.synthetic import SyntheticLine

    bundle = sb.prepare_bundles(
        key, workdir, size=256, normals=100, precisions=["fp32"], quick=False, reuse=True
    )["fp32"]
    trained = training.load_trained(bundle)
    line = SyntheticLine("disc", size=256, seed=0)
    holdout = np.stack([s.image for s in line.normals(48, start=sb.TRAIN_OFFSET + 100)])
    dirs = {name: workdir / key / "mixed" / name for name in VARIANTS}
    marked = {name: variant_bundle(bundle, dirs[name], p) for name, p in VARIANTS.items()}
    check, _ = prec.check_images(holdout, seed=trained.detector.config.seed)
    ref = prec._reference(dirs["bf16"], check)
    flips = {name: prec._compare(d, "bf16", ref, prec.MAX_FLIP_RATE) for name, d in dirs.items()}
    exported = training.export_openvino(
        trained, workdir / key / "mixed" / "export", holdout=holdout
    )
    record = json.loads((exported / "model.json").read_text())["runtime_precision"]
    models = {"f32": OpenVinoModel(dirs["bf16"], inference_precision="f32", batch_size=1)}
    for name, d in dirs.items():
        models[name] = OpenVinoModel(d, inference_precision="bf16", batch_size=1)
    models["export"] = OpenVinoModel(exported, inference_precision="auto", batch_size=1)
    layers = {name: runtime_layers(m) for name, m in models.items() if name != "f32"}
    rounds: list[dict[str, Any]] = []
    for r in range(repeats):
        row: dict[str, Any] = {"detector": key, "round": r + 1, "load_avg": _load()}
        for name, model in models.items():
            row[f"{name}_ms"] = ms_per_image(model, images, seconds)
        rounds.append(row)
        print(key, {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()})
    med = {name: statistics.median(r[f"{name}_ms"] for r in rounds) for name in models}
    plain_export = record.get("plain_bf16") or record["candidates"]["bf16"]
    summary = {
        "detector": key,
        "images": len(check),
        **{f"{name}_flips": flips[name]["flips"] for name in VARIANTS},
        **{f"{name}_shift": flips[name]["max_rel_score_shift"] for name in VARIANTS},
        "export_plain_flips": plain_export.get("flips"),
        "export_stem_flips": _trial(record, ["stem"]).get("flips"),
        "export_stem_head_flips": _trial(record, ["stem", "head"]).get("flips"),
        "export_kept": "+".join(record.get("f32_parts", [])) or "-",
        "export_auto": record["auto"],
        "export_weights": record["weights"],
        **{f"{name}_ops": marked[name] for name in VARIANTS if name != "bf16"},
        **{f"{name}_ms": med[name] for name in models},
        "load_avg": statistics.mean(r["load_avg"] for r in rounds),
    }
    details = {"detector": key, "runtime_layers": layers, "export_record": record}
    return {**summary, "details": details}, rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", default="cutpaste,stfpm,patchcore")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--workdir", type=Path, default=Path("var/bench/station"))
    parser.add_argument("--name", default="mixed-precision")
    args = parser.parse_args()

    images, _ = sb._test_set(256, 24)
    summary: list[dict[str, Any]] = []
    rounds: list[dict[str, Any]] = []
    for key in [k.strip() for k in args.detectors.split(",") if k.strip()]:
        s, r = detector_rows(key, args.workdir, images, args.repeats, args.seconds)
        summary.append(s)
        rounds.extend(r)
    payload = {**stamp(), "summary": summary, "rounds": rounds}
    table = [{k: v for k, v in s.items() if k != "details"} for s in summary]
    flip_cols = ["detector", "images"] + [c for c in table[0] if "flips" in c or "shift" in c]
    flip_cols += ["export_kept", "export_auto", "export_weights", "head_ops", "stem_ops"]
    flip_cols += ["stem_head_ops"]
    time_cols = ["detector"] + [c for c in table[0] if c.endswith("_ms")] + ["load_avg"]
    layers = [
        f"- {s['detector']} {name}: " + json.dumps(kinds, sort_keys=True)
        for s in summary
        for name, kinds in s["details"]["runtime_layers"].items()
    ]
    md = "\n\n".join(
        [
            "bf16 with parts of the graph kept f32 (`inspection.ov_export.keep_f32`: `head` = "
            "everything after the last multi-channel convolution, `stem` = the convolutions "
            "before the second downsampling and the input normalisation) on the station "
            "bench's bundles (synthetic disc line, 256 px, the fp32 bundle's graph without "
            "marks as `plain`). Flips: verdicts of the export check's images (48 held-out "
            "normals + 96 painted) that differ from plain f32 (limit 0.5 %: none of 144); "
            "`*_shift`: largest score change relative to the score scale. `export_*`: "
            "`training.export_openvino` run again on the trained detector (its own check of "
            "plain bf16 and each mixed trial, and what it kept). ms per image: batch 1, latency "
            "hint, every core, all graphs in one process timed in turn per round, median of "
            "the rounds (`export`: the re-exported bundle at `auto`); `load_avg`: mean "
            "1-minute load average before the rounds (2-core machine, shared with other "
            "jobs). Method: `bench/explore/mixed_precision.py`.",
            markdown_table(table, flip_cols),
            markdown_table(table, time_cols),
            "Compiled layers per runtime precision (bf16 hint):\n\n" + "\n".join(layers),
            markdown_table(rounds, list(rounds[0])),
        ]
    )
    write_results(args.name, payload, md, Path("bench/results/explore"))


if __name__ == "__main__":
    main()
