"""Which inference precision a bundle may run at: checked once, at export.

CPUs with bf16 units (AVX512-BF16, AMX) run an FP32 IR about twice as fast in bf16 on
memory-bound graphs, but bf16 keeps 8 bits of mantissa: scores move, and a score that moves
across the image threshold calibrated in f32 flips a verdict. So a bundle says for itself
whether bf16 is safe. :func:`check_runtime_precision` scores held-out normal images and
synthetic defects painted onto them (:mod:`inspection.validation`: saturated and subtle kinds,
so some scores sit near the threshold) with the exported graph at f32 and at each candidate
precision, counts the verdicts (raw score above ``calibration.image_threshold``) that differ,
and records the result in ``model.json`` under ``runtime_precision``::

    "runtime_precision": {
        "max_flip_rate": 0.005,
        "n_images": 72, "n_normal": 24, "n_painted": 48,
        "cpu": "Intel(R) Xeon(R) ...", "cpu_capabilities": ["BF16", "FP32", ...],
        "candidates": {"bf16": {"verified": true, "flip_rate": 0.0, "flips": 0,
                                "max_rel_score_shift": 0.004, "pixel_flip_rate": 1e-5,
                                "ok": true}},
        "auto": "bf16",
        "weights": "fp16"
    }

``auto`` is what a station with ``inference_precision: auto`` runs on a CPU that has the
units (:func:`inspection.runtime.resolve_precision`); ``f32`` whenever a candidate could not be
verified (no held-out images, or the exporting CPU lacks the units: OpenVINO would then run
f32 under a bf16 hint and every check would pass vacuously) or flipped too many verdicts.

Mixed precision: when plain bf16 flips too many verdicts and the export hands over its graph,
parts of it are kept f32 while the rest runs bf16 (:data:`MIXED`, fastest first: the backbone's
stem, then stem and scoring head; :func:`inspection.ov_export.keep_f32` marks them with
OpenVINO's keep-precision attribute, which the CPU plugin honours under a bf16 hint). Each is
saved and checked like a bundle of its own, and the first that keeps the verdicts replaces the
bundle's graph: ``candidates.bf16`` is then its check, ``f32_parts`` (e.g. ``["stem"]``) and
``f32_ops`` say what stays f32, ``plain_bf16`` keeps the plain graph's check, and
``mixed_trials`` lists every trial (also when none passed and the bundle stays f32). A station
compiling the bundle in bf16 gets the mixed graph; anomalib's reference
(:func:`inspection.bench.station_reference.named_ir_copy`) gets the marks removed.

``weights``: how ``model.bin`` stores the weights. A bundle whose check passed is saved again
with fp16 weights (OpenVINO ``compress_to_fp16``: half the file; a 256 px PaDiM station
413 MiB resident instead of 689 MiB, because the CPU plugin's bf16 copy of the weights is
built from a file half the size) and checked again on THAT file, the one a station loads:
f32 and every passing candidate against the verdicts of the f32 weights. Only when all of
them keep the verdicts does the fp16 file replace the f32 one; ``candidates`` are then the
fp16 file's (``f32`` among them: a station on a CPU without bf16 units runs f32 on fp16
weights) and ``f32_weights`` keeps the first check. Otherwise the weights stay f32 and
``fp16_weights_rejected`` says what flipped. Bundles whose check fails stay f32 throughout.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Largest share of verdicts a faster precision may flip against f32 to be used by ``auto``.
MAX_FLIP_RATE = 0.005
#: Precisions tried, fastest first; each needs the OpenVINO CPU capability of the same name.
CANDIDATES = ("bf16",)
#: Parts of the graph kept f32 under bf16 (:func:`inspection.ov_export.keep_f32`), tried in
#: this order when plain bf16 flips too many verdicts: fastest first.
MIXED: tuple[tuple[str, ...], ...] = (("stem",), ("stem", "head"))
#: How ``model.bin`` holds the weights, per export ``precision``.
_WEIGHTS = {"fp32": "f32", "fp16": "fp16", "int8": "int8"}
#: Frames per inference call while checking.
_BATCH = 8


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _scores(model: Any, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    raw, maps = [], []
    for i in range(0, len(images), _BATCH):
        score, amap = model.infer_raw(images[i : i + _BATCH])
        raw.append(score)
        maps.append(amap)
    return np.concatenate(raw), np.concatenate(maps)


def check_images(normals: np.ndarray, seed: int = 0) -> tuple[np.ndarray, int]:
    """The images of the check: ``normals`` (N, S, S, 3) uint8, one saturated painted defect
    per normal image and one subtle one (:func:`inspection.validation.synthetic_defects`,
    :func:`~inspection.validation.subtle_defects`). Returns (images (3N, S, S, 3), N)."""
    from inspection.validation import subtle_defects, synthetic_defects

    loud, _ = synthetic_defects(normals, seed=seed)
    quiet, _ = subtle_defects(normals, copies=1, seed=seed + 1)
    return np.concatenate([normals, loud, quiet]), len(normals)


@dataclass(frozen=True)
class _Reference:
    """The check's images and their f32 verdicts, from the IR with f32 weights."""

    images: np.ndarray
    threshold: float
    pixel_threshold: float
    raw: np.ndarray
    maps: np.ndarray

    @property
    def scale(self) -> float:
        return max(float(np.abs(self.raw).max()), abs(self.threshold), 1e-12)


