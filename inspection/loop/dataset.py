"""The labelled data of a station, assembled from the database and the artifact store.

Operators label inspections (:class:`~inspection.db.models.OperatorLabel`); several operators
may label the same one and each may change their mind, so an inspection's label is the
*consensus* of the operators' current labels (majority verdict; for defects, the majority type
among the ``fail`` labels; a tie on the verdict leaves the inspection out as disputed).

* ``pass`` labels (operator-confirmed normals, including the station's false positives) join the
  normal set of the one-class detector and are the refiner's hard negatives;
* ``fail`` labels with a type train the open-set typer; every ``fail`` label is a positive for
  the supervised refinement and for calibrating the threshold.

Images come from the inspection's stored frame (what the station captured), preprocessed like
the station does (region of interest, resize or letterbox to the model side with the model's
``fit``); typer crops come from the stored crop of the inspection's strongest region, or are cut
from the frame around that region.
Inspections without a stored frame are skipped and counted.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from inspection.db.models import (
    Artifact,
    ArtifactKind,
    DefectRegion,
    DefectType,
    Inspection,
    OperatorLabel,
    Verdict,
)
from inspection.errors import ImageDecodeError, StorageError
from inspection.geometry import crop_box, letterbox_box
from inspection.runtime import preprocess
from inspection.storage import ArtifactStore

logger = logging.getLogger(__name__)

NORMAL = "normal"
DEFECT = "defect"


@dataclass(frozen=True)
class LabelledInspection:
    """One inspection with an agreed operator label and where its pixels are.

    Attributes:
        inspection_id: the inspection's id.
        kind: ``"normal"`` (operator says pass) or ``"defect"``.
        defect_type: agreed type name for defects (None: untyped defect or normal).
        station_flagged: the station's verdict was fail (a normal with this is a false positive).
        frame_key: artifact-store key of the captured frame (None: not stored).
        crop_key: key of the stored crop of the strongest region (None: not stored).
        region: strongest region's box ``(x, y, w, h)`` in frame pixels (None: no region).
        n_labels: how many operators' current labels agreed on this.
    """

    inspection_id: int
    kind: str
    defect_type: str | None
    station_flagged: bool
    frame_key: str | None
    crop_key: str | None
    region: tuple[int, int, int, int] | None
    n_labels: int


@dataclass
class Assembly:
    """Result of :func:`labelled_inspections`: the usable items and what was left out."""

    items: list[LabelledInspection] = field(default_factory=list)
    disputed: list[int] = field(default_factory=list)
    without_frame: list[int] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Summary for the job record."""
        kinds = Counter(i.kind for i in self.items)
        return {
            "labelled": len(self.items) + len(self.disputed) + len(self.without_frame),
            "normals": kinds.get(NORMAL, 0),
            "false_positives": sum(1 for i in self.items if i.kind == NORMAL and i.station_flagged),
            "defects": kinds.get(DEFECT, 0),
            "disputed": len(self.disputed),
            "without_frame": len(self.without_frame),
        }

    def type_counts(self) -> dict[str, int]:
        """Labelled defects per type name (untyped defects under ``""``)."""
        return dict(Counter(i.defect_type or "" for i in self.items if i.kind == DEFECT))


def consensus(
    labels: Sequence[tuple[Verdict, str | None]],
) -> tuple[str, str | None] | None:
    """Agreed (kind, defect type) of current labels ``(verdict, type name)``; None if disputed.

    Majority verdict wins; for ``fail`` the most common non-empty type among the fail labels
    (ties: the first in ``labels`` order, i.e. the earliest operator id).
    """
    if not labels:
        return None
    fails = [t for v, t in labels if v == Verdict.FAIL]
    passes = len(labels) - len(fails)
    if len(fails) == passes:
        return None
    if passes > len(fails):
        return NORMAL, None
    types = [t for t in fails if t]
    if not types:
        return DEFECT, None
    counts = Counter(types)
    best = max(counts.values())
    return DEFECT, next(t for t in types if counts[t] == best)


