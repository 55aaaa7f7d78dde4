"""How fast can anything run these IRs here? Bare OpenVINO against anomalib's defaults (#20).

#20 asks the station at its defaults for >= 1.5x anomalib's ``OpenVINOInferencer`` at anomalib's
defaults (bf16 on this CPU) on the same IR. The station's own overhead is small (py-spy: under
2 % of a run in its Python), so the question is whether OpenVINO itself can go 1.5x faster
than anomalib's way of calling it on 2 cores. This measures the rate of bare inference with
nothing else in the process (no camera, queue, thresholds or database; the station's model
loader, :class:`inspection.runtime.OpenVinoModel`) under every setting the station could pick:

* ``lat`` = latency hint, one request, synchronous calls; ``tput`` = throughput hint, one
  thread per optimal request, each calling synchronously (all cores busy);
* batch 1, 4 and 8 frames per call (compiled for that batch);
* ``bf16`` (forced, whatever it flips: an upper bound) and ``f32`` runtime precision;
* the bundle's int8 IR (nncf post-training quantisation, scoring heads float), bf16 hint;
* PaDiM: ``repacked`` = without the station's in-place read of the inverse covariances
  (:func:`inspection.runtime.put_constants_first`), OpenVINO's own layout as anomalib has it;
  the other rows read them in place, as the station did at every batch size until the run
  below showed the cost (since then a static batch repacks: ``OpenVinoModel`` ``batch_size``).
  Only PaDiM has weights large enough for the swap; the other detectors' rows are unaffected.

Against ``anomalib_default`` = ``OpenVINOInferencer.predict`` on the same IR at its defaults
(best of three windows, :func:`inspection.bench.station_reference.anomalib_fps`). Every setting
is timed in turn in each round (interleaved, so drift of the shared machine hits all alike);
the table has the median over rounds and its ratio to anomalib's median.

Bundles: ``inspection bench station``'s (synthetic disc line, 256 px) under ``--workdir``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

from inspection.bench import station_bench as sb
from inspection.bench.report import markdown_table, stamp, write_results
from inspection.bench.station_reference import anomalib_fps, bare_fps


def settings(key: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(name, bundle subfolder, bare_fps keywords) of every setting timed for ``key``."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for precision in ("bf16", "f32"):
        for hint, short in (("latency", "lat"), ("throughput", "tput")):
            for batch in (1, 4, 8):
                kw = {"hint": hint, "batch": batch, "precision": precision}
                kw["constants_first"] = True  # as the station read PaDiM's until 2026-12-05
                out.append((f"{short}_b{batch}_{precision}", "fp32", kw))
    for hint, short in (("latency", "lat"), ("throughput", "tput")):
        for batch in (1, 4):
            kw = {"hint": hint, "batch": batch, "precision": "bf16", "constants_first": True}
            out.append((f"int8_{short}_b{batch}", "int8", kw))
    if key == "padim":
        for batch in (1, 4, 8):
            kw = {"hint": "latency", "batch": batch, "precision": "bf16", "constants_first": False}
            out.append((f"repacked_lat_b{batch}_bf16", "fp32", kw))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", default="padim,patchcore,stfpm,cutpaste")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--workdir", type=Path, default=Path("var/bench/station"))
    parser.add_argument("--name", default="station-ceiling")
    args = parser.parse_args()

    frames, _ = sb._test_set(256, 24)
    rounds: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for key in [k.strip() for k in args.detectors.split(",") if k.strip()]:
        todo = settings(key)
        rates: dict[str, list[float]] = {"anomalib_default": []}
        rates.update({name: [] for name, _, _ in todo})
        loads = []
        for r in range(args.rounds):
            loads.append(os.getloadavg()[0])
            with tempfile.TemporaryDirectory() as tmp:
                fps = anomalib_fps(args.workdir / key / "fp32", frames, args.seconds * 3, Path(tmp))
            rates["anomalib_default"].append(fps)
            rounds.append({"detector": key, "round": r, "setting": "anomalib_default", "fps": fps})
            for name, sub, kw in todo:
                fps = bare_fps(args.workdir / key / sub, frames, args.seconds, **kw)
                rates[name].append(fps)
                rounds.append({"detector": key, "round": r, "setting": name, "fps": fps})
                print(key, r, name, f"{fps:.1f}", flush=True)
        ref = statistics.median(rates["anomalib_default"])
        row: dict[str, Any] = {"detector": key, "anomalib_default_fps": ref}
        best_name, best = "", 0.0
        for name, values in rates.items():
            if name == "anomalib_default":
                continue
            med = statistics.median(values)
            row[f"{name}_x"] = med / ref
            if med > best:
                best_name, best = name, med
        row["best_setting"] = best_name
        row["best_fps"] = best
        row["best_x"] = best / ref
        row["load_avg"] = statistics.mean(loads)
        summary.append(row)

    payload = {**stamp(), "summary": summary, "rounds": rounds}
    short_cols = ["detector", "anomalib_default_fps", "best_setting", "best_fps", "best_x"]
    short_cols.append("load_avg")
    ratio_cols = sorted({c for s in summary for c in s if c.endswith("_x") and c != "best_x"})
    ratio_rows = [
        {"setting": c[:-2], **{s["detector"]: s.get(c) for s in summary}} for c in ratio_cols
    ]
    md = "\n\n".join(
        [
            (__doc__ or "").split("\n\n", 1)[1].strip(),
            "Method: `bench/explore/station_ceiling.py`. `best_x` = the fastest bare setting "
            "over anomalib's rate (medians over rounds); the ratio table gives every setting's "
            "median rate over anomalib's median; `load_avg` = mean 1-minute load average at "
            "the start of the rounds (2 cores).",
            markdown_table(summary, short_cols),
            markdown_table(ratio_rows, ["setting", *[s["detector"] for s in summary]]),
        ]
    )
    write_results(args.name, payload, md, Path("bench/results/explore"))


if __name__ == "__main__":
    main()
