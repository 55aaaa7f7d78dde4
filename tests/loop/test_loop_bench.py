"""Bench helpers: the seeded stream/evaluation split and the simulated station + operator."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from inspection.bench.loop_bench import Scored, _label, _record_stream, split_test
from inspection.data.imageset import ImageSet
from inspection.loop.dataset import labelled_inspections
from tests.conftest import synthetic_set

from .conftest import LoopDb


def test_split_is_stratified_disjoint_and_seeded() -> None:
    test = synthetic_set(32, 20, 15, seed=1)
    a, b = split_test(test, seed=0), split_test(test, seed=0)
    assert np.array_equal(a.stream, b.stream)
    assert not set(a.stream) & set(a.evaluation)
    assert sorted([*a.stream, *a.evaluation]) == list(range(len(test)))
    assert sum(test.labels[a.stream] == 0) == 10
    assert not np.array_equal(split_test(test, seed=1).stream, a.stream)


def test_simulated_station_and_operator(loop_db: LoopDb, tmp_path: Path) -> None:
    base = synthetic_set(32, 6, 6, seed=2)
    paths = []
    for i, image in enumerate(base.images):
        path = tmp_path / f"{i}.png"
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        paths.append(str(path))
    test = ImageSet(base.images, base.masks, base.defect_types, paths)
    raw = np.where(test.labels == 1, 2.0, 0.0)
    raw[0] = 2.0  # one false positive
    maps = np.zeros((len(test), 32, 32), np.float16)
    maps[:, 10:14, 10:14] = 5.0
    scored = Scored(raw, maps, threshold=1.0, pixel_threshold=1.0)
    stream = np.arange(len(test))
    recorded = _record_stream(
        loop_db.factory, loop_db.store, loop_db.station_id, None, test, stream, scored
    )  # type: ignore[arg-type]
    assert [f for _, _, f in recorded] == [bool(r > 1.0) for r in raw]
    labelled = _label(loop_db.factory, test, recorded, 4)
    assert labelled == [0, 6, 7, 8]
    with loop_db.factory() as session:
        got = labelled_inspections(session, loop_db.station_id)
    kinds = sorted((i.kind, i.defect_type) for i in got.items)
    assert kinds[-1] == ("normal", None)
    assert all(i.region == (10, 10, 4, 4) for i in got.items)
