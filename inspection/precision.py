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
        "auto": "bf16"
    }

``auto`` is what a station with ``inference_precision: auto`` runs on a CPU that has the
units (:func:`inspection.runtime.resolve_precision`); ``f32`` whenever a candidate could not be
verified (no held-out images, or the exporting CPU lacks the units: OpenVINO would then run
f32 under a bf16 hint and every check would pass vacuously) or flipped too many verdicts.
"""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: Largest share of verdicts a faster precision may flip against f32 to be used by ``auto``.
MAX_FLIP_RATE = 0.005
#: Precisions tried, fastest first; each needs the OpenVINO CPU capability of the same name.
CANDIDATES = ("bf16",)
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


def check_runtime_precision(
    bundle: str | Path,
    normals: np.ndarray | None,
    *,
    seed: int = 0,
    max_flip_rate: float = MAX_FLIP_RATE,
) -> dict[str, Any]:
    """Compare the bundle's verdicts at each candidate precision with f32 (see module doc).

    ``normals``: held-out normal images (N, S, S, 3) uint8 at the bundle's input size (None or
    empty: nothing is verified and ``auto`` is ``f32``). Returns the ``runtime_precision``
    record; writing it into ``model.json`` is the caller's.
    """
    import openvino as ov

    from inspection.runtime import OpenVinoModel

    caps = [str(c) for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]
    record: dict[str, Any] = {
        "max_flip_rate": max_flip_rate,
        "cpu": _cpu_name(),
        "cpu_capabilities": caps,
        "candidates": {},
        "auto": "f32",
    }
    if normals is None or len(normals) == 0:
        for name in CANDIDATES:
            record["candidates"][name] = {"verified": False, "reason": "no held-out images"}
        return record
    images, n_normal = check_images(np.asarray(normals, np.uint8), seed)
    record.update(n_images=len(images), n_normal=n_normal, n_painted=len(images) - n_normal)
    ref = OpenVinoModel(bundle, inference_precision="f32")
    threshold, pixel_threshold = ref.image_threshold, ref.pixel_threshold
    raw32, maps32 = _scores(ref, images)
    del ref
    verdict32 = raw32 > threshold
    pix32 = maps32 > pixel_threshold
    scale = max(float(np.abs(raw32).max()), abs(threshold), 1e-12)
    for name in CANDIDATES:
        if name.upper() not in caps:
            record["candidates"][name] = {
                "verified": False,
                "reason": f"the exporting CPU has no {name} units: a check here would run f32",
            }
            continue
        model = OpenVinoModel(bundle, inference_precision=name)
        raw, maps = _scores(model, images)
        del model
        flips = int(np.count_nonzero((raw > threshold) != verdict32))
        rate = flips / len(images)
        record["candidates"][name] = {
            "verified": True,
            "flips": flips,
            "flip_rate": rate,
            "max_rel_score_shift": float(np.abs(raw - raw32).max() / scale),
            "pixel_flip_rate": float(np.count_nonzero((maps > pixel_threshold) != pix32))
            / pix32.size,
            "ok": rate <= max_flip_rate,
        }
        if rate <= max_flip_rate and record["auto"] == "f32":
            record["auto"] = name
        logger.info(
            "precision check %s: %s flips %d of %d verdicts (%.2f %%, limit %.2f %%)",
            Path(bundle).name,
            name,
            flips,
            len(images),
            100 * rate,
            100 * max_flip_rate,
        )
    return record
