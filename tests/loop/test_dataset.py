"""Dataset assembly: consensus of current labels, artifacts read back, stratified holdout."""

from __future__ import annotations

import numpy as np

from inspection.db.models import Verdict
from inspection.loop.dataset import (
    DEFECT,
    NORMAL,
    LabelledInspection,
    consensus,
    crop_around,
    labelled_inspections,
    load_images,
    split_holdout,
)

from .conftest import LoopDb, label, record


def test_consensus_rules() -> None:
    p, f = Verdict.PASS, Verdict.FAIL
    assert consensus([]) is None
    assert consensus([(p, None)]) == (NORMAL, None)
    assert consensus([(f, "crack"), (f, "hole"), (f, "crack")]) == (DEFECT, "crack")
    assert consensus([(f, "crack"), (p, None)]) is None  # disputed
    assert consensus([(f, None), (f, None), (p, None)]) == (DEFECT, None)


def _image(value: int) -> np.ndarray:
    return np.full((48, 64, 3), value, np.uint8)


def test_labelled_inspections_reads_current_labels_and_artifacts(loop_db: LoopDb) -> None:
    crop = np.full((20, 20, 3), 200, np.uint8)
    fp = record(loop_db, _image(10), flagged=True, region=(5, 5, 10, 10))
    defect = record(loop_db, _image(20), flagged=True, region=(10, 10, 8, 8), crop=crop)
    disputed = record(loop_db, _image(30), flagged=True)
    no_frame = record(loop_db, None, flagged=False)
    record(loop_db, _image(40), flagged=True)  # never labelled
    label(loop_db, fp, "fail", "stain")
    label(loop_db, fp, "pass")  # the operator changed their mind: the newest label counts
    label(loop_db, defect, "fail", "Crack")
    label(loop_db, defect, "fail", "crack", user=1)
    label(loop_db, disputed, "fail", "hole")
    label(loop_db, disputed, "pass", user=1)
    label(loop_db, no_frame, "pass")
    with loop_db.factory() as session:
        got = labelled_inspections(session, loop_db.station_id)
    assert got.disputed == [disputed]
    assert got.without_frame == [no_frame]
    by_id = {i.inspection_id: i for i in got.items}
    assert set(by_id) == {fp, defect}
    assert by_id[fp].kind == NORMAL
    assert by_id[fp].station_flagged
    assert by_id[defect].defect_type == "crack"  # type names are normalised by the repo
    assert by_id[defect].n_labels == 2
    assert by_id[defect].crop_key is not None
    assert got.counts()["false_positives"] == 1
    px = load_images(got.items, loop_db.store, 32)
    assert px.images.shape == (2, 32, 32, 3)
    defect_crop = px.crops[[i.inspection_id for i in px.items].index(defect)]
    assert defect_crop.shape == (20, 20, 3)
    assert abs(int(defect_crop.mean()) - 200) <= 2  # the stored crop, not one cut from the frame
    fp_crop = px.crops[[i.inspection_id for i in px.items].index(fp)]
    assert fp_crop.shape == (23, 23, 3)  # 8 px margin, clamped at the frame edge


def test_crop_around_clamps_to_frame() -> None:
    frame = np.zeros((40, 40, 3), np.uint8)
    assert crop_around(frame, (0, 0, 4, 4)).shape == (12, 12, 3)
    assert crop_around(frame, None).shape == (40, 40, 3)


def _item(i: int, kind: str, t: str | None = None) -> LabelledInspection:
    return LabelledInspection(i, kind, t, True, f"f{i}", None, None, 1)


def test_split_holdout_is_seeded_and_stratified() -> None:
    items = (
        [_item(i, NORMAL) for i in range(10)]
        + [_item(100 + i, DEFECT, "crack") for i in range(10)]
        + [_item(200, DEFECT, "rare")]
    )
    train, hold = split_holdout(items, 0.3, seed=7)
    train2, hold2 = split_holdout(list(reversed(items)), 0.3, seed=7)
    assert [i.inspection_id for i in hold] == [i.inspection_id for i in hold2]
    assert sum(i.kind == NORMAL for i in hold) == 3
    assert sum(i.defect_type == "crack" for i in hold) == 3
    assert all(i.defect_type != "rare" for i in hold)  # a single example stays in training
    assert len(train) + len(hold) == len(items)
    assert [i.inspection_id for i in split_holdout(items, 0.3, seed=8)[1]] != [
        i.inspection_id for i in hold
    ]
    del train2