def _reference(bundle: Path, images: np.ndarray) -> _Reference:
    from inspection.runtime import OpenVinoModel

    model = OpenVinoModel(bundle, inference_precision="f32")
    raw, maps = _scores(model, images)
    return _Reference(images, model.image_threshold, model.pixel_threshold, raw, maps)


def _compare(bundle: Path, name: str, ref: _Reference, max_flip_rate: float) -> dict[str, Any]:
    """Verdicts of ``bundle`` compiled at precision ``name`` against the reference's."""
    from inspection.runtime import OpenVinoModel

    model = OpenVinoModel(bundle, inference_precision=name)
    raw, maps = _scores(model, ref.images)
    del model
    flips = int(np.count_nonzero((raw > ref.threshold) != (ref.raw > ref.threshold)))
    rate = flips / len(ref.images)
    pix_flips = np.count_nonzero((maps > ref.pixel_threshold) != (ref.maps > ref.pixel_threshold))
    logger.info(
        "precision check %s: %s flips %d of %d verdicts (%.2f %%, limit %.2f %%)",
        bundle,
        name,
        flips,
        len(ref.images),
        100 * rate,
        100 * max_flip_rate,
    )
    return {
        "verified": True,
        "flips": flips,
        "flip_rate": rate,
        "max_rel_score_shift": float(np.abs(raw - ref.raw).max() / ref.scale),
        "pixel_flip_rate": float(pix_flips) / ref.maps.size,
        "ok": rate <= max_flip_rate,
    }


