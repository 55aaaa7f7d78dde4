"""Method check, not a benchmark: station vs anomalib's inferencer, measured in interleaved pairs.

Question: ``bench station`` measures anomalib's ``OpenVINOInferencer`` once per detector (best of
three windows) and then the station variants one after another. On this shared 2-core machine
anomalib's latency-hint rate for the small models swings between runs (OC-GAN: 745, 980 and
1270 frames/s in three runs), so one ratio can be lucky or unlucky. Here each pair measures
both back to back on the same IR (anomalib: best of three 1 s windows, as in the bench; the
station: its saturated run with every result persisted, for ``--variant``), several times, and
reports every pair's ratio and their median. Reads no labels; chooses nothing in the station.

    .venv/bin/python bench/explore/station_paired.py --detectors ocgan,ganomaly

reuses (or trains) the station bench's bundles under ``var/bench/station`` and writes
``bench/results/explore/station-paired.{json,md}``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any

from inspection.bench import station_bench as sb
from inspection.bench.report import markdown_table, stamp, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detectors", default="ocgan,ganomaly")
    parser.add_argument("--variant", default="1:auto:3:throughput")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--frames", type=int, default=8000)
    parser.add_argument("--workdir", type=Path, default=Path("var/bench/station"))
    args = parser.parse_args()

    variant = sb.Variant.parse(args.variant)
    images, _ = sb._test_set(256, 100)
    rows: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for key in [k.strip() for k in args.detectors.split(",") if k.strip()]:
        bundle = sb.prepare_bundles(
            key, args.workdir, size=256, normals=100, precisions=["fp32"], quick=False, reuse=True
        )["fp32"]
        ratios = []
        for pair in range(args.pairs):
            with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
                theirs = sb.anomalib_fps(bundle, images, 3.0, Path(tmp), sb.SAME_AS_STATION)
            ours = sb.station_run(
                bundle,
                args.workdir / key,
                size=256,
                frames=args.frames,
                batch_size=variant.batch_size,
                num_threads=variant.num_threads,
                infer_workers=variant.infer_workers,
                hint=variant.hint,
                requests_per_worker=variant.requests_per_worker,
            )
            ratio = ours["frames_per_second"] / theirs
            ratios.append(ratio)
            rows.append(
                {
                    "detector": key,
                    "pair": pair + 1,
                    "anomalib_inferencer_fps": theirs,
                    "station_fps": ours["frames_per_second"],
                    "ratio": ratio,
                    "frames_persisted": ours["frames_persisted"],
                    "load_avg": ours["load_avg"],
                }
            )
            print(
                f"{key} pair {pair + 1}: anomalib {theirs:.0f}, station {ours['frames_per_second']:.0f}, x{ratio:.2f}"
            )
        summary.append(
            {
                "detector": key,
                "variant": variant.label,
                "pairs": len(ratios),
                "median_ratio": statistics.median(ratios),
                "min_ratio": min(ratios),
                "max_ratio": max(ratios),
            }
        )
    payload = {**stamp(), "variant": variant.label, "summary": summary, "pairs": rows}
    md = "\n\n".join(
        [
            "Station (saturated, every result persisted) against anomalib's `OpenVINOInferencer` "
            "(latency hint, f32, best of three 1 s windows) on the same IR, measured back to back "
            "in each pair. Method: `bench/explore/station_paired.py`.",
            markdown_table(summary, list(summary[0])),
            markdown_table(rows, list(rows[0])),
        ]
    )
    write_results("station-paired", payload, md, Path("bench/results/explore"))


if __name__ == "__main__":
    main()
