"""The results page of ``inspection bench station`` (``station.md``) and its table columns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from inspection.bench.report import markdown_table

COLUMNS = [
    "detector",
    "variant",
    "frames_per_second",
    "anomalib_inferencer_fps",
    "anomalib_default_fps",
    "speedup_vs_anomalib",
    "speedup_vs_anomalib_default",
    "openvino_ceiling_fps",
    "ceiling_vs_anomalib",
    "infer_p50_ms",
    "cpu_percent",
    "cpu_ms_per_frame",
    "cpu_bound_fps",
    "rss_mib",
    "load_avg",
]
PACED_COLUMNS = [
    "detector",
    "variant",
    "camera_fps",
    "frames_captured",
    "frames_scored",
    "frames_persisted",
    "frames_dropped",
    "p50_ms",
    "p99_ms",
    "persisted_p99_ms",
]
PRECISION_COLUMNS = ["detector", "precision", "image_auroc", "openvino_fps", "bundle_mib"]
DEFAULTS_COLUMNS = [
    "detector",
    "frames_per_second",
    "anomalib_default_fps",
    "speedup_median",
    "speedup_min",
    "speedup_max",
    "pairs",
    "warm_start_s",
    "cold_start_s",
    "rss_mib",
    "settings",
    "bf16_flip_rate",
    "all_frames_accounted",
    "load_avg",
]


def markdown(payload: dict[str, Any]) -> str:
    """The results page: what was measured, then the tables."""
    parts = [
        f"Station runtime at {payload['size']}x{payload['size']} on {payload['cpu_count']} CPU "
        "cores, synthetic disc line (10 % defective), SQLite + local artifact store, every "
        "result persisted (frames and heatmaps kept for anomalous parts only). "
        "`load_avg` = the machine's 1-minute load average during the run (other jobs share "
        "the machine). Method: `inspection/bench/station_bench.py`.",
    ]
    parts += _defaults_markdown(payload)
    if not payload["runs"] and not payload["precision"]:  # --only-defaults
        return "\n\n".join(parts + _errors_markdown(payload))
    parts += [
        "## Throughput: camera always ready",
        "`variant` = b<frames per inference call> t<OpenVINO threads per model, auto = all "
        "cores> w<parallel scoring workers> r<inference requests each worker keeps in flight: "
        "r2 submits the next frame before finishing the last, r1 waits for each>, `tput` = "
        "OpenVINO throughput hint (parallel streams, one compiled model shared by the workers; "
        "otherwise the latency hint, with one compiled model per worker, threads unpinned when "
        "there are several). `frames_per_second` = results persisted per second, from the "
        "first frame read (model loaded, camera open) to the last result stored, "
        "over enough frames for about 8 s at anomalib's rate (600 to 12000); "
        "`anomalib_inferencer_fps` = anomalib "
        "`OpenVINOInferencer.predict` on the same IR with the station's default OpenVINO "
        "settings (latency hint, f32; inference only, nothing stored; best of three windows), `speedup_vs_anomalib` "
        "relative to it; `anomalib_default_fps` = the same with OpenVINO's defaults (bf16 "
        "inference on CPUs with bf16 units: faster on memory-bound graphs, shifted scores), "
        "`speedup_vs_anomalib_default` relative to that (how anomalib is used out of the box); "
        "`openvino_ceiling_fps` = bare batch-1 inference on the same IR with every core busy "
        "(throughput hint, compiled for batch 1, one thread per stream, no camera, queue or database): what a "
        "batch-1 pipeline could store per second at zero overhead (batched variants can pass "
        "it), and `ceiling_vs_anomalib` its ratio to anomalib's inferencer; "
        "`cpu_percent` of one core; `cpu_ms_per_frame` = "
        "CPU time of the station process per stored result and `cpu_bound_fps` = cores / that, "
        "the rate these cores could sustain without the other jobs sharing them (an upper "
        "bound, not a measurement).",
        markdown_table(payload["runs"], COLUMNS),
        f"## Latency and drops: camera at {payload['camera_fps']:g} frames/s",
        "`p50_ms`/`p99_ms` = capture -> verdict; `persisted_p99_ms` = capture -> row "
        "committed (results are written in batches); frames the pipeline could not take are "
        "dropped at the camera and counted.",
        markdown_table(payload["runs"], PACED_COLUMNS),
        *_paired_markdown(payload.get("paired") or []),
        "## Export precision: accuracy and bare inference speed",
        "Image AUROC on 100 good + 100 defective synthetic parts; `openvino_fps` = batch-1 "
        "`OpenVinoModel.predict` calls per second.",
        markdown_table(payload["precision"], PRECISION_COLUMNS),
    ]
    stage_rows = [
        {
            "detector": r["detector"],
            "variant": r["variant"],
            **{
                f"{k} p50/p99": f"{v['p50']:.1f} / {v['p99']:.1f}"
                for k, v in r["paced"]["stages_ms"].items()
            },
        }
        for r in payload["runs"]
    ]
    if stage_rows:
        cols = list(dict.fromkeys(k for row in stage_rows for k in row))
        parts += [
            f"## Per-stage latency at {payload['camera_fps']:g} frames/s (ms)",
            markdown_table(stage_rows, cols),
        ]
    return "\n\n".join(parts + _errors_markdown(payload))


def _errors_markdown(payload: dict[str, Any]) -> list[str]:
    errors = payload.get("errors") or {}
    if not errors:
        return []
    return ["## Failed", "\n".join(f"- {k}: {v}" for k, v in errors.items())]


def _defaults_markdown(payload: dict[str, Any]) -> list[str]:
    defaults = payload.get("defaults") or {}
    lean = payload.get("lean_install")
    parts = ["## At its defaults: the station alone against anomalib at its defaults"]
    parts.append(
        f"Lean install (no `train` extra, `{lean['python']}`): {lean['env_mb']:.0f} MB on disk, "
        f"torch importable: {lean['torch_importable']}."
        if lean
        else "Lean install: not measured in this run (no `--lean-python`)."
    )
    if not defaults:
        return parts
    parts += [
        "The station with no setting in its file (batch, workers, requests in flight, "
        "performance hint and precision `auto`: `inspection/station/tuning.py`, "
        "`inspection.runtime.resolve_precision`) in a process of its own (it imports only what "
        "the station does), camera always ready, every result persisted, against anomalib's "
        "`OpenVINOInferencer` at its defaults (OpenVINO's: bf16 on CPUs with bf16 units; best "
        "of three windows) on the same IR, back to back `pairs` times; `speedup_median` = the "
        "median of the pairs' ratios. `settings` = what `auto` chose (b<batch> w<workers> "
        "r<requests per worker> hint precision). `bf16_flip_rate`: the share of verdicts bf16 "
        "flipped against f32 in the bundle's export check (`model.json` `runtime_precision`, "
        "`inspection/precision.py`); above 0.005 the station runs f32, while anomalib's "
        "defaults run bf16 whatever it flips. `cold_start_s`/`warm_start_s` = "
        "`inspection station run` start -> first stored result with an empty / filled OpenVINO "
        "compile cache, `rss_mib` = that process's peak resident memory while scoring "
        "(`inspection/bench/start_bench.py`). `all_frames_accounted`: captured = scored + "
        "dropped + bad and scored = persisted + failed in every run.",
        markdown_table([{"detector": k, **v} for k, v in defaults.items()], DEFAULTS_COLUMNS),
    ]
    return parts


def _paired_markdown(paired: Sequence[dict[str, Any]]) -> list[str]:
    if not paired:
        return []
    cols = [
        "detector",
        "variant",
        "pairs",
        "median_speedup_vs_anomalib",
        "min_speedup",
        "max_speedup",
        "median_station_fps",
        "median_anomalib_fps",
    ]
    each = [
        {"detector": p["detector"], "pair": i + 1, **r}
        for p in paired
        for i, r in enumerate(p["runs"])
    ]
    return [
        "## Paired: station and anomalib back to back",
        "Other jobs on this machine move every rate above by tens of percent from one minute "
        "to the next, so the station's fastest variant per detector was measured again in "
        "interleaved pairs: anomalib's `OpenVINOInferencer` (same settings as above, best of "
        "three windows), then the station's saturated run, right after each other. "
        "`median_speedup_vs_anomalib` = the median of the pairs' ratios.",
        markdown_table(list(paired), cols),
        markdown_table(each, list(each[0])),
    ]