def _candidates(
    bundle: Path, names: tuple[str, ...], caps: list[str], ref: _Reference, max_flip_rate: float
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        if name != "f32" and name.upper() not in caps:
            out[name] = {
                "verified": False,
                "reason": f"the exporting CPU has no {name} units: a check here would run f32",
            }
        else:
            out[name] = _compare(bundle, name, ref, max_flip_rate)
    return out


def _auto(candidates: dict[str, dict[str, Any]]) -> str:
    return next((n for n in CANDIDATES if candidates.get(n, {}).get("ok")), "f32")


def _try_fp16_weights(
    bundle: Path, ov_model: Any, record: dict[str, Any], ref: _Reference, max_flip_rate: float
) -> None:
    """Save ``ov_model`` with fp16 weights next to ``bundle``, check THAT file (f32 and each
    candidate against the f32 weights' verdicts) and move it into the bundle when every check
    passes; else keep the f32 weights and record why. Updates ``record``."""
    import openvino as ov

    trial = bundle / ".fp16-weights"
    shutil.rmtree(trial, ignore_errors=True)
    trial.mkdir()
    try:
        ov.save_model(ov_model, trial / "model.xml", compress_to_fp16=True)
        shutil.copy2(bundle / "model.json", trial / "model.json")
        names = ("f32", *(n for n in CANDIDATES if record["candidates"][n].get("ok")))
        checked = _candidates(trial, names, record["cpu_capabilities"], ref, max_flip_rate)
        if all(c["ok"] for c in checked.values()):
            os.replace(trial / "model.bin", bundle / "model.bin")
            os.replace(trial / "model.xml", bundle / "model.xml")
            record["f32_weights"] = record["candidates"]
            record["candidates"] = checked
            record["weights"] = "fp16"
        else:
            record["fp16_weights_rejected"] = checked
    finally:
        shutil.rmtree(trial, ignore_errors=True)


def _try_mixed(
    bundle: Path, ov_model: Any, record: dict[str, Any], ref: _Reference, max_flip_rate: float
) -> Any:
    """bf16 flipped too many verdicts: try each of :data:`MIXED` in turn (a copy of
    ``ov_model`` with those parts marked f32, :func:`inspection.ov_export.keep_f32`, saved and
    checked in bf16 as a bundle of its own) and move the first that keeps the verdicts into the
    bundle. Records ``mixed_trials``; when one is kept, ``f32_parts`` / ``f32_ops`` say which
    parts of the graph stay f32, its check becomes the bf16 candidate and the plain graph's
    moves to ``plain_bf16``. Returns the graph the bundle now holds."""
    import openvino as ov

    from inspection.ov_export import keep_f32

    trials: list[dict[str, Any]] = record.setdefault("mixed_trials", [])
    trial = bundle / ".mixed"
    for parts in MIXED:
        marked = ov_model.clone()
        n_ops = keep_f32(marked, parts)
        if n_ops == 0:
            trials.append({"f32_parts": list(parts), "ops": 0, "reason": "no such part"})
            continue
        shutil.rmtree(trial, ignore_errors=True)
        trial.mkdir()
        try:
            ov.save_model(marked, trial / "model.xml", compress_to_fp16=False)
            shutil.copy2(bundle / "model.json", trial / "model.json")
            checked = _candidates(trial, ("bf16",), record["cpu_capabilities"], ref, max_flip_rate)
            trials.append({"f32_parts": list(parts), "ops": n_ops, "bf16": checked["bf16"]})
            if checked["bf16"].get("ok"):
                os.replace(trial / "model.bin", bundle / "model.bin")
                os.replace(trial / "model.xml", bundle / "model.xml")
                record["plain_bf16"] = record["candidates"]["bf16"]
                record["candidates"]["bf16"] = checked["bf16"]
                record["auto"] = _auto(record["candidates"])
                record["f32_parts"] = list(parts)
                record["f32_ops"] = n_ops
                return marked
        finally:
            shutil.rmtree(trial, ignore_errors=True)
    return ov_model


def check_runtime_precision(
    bundle: str | Path,
    normals: np.ndarray | None,
    *,
    seed: int = 0,
    max_flip_rate: float | None = None,
    ov_model: Any = None,
) -> dict[str, Any]:
    """Compare the bundle's verdicts at each candidate precision with f32 (see module doc).

    ``normals``: held-out normal images (N, S, S, 3) uint8 at the bundle's input size (None or
    empty: nothing is verified and ``auto`` is ``f32``). ``max_flip_rate``: None is
    :data:`MAX_FLIP_RATE`. ``ov_model``: the graph the bundle holds with f32 weights; given,
    and a candidate passed, the bundle's weights are stored as fp16 (half the file, about 40 %
    less resident memory for weight-heavy graphs) when f32 and the passing candidates still
    keep the verdicts of the f32 weights on that fp16 file (the one a station loads); the
    candidates recorded are then the fp16 file's. Returns the ``runtime_precision`` record
    (``weights``: ``fp16`` or ``f32``); writing it into ``model.json`` is the caller's.
    """
    import openvino as ov

    from inspection.runtime import read_metadata

    bundle = Path(bundle)
    limit = MAX_FLIP_RATE if max_flip_rate is None else max_flip_rate
    caps = [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    record: dict[str, Any] = {
        "max_flip_rate": limit,
        "cpu": _cpu_name(),
        "cpu_capabilities": caps,
        "candidates": {},
        "auto": "f32",
        "weights": _WEIGHTS.get(str(read_metadata(bundle).get("precision")), "f32"),
    }
    if normals is None or len(normals) == 0:
        for name in CANDIDATES:
            record["candidates"][name] = {"verified": False, "reason": "no held-out images"}
        return record
    images, n_normal = check_images(np.asarray(normals, np.uint8), seed)
    record.update(n_images=len(images), n_normal=n_normal, n_painted=len(images) - n_normal)
    ref = _reference(bundle, images)
    record["candidates"] = _candidates(bundle, CANDIDATES, caps, ref, limit)
    record["auto"] = _auto(record["candidates"])
    if (
        ov_model is not None
        and record["auto"] == "f32"
        and record["candidates"]["bf16"]["verified"]
    ):
        ov_model = _try_mixed(bundle, ov_model, record, ref, limit)
    if ov_model is not None and record["auto"] != "f32":
        _try_fp16_weights(bundle, ov_model, record, ref, limit)
    return record
