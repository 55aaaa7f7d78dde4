"""Synthetic inspections for the demo, the browser tests and the UI benchmark (no model needed).

Frames come from :mod:`inspection.data.synthetic` (real renders with exact defect masks);
heatmaps are made from those masks (blurred, plus low-frequency noise), so overlays and outlines
line up with the visible defects. Scores, verdicts, regions and types follow from the heatmap
and the station's thresholds, with a share of open-set "unknown" regions and of parts near the
threshold, so the review queue has every kind of item. A small pool of distinct frames is
rendered per station and reused (the artifact store is content-addressed, so 10,000 inspections
still store only the pool's files).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt
from sqlalchemy.orm import Session

from inspection.data.synthetic import DEFECT_TYPES, SyntheticLine
from inspection.db import repo
from inspection.db.models import ArtifactKind, ModelStatus, Station, Verdict, utcnow
from inspection.storage import ArtifactStore, encode_heatmap, heatmap_stats

log = logging.getLogger(__name__)

#: (station name, part family) of the synthetic line.
DEMO_STATIONS: tuple[tuple[str, str], ...] = (
    ("disc-press", "disc"),
    ("tile-glaze", "tile"),
    ("pcb-aoi", "pcb"),
)
LINE_NAME = "synthetic-line"
PIXEL_THRESHOLD = 0.5


@dataclass(frozen=True)
class PoolFrame:
    """One rendered part stored in the artifact store, ready to attach to inspections."""

    frame: repo.ArtifactData
    heatmap: repo.ArtifactData
    regions: tuple[tuple[int, int, int, int, float, float], ...]  # x, y, w, h, area, peak
    defect_type: str | None
    peak: float


@dataclass(frozen=True)
class SeedSummary:
    """What :func:`seed_synthetic_inspections` created."""

    station_ids: list[int]
    model_version_ids: list[int]
    inspection_ids: list[int]


def synthetic_heatmap(
    mask: npt.NDArray[np.bool_], rng: np.random.Generator, *, defect: bool
) -> npt.NDArray[np.float32]:
    """A plausible anomaly map for a part: the blurred defect mask on low-frequency noise."""
    size = mask.shape[0]
    coarse = rng.random((8, 8)).astype(np.float32)
    noise = cv2.resize(coarse, (mask.shape[1], size), interpolation=cv2.INTER_CUBIC)
    heat = 0.08 + 0.22 * np.clip(noise, 0, 1)
    if defect and mask.any():
        blob = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=max(1.5, size / 90))
        blob /= max(float(blob.max()), 1e-6)
        heat = np.maximum(heat, blob * rng.uniform(0.75, 1.0))
    return np.asarray(heat, dtype=np.float32)


def _regions(
    heat: npt.NDArray[np.float32], threshold: float
) -> tuple[tuple[int, int, int, int, float, float], ...]:
    binary = (heat >= threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
    found = []
    for index in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[index])
        if area < 4:
            continue
        peak = float(heat[labels == index].max())
        found.append((x, y, w, h, float(area), peak))
    found.sort(key=lambda r: -r[5])
    return tuple(found[:5])


def render_pool(
    store: ArtifactStore,
    family: str,
    *,
    n_normal: int = 8,
    n_defect: int = 12,
    size: int = 256,
    seed: int = 0,
) -> list[PoolFrame]:
    """Render, store and describe ``n_normal + n_defect`` parts of one family."""
    line = SyntheticLine(family=family, size=size, seed=seed)
    rng = np.random.default_rng([seed, len(family)])
    samples = line.normals(n_normal) + line.defects(n_defect, start=1000)
    square = {"width_px": size, "height_px": size}  # a frame and its heatmap alike
    pool = []
    for sample in samples:
        ok, png = cv2.imencode(".png", cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise ValueError("PNG encoding of a synthetic frame failed")
        frame = store.put_bytes(bytes(png.tobytes()), ext="png")
        heat = synthetic_heatmap(sample.mask, rng, defect=sample.is_anomalous)
        stats = heatmap_stats(heat)
        stored_heat = store.put_bytes(encode_heatmap(heat), ext="npz")
        pool.append(
            PoolFrame(
                frame=repo.ArtifactData.from_stored(
                    frame,
                    kind=ArtifactKind.FRAME,
                    media_type="image/png",
                    **square,
                ),
                heatmap=repo.ArtifactData.from_stored(
                    stored_heat,
                    kind=ArtifactKind.HEATMAP,
                    media_type="application/x-npz",
                    **square,
                    heatmap_max=stats.max,
                    heatmap_mean=stats.mean,
                ),
                regions=_regions(heat, PIXEL_THRESHOLD),
                defect_type=sample.defect_type,
                peak=stats.max,
            )
        )
    return pool


def ensure_station(
    session: Session, name: str, *, family: str, metrics_seed: int = 0
) -> tuple[Station, int]:
    """The station (created with thresholds 0.5/0.5) and its active model version id.

    A new station gets an active ``v1`` and a ``v2`` candidate with slightly different
    metrics, so the models page has something to compare and promote.
    """
    station = repo.upsert_station(
        session,
        name=name,
        line_name=LINE_NAME,
        description=f"synthetic {family} parts",
        image_threshold=0.5,
        pixel_threshold=PIXEL_THRESHOLD,
    )
    active = repo.get_active_model(session, station.id)
    if active is not None:
        return station, active.id
    rng = np.random.default_rng(metrics_seed)
    versions = []
    for index, detector in enumerate(("padim", "stfpm")):
        auroc = float(rng.uniform(0.93, 0.985))
        version = repo.register_model_version(
            session,
            station_id=station.id,
            name=f"{name}-v{index + 1}",
            detector_type=detector,
            artifact_path=f"models/{name}/v{index + 1}",
            metrics={
                "image_auroc": round(auroc, 4),
                "pixel_pro": round(float(rng.uniform(0.80, 0.93)), 4),
                "f1": round(auroc - float(rng.uniform(0.03, 0.08)), 4),
                "latency_ms": round(float(rng.uniform(9, 25)), 2),
            },
            registered_by="system:seed",
        )
        versions.append(version)
    repo.set_model_status(
        session,
        model_version_id=versions[0].id,
        status=ModelStatus.ACTIVE,
        changed_by="system:seed",
    )
    return station, versions[0].id


def seed_synthetic_inspections(
    session: Session,
    store: ArtifactStore,
    *,
    n_per_station: int = 60,
    stations: tuple[tuple[str, str], ...] = DEMO_STATIONS,
    span: dt.timedelta = dt.timedelta(hours=6),
    now: dt.datetime | None = None,
    defect_share: float = 0.45,
    unknown_share: float = 0.15,
    size: int = 256,
    seed: int = 0,
    key_prefix: str = "seed",
) -> SeedSummary:
    """Create stations, model versions and ``n_per_station`` inspections per station.

    Captures are spread over ``span`` before ``now``. About ``defect_share`` of the parts are
    defective; ``unknown_share`` of the defective ones get an open-set "unknown" region. The
    caller commits. Idempotent per ``key_prefix`` (re-running returns the stored inspections).
    """
    now = now or utcnow()
    rng = np.random.default_rng(seed)
    station_ids, model_ids, inspection_ids = [], [], []
    for s_index, (name, family) in enumerate(stations):
        station, model_id = ensure_station(
            session, name, family=family, metrics_seed=seed + s_index
        )
        station_ids.append(station.id)
        model_ids.append(model_id)
        pool = render_pool(store, family, size=size, seed=seed + s_index)
        normals = [p for p in pool if p.defect_type is None]
        defects = [p for p in pool if p.defect_type is not None]
        for i in range(n_per_station):
            is_defect = rng.random() < defect_share
            part = (
                defects[int(rng.integers(len(defects)))]
                if is_defect
                else normals[int(rng.integers(len(normals)))]
            )
            if is_defect:
                score = float(rng.uniform(0.52, 0.99))
            else:
                score = float(
                    rng.uniform(0.42, 0.56) if rng.random() < 0.15 else rng.uniform(0.02, 0.4)
                )
            verdict = Verdict.FAIL if score >= 0.5 else Verdict.PASS
            regions = []
            if is_defect:
                unknown = rng.random() < unknown_share
                for x, y, w, h, area, peak in part.regions:
                    regions.append(
                        repo.RegionData(
                            x=x,
                            y=y,
                            w=w,
                            h=h,
                            area_px=area,
                            score=round(peak, 4),
                            defect_type=None if unknown else part.defect_type,
                            confidence=None if unknown else round(float(rng.uniform(0.6, 0.98)), 3),
                            is_unknown=unknown,
                        )
                    )
            captured = now - span * float(rng.random())
            item = repo.InspectionData(
                station_id=station.id,
                captured_at=captured,
                frame_ref=part.frame.store_key,
                model_version_id=model_id,
                raw_score=score * 3.2,
                norm_score=score,
                verdict=verdict,
                latency_ms=float(rng.uniform(9, 28)),
                idempotency_key=f"{key_prefix}-{i}",
                regions=regions,
                artifacts=[part.frame, part.heatmap],
            )
            inspection_ids.append(repo.record_inspection(session, item).id)
    log.info(
        "seeded %d synthetic inspections on %d stations", len(inspection_ids), len(station_ids)
    )
    return SeedSummary(
        station_ids=station_ids, model_version_ids=model_ids, inspection_ids=inspection_ids
    )


def ensure_defect_types(session: Session) -> None:
    """Create the synthetic line's defect types (so keys 1-5 exist before any label)."""
    for name in DEFECT_TYPES:
        repo.get_or_create_defect_type(session, name)
