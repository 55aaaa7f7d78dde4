"""The station's ``auto`` settings: how it scores, from the CPU cores and the bundle.

``pipeline.batch_size``, ``pipeline.infer_workers``, ``pipeline.requests_per_worker`` and
``detector.performance_hint`` default to ``auto``; :func:`resolve_tuning` turns them into
numbers when the station loads its first model. Settings given in the config are kept, and
the others are chosen to fit them.

Two kinds of graph, told apart by the size of their weights (``model.bin``), measured on the
station bench (``bench/results/station-variants-2026-11-27.md``, 256 px, 2 cores):

* **weight-heavy** (at least :data:`HEAVY_WEIGHTS_MB`, e.g. PaDiM's per-position inverse
  covariances, 230 MB at 256 px): each inference streams every weight from memory once,
  whatever the batch, so frames already waiting are scored together: batch
  :data:`HEAVY_BATCH` with the latency hint (all cores on one inference) and one compiled model
  (one copy of the weights): 80 frames/s against 40 at batch 1. The model is compiled for
  exactly that batch (``static_batch``; fewer waiting frames are padded), so OpenVINO repacks
  the weights once into its fast layout and the mapped file is handed back
  (:class:`inspection.runtime.OpenVinoModel` ``batch_size``): PaDiM at 256 px and bf16 then
  scores ~2x as fast as when a dynamic batch made it read them in place, in about the same
  memory (``bench/results/explore/station-ceiling.md``);
* **compute-bound** (convolutional networks, a few MB): batch 1 (compiled for a static shape),
  OpenVINO's throughput hint (the cores split into parallel streams) and one scoring worker per
  core plus one, so a stream never waits for Python's post-processing: 1.1-1.6x batch 1 on
  one latency-hinted worker.

Two requests in flight per worker in both cases (the next batch reaches OpenVINO before the
previous one is thresholded). Batches are only the frames already waiting (never waited for), so
at camera rate a verdict is not delayed by the batch size.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inspection.station.config import StationConfig

logger = logging.getLogger(__name__)

#: Weights (``model.bin``, MB) from which a graph counts as weight-heavy (memory-bound).
HEAVY_WEIGHTS_MB = 64.0
#: Frames per inference call of a weight-heavy graph.
HEAVY_BATCH = 4
#: Inference requests each scoring worker keeps in flight.
REQUESTS_PER_WORKER = 2
#: Most scoring workers (the config's limit).
MAX_WORKERS = 8


@dataclass(frozen=True)
class Tuning:
    """The station's resolved scoring settings (nothing ``auto`` left) and why."""

    batch_size: int
    infer_workers: int
    requests_per_worker: int
    performance_hint: str
    cores: int
    weights_mb: float
    reason: str
    #: compile for exactly ``batch_size`` frames per call (fewer are padded); else a dynamic
    #: batch (1..batch_size), or batch 1, which is static anyway
    static_batch: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity, e.g. a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def weights_mb(bundle: Path | None) -> float:
    """Size of the bundle's ``model.bin`` in MB (0 when there is none, e.g. a test fake)."""
    if bundle is None:
        return 0.0
    try:
        return (bundle / "model.bin").stat().st_size / 1e6
    except OSError:
        return 0.0


def resolve_tuning(config: StationConfig, bundle: Path | None, cores: int | None = None) -> Tuning:
    """The station's scoring settings: the config's, with each ``auto`` chosen (module doc)."""
    pipe, det = config.pipeline, config.detector
    cores = cores or usable_cores()
    mb = weights_mb(bundle)
    heavy = mb >= HEAVY_WEIGHTS_MB
    hint = det.performance_hint
    workers = pipe.infer_workers
    if hint == "auto":
        if workers != "auto":
            hint = "throughput" if workers > 1 and det.num_threads is None else "latency"
        elif heavy or det.num_threads is not None:
            hint = "latency"  # explicit threads per model only mean something per model
        else:
            hint = "throughput"
    n_workers: int = (
        workers if workers != "auto" else min(MAX_WORKERS, cores + 1) if hint == "throughput" else 1
    )
    batch: int = pipe.batch_size if pipe.batch_size != "auto" else HEAVY_BATCH if heavy else 1
    requests: int = (
        pipe.requests_per_worker if pipe.requests_per_worker != "auto" else REQUESTS_PER_WORKER
    )
    kind = "weight-heavy" if heavy else "compute-bound"
    reason = f"{kind} graph ({mb:.0f} MB of weights) on {cores} core{'s' * (cores != 1)}"
    return Tuning(batch, n_workers, requests, hint, cores, round(mb, 1), reason, heavy)