def labelled_inspections(session: Session, station_id: int) -> Assembly:
    """Every labelled inspection of the station with its consensus label and artifact keys."""
    rows = session.execute(
        select(
            OperatorLabel.id,
            OperatorLabel.inspection_id,
            OperatorLabel.user_id,
            OperatorLabel.verdict,
            DefectType.name,
        )
        .join(Inspection, Inspection.id == OperatorLabel.inspection_id)
        .outerjoin(DefectType, DefectType.id == OperatorLabel.defect_type_id)
        .where(Inspection.station_id == station_id)
        .order_by(OperatorLabel.inspection_id, OperatorLabel.user_id, OperatorLabel.id)
    ).all()
    current: dict[int, dict[int, tuple[Verdict, str | None]]] = {}
    for _, inspection_id, user_id, verdict, type_name in rows:
        current.setdefault(inspection_id, {})[user_id] = (verdict, type_name)  # newest wins
    out = Assembly()
    if not current:
        return out
    ids = sorted(current)
    flagged: dict[int, bool] = {}
    frames: dict[int, str] = {}
    crops: dict[int, str] = {}
    regions: dict[int, tuple[int, int, int, int]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for ident, verdict in session.execute(
            select(Inspection.id, Inspection.verdict).where(Inspection.id.in_(chunk))
        ):
            flagged[ident] = verdict == Verdict.FAIL
        region_rows = session.execute(
            select(DefectRegion.inspection_id, DefectRegion.id, DefectRegion.x, DefectRegion.y)
            .add_columns(DefectRegion.w, DefectRegion.h)
            .where(DefectRegion.inspection_id.in_(chunk))
            .order_by(DefectRegion.inspection_id, DefectRegion.id)
        ).all()
        top_region: dict[int, int] = {}
        for inspection_id, region_id, x, y, w, h in region_rows:
            if inspection_id not in regions:  # lowest id = strongest region (stored first)
                regions[inspection_id] = (x, y, w, h)
                top_region[inspection_id] = region_id
        for inspection_id, kind, key, region_id in session.execute(
            select(Artifact.inspection_id, Artifact.kind, Artifact.store_key, Artifact.region_id)
            .where(Artifact.inspection_id.in_(chunk))
            .order_by(Artifact.id)
        ):
            if kind == ArtifactKind.FRAME:
                frames.setdefault(inspection_id, key)
            elif kind == ArtifactKind.CROP and region_id == top_region.get(inspection_id):
                crops.setdefault(inspection_id, key)
    for ident in ids:
        labels = list(current[ident].values())
        agreed = consensus(labels)
        if agreed is None:
            out.disputed.append(ident)
            continue
        if ident not in frames:
            out.without_frame.append(ident)
            continue
        kind, type_name = agreed
        out.items.append(
            LabelledInspection(
                inspection_id=ident,
                kind=kind,
                defect_type=type_name,
                station_flagged=flagged.get(ident, False),
                frame_key=frames[ident],
                crop_key=crops.get(ident),
                region=regions.get(ident),
                n_labels=len(labels),
            )
        )
    if out.disputed or out.without_frame:
        logger.info(
            "station %s: %d labelled inspections left out as disputed, %d without a stored frame",
            station_id,
            len(out.disputed),
            len(out.without_frame),
        )
    return out


def decode_image(data: bytes, what: str) -> np.ndarray:
    """Encoded image bytes (JPEG/PNG) -> (H, W, 3) uint8 RGB."""
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ImageDecodeError(f"cannot decode {what}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def crop_around(frame: np.ndarray, region: tuple[int, int, int, int] | None) -> np.ndarray:
    """The crop the station's typing step sees: the region with a 25 % (>= 8 px) margin.

    Mirrors :meth:`inspection.station.scoring.ScoringWorker._regions`; no region: the frame.
    """
    if region is None:
        return frame
    fh, fw = frame.shape[:2]
    x, y, w, h = region
    mx, my = max(8, w // 4), max(8, h // 4)
    cx0, cy0 = max(0, x - mx), max(0, y - my)
    cx1, cy1 = min(fw, x + w + mx), min(fh, y + h + my)
    crop = frame[cy0:cy1, cx0:cx1]
    return np.ascontiguousarray(crop) if crop.size else frame


@dataclass
class LoadedImages:
    """Pixels of labelled inspections, aligned with ``items``.

    Attributes:
        items: the inspections whose pixels could be read.
        images: (N, S, S, 3) uint8 model inputs (ROI + resize, as the station preprocesses).
        crops: N crops (H, W, 3) uint8 of the strongest region as the station stored them.
        frames: N full frames (H, W, 3) uint8 (to re-cut crops with a new model's map).
        failed: ids whose frame could not be read or decoded.
    """

    items: list[LabelledInspection]
    images: np.ndarray
    crops: list[np.ndarray]
    frames: list[np.ndarray] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def load_images(
    items: Sequence[LabelledInspection],
    store: ArtifactStore,
    size: int,
    roi: tuple[int, int, int, int] | None = None,
    fit: str = "stretch",
) -> LoadedImages:
    """Read and preprocess the frames (and crops) of ``items``; unreadable ones are skipped.

    ``fit``: the model's (``model.json`` ``input.fit``), so the images are what the station fed it.
    """
    kept: list[LabelledInspection] = []
    images: list[np.ndarray] = []
    crops: list[np.ndarray] = []
    frames: list[np.ndarray] = []
    failed: list[int] = []
    for item in items:
        try:
            assert item.frame_key is not None
            frame = decode_image(store.read(item.frame_key), f"frame {item.frame_key}")
            image = preprocess(frame, size, roi, fit)
            if item.crop_key is not None:
                crop = decode_image(store.read(item.crop_key), f"crop {item.crop_key}")
            else:
                crop = crop_around(frame, item.region)
        except (StorageError, ImageDecodeError, ValueError, OSError) as exc:
            logger.warning("inspection %s left out: %s", item.inspection_id, exc)
            failed.append(item.inspection_id)
            continue
        kept.append(item)
        images.append(image)
        crops.append(crop)
        frames.append(frame)
    stacked = np.stack(images) if images else np.zeros((0, size, size, 3), np.uint8)
    return LoadedImages(kept, stacked, crops, frames, failed)


def station_crop(
    frame: np.ndarray,
    anomaly_map: np.ndarray,
    pixel_threshold: float,
    roi: tuple[int, int, int, int] | None = None,
    min_area: int = 4,
    fit: str = "stretch",
) -> np.ndarray:
    """The crop a station running a model with this map would hand its typing step.

    ``anomaly_map`` is (S, S) at model input size, ``fit`` the model's; the strongest region
    of the map's valid region (as :func:`inspection.station.regions.find_regions` picks it) is
    mapped to frame pixels and cut with the station's margin. Used to train the typer on the
    crops the *new* model makes.
    """
    from inspection.station.regions import find_regions

    size = anomaly_map.shape[-1]
    fh, fw = frame.shape[:2]
    x0, y0, rw, rh = roi if roi is not None else (0, 0, fw, fh)
    rw, rh = min(rw, fw - x0), min(rh, fh - y0)
    valid = letterbox_box((rh, rw), size, fit)
    amap = crop_box(np.asarray(anomaly_map, dtype=np.float32).reshape(size, size), valid)
    boxes = find_regions(amap, pixel_threshold, max_regions=1, min_area=min_area)
    if not boxes:
        return frame
    sx, sy = rw / valid[2], rh / valid[3]
    box = boxes[0]
    region = (
        x0 + int(box.x * sx),
        y0 + int(box.y * sy),
        max(1, round(box.w * sx)),
        max(1, round(box.h * sy)),
    )
    return crop_around(frame, region)


def split_holdout(
    items: Sequence[LabelledInspection], fraction: float, seed: int
) -> tuple[list[LabelledInspection], list[LabelledInspection]]:
    """(train, holdout): a seeded, stratified split (normals and each defect type apart).

    Each stratum with at least two items gives ``round(fraction * n)`` (at least one) items to
    the holdout; a stratum of one stays in training (a new type needs its only example).
    """
    rng = np.random.default_rng(seed)
    strata: dict[str, list[LabelledInspection]] = {}
    for item in sorted(items, key=lambda i: i.inspection_id):
        key = NORMAL if item.kind == NORMAL else f"{DEFECT}:{item.defect_type or ''}"
        strata.setdefault(key, []).append(item)
    train: list[LabelledInspection] = []
    holdout: list[LabelledInspection] = []
    for key in sorted(strata):
        group = strata[key]
        order = rng.permutation(len(group))
        n_hold = 0 if len(group) < 2 else max(1, round(fraction * len(group)))
        n_hold = min(n_hold, len(group) - 1)
        hold = set(order[:n_hold].tolist())
        for i, item in enumerate(group):
            (holdout if i in hold else train).append(item)
    train.sort(key=lambda i: i.inspection_id)
    holdout.sort(key=lambda i: i.inspection_id)
    return train, holdout


def label_watermark(session: Session, station_id: int) -> int:
    """The newest label id of the station's inspections (0: none); changes with every label."""
    newest = session.scalar(
        select(func.max(OperatorLabel.id))
        .join(Inspection, Inspection.id == OperatorLabel.inspection_id)
        .where(Inspection.station_id == station_id)
    )
    return int(newest or 0)
