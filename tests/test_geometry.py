"""Input geometry: letterbox / stretch, the fit choice, loaders, station parity, metrics, bundles."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspection.data.folder import load_mvtec_folder, load_normal_folder
from inspection.data.imageset import ImageSet, from_samples, read_image
from inspection.evaluation import (
    COMPARE_SIZE,
    calibrate,
    comparison_pixels,
    evaluate,
    pixel_auroc,
)
from inspection.geometry import (
    choose_fit,
    crop_box,
    image_shapes,
    letterbox,
    letterbox_box,
    letterbox_mask,
    roi_shape,
    scale_box,
    unletterbox,
)
from inspection.runtime import preprocess, preprocess_box

# (h, w) -> pad box at 64 px: long side 64, centred
SHAPES = {
    "portrait": ((120, 40), (21, 0, 21, 64)),
    "landscape": ((30, 90), (0, 21, 64, 21)),
    "square": ((50, 50), (0, 0, 64, 64)),
}


def _gradient(h: int, w: int) -> np.ndarray:
    """A smooth (h, w, 3) uint8 RGB image (survives resizing round trips)."""
    yy, xx = np.mgrid[0:h, 0:w]
    r = 255 * xx / max(w - 1, 1)
    g = 255 * yy / max(h - 1, 1)
    b = 128 + 60 * np.sin(xx / 9.0) * np.cos(yy / 7.0)
    return np.stack([r, g, b], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_letterbox_boxes_and_round_trip(name: str) -> None:
    (h, w), want = SHAPES[name]
    image = _gradient(h, w)
    square, box = letterbox(image, 64, "pad")
    assert square.shape == (64, 64, 3) and square.dtype == np.uint8
    assert box == want == letterbox_box((h, w), 64, "pad")
    x, y, bw, bh = box
    # aspect ratio kept (to a pixel of rounding); the image fills the box exactly
    assert abs(bw / bh - w / h) <= max(w / h, h / w) / min(bw, bh) + 1e-9
    np.testing.assert_array_equal(
        crop_box(square, box), cv2.resize(image, (bw, bh), interpolation=cv2.INTER_AREA)
    )
    # padding replicates the image's border rows / columns
    if y > 0:
        np.testing.assert_array_equal(square[0], square[y])
        np.testing.assert_array_equal(square[-1], square[y + bh - 1])
    if x > 0:
        np.testing.assert_array_equal(square[:, 0], square[:, x])
        np.testing.assert_array_equal(square[:, -1], square[:, x + bw - 1])
    back = unletterbox(square.astype(np.float32), box, (h, w))
    assert back.shape == (h, w, 3)
    assert np.abs(back - image.astype(np.float32)).mean() < 6.0  # down to 64 px and back

    mask = np.zeros((h, w), bool)
    mask[h // 4 : h // 2, w // 4 : w // 2] = True
    mbox_square, mbox = letterbox_mask(mask, 64, "pad")
    assert mbox == box and mbox_square.dtype == bool
    outside = np.ones((64, 64), bool)
    outside[y : y + bh, x : x + bw] = False
    assert not mbox_square[outside].any()  # the padding is never defect
    mback = unletterbox(mbox_square.astype(np.uint8), mbox, (h, w), cv2.INTER_NEAREST) > 0
    assert (mback == mask).mean() > 0.97


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_stretch_is_todays_resize(name: str) -> None:
    (h, w), _ = SHAPES[name]
    image = _gradient(h, w)
    square, box = letterbox(image, 64, "stretch")
    assert box == (0, 0, 64, 64)
    np.testing.assert_array_equal(square, cv2.resize(image, (64, 64), interpolation=cv2.INTER_AREA))
    at_size = _gradient(64, 64)
    assert letterbox(at_size, 64, "stretch")[0] is at_size  # no copy on the hot path
    assert letterbox(at_size, 64, "pad")[0] is at_size
    back = unletterbox(np.ones((64, 64), np.float32), box, (h, w))
    assert back.shape == (h, w)


def test_letterbox_rejects_unknown_fit() -> None:
    with pytest.raises(ValueError, match="fit"):
        letterbox(_gradient(10, 10), 8, "crop")


def test_box_helpers() -> None:
    assert scale_box((0, 11, 64, 21), 64, 32) == (0, 6, 32, 10)  # edges rounded: 5.5 -> 6, 16
    assert scale_box((3, 4, 5, 6), 64, 64) == (3, 4, 5, 6)
    assert roi_shape((48, 144), None) == (48, 144)
    assert roi_shape((48, 144), (100, 10, 80, 20)) == (20, 44)  # clipped at the frame


@pytest.mark.parametrize(
    ("shapes", "fit"),
    [
        ([(256, 256)] * 3, "stretch"),  # squares stay exactly as today
        ([(100, 108), (100, 97)], "stretch"),  # nearly square, little spread
        ([], "stretch"),
        ([(100, 400)] * 3, "pad"),  # long, narrow (commutators)
        ([(400, 100)], "pad"),  # portrait
        ([(480, 640)], "pad"),  # 4:3 camera frames
        ([(100, 88), (100, 112)], "pad"),  # each within tolerance, but they vary
        ([(256, 256), (256, 256), (100, 300)], "pad"),  # one odd image is enough
    ],
)
def test_choose_fit(shapes: list[tuple[int, int]], fit: str) -> None:
    assert choose_fit(shapes) == fit


def test_image_shapes_reads_headers_and_skips_broken(tmp_path: Path) -> None:
    cv2.imwrite(str(tmp_path / "a.png"), _gradient(30, 70))
    cv2.imwrite(str(tmp_path / "b.jpg"), _gradient(80, 20))
    (tmp_path / "c.png").write_bytes(b"not an image")
    paths = sorted(tmp_path.iterdir())
    assert image_shapes(paths) == [(30, 70), (80, 20)]


# -- loaders ---------------------------------------------------------------------------------


def _write_folder(folder: Path, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i, (h, w) in enumerate(shapes):
        image = np.roll(_gradient(h, w), 7 * i, axis=1)
        cv2.imwrite(str(folder / f"{i:03d}.png"), image[..., ::-1])
        images.append(image)
    return images


def test_normal_folder_pad_boxes_and_auto(tmp_path: Path) -> None:
    shapes = [(40, 120), (40, 120), (120, 40), (50, 50)]
    originals = _write_folder(tmp_path / "good", shapes)
    padded = load_normal_folder(tmp_path / "good", size=32, fit="pad")
    assert padded.fit == "pad" and padded.images.shape == (4, 32, 32, 3)
    assert padded.boxes is not None
    assert padded.boxes.tolist() == [
        [0, 10, 32, 11],
        [0, 10, 32, 11],
        [10, 0, 11, 32],
        [0, 0, 32, 32],
    ]
    for i, image in enumerate(originals):
        np.testing.assert_array_equal(padded.images[i], letterbox(image, 32, "pad")[0])
    assert not padded.masks.any()
    auto = load_normal_folder(tmp_path / "good", size=32, fit="auto")
    assert auto.fit == "pad"
    np.testing.assert_array_equal(auto.images, padded.images)
    stretched = load_normal_folder(tmp_path / "good", size=32)  # default: as before
    assert stretched.fit == "stretch" and stretched.boxes is None
    for i, image in enumerate(originals):
        np.testing.assert_array_equal(
            stretched.images[i], cv2.resize(image, (32, 32), interpolation=cv2.INTER_AREA)
        )


def test_square_folder_auto_stays_stretch(tmp_path: Path) -> None:
    _write_folder(tmp_path / "good", [(48, 48)] * 3)
    auto = load_normal_folder(tmp_path / "good", size=32, fit="auto")
    plain = load_normal_folder(tmp_path / "good", size=32, fit="stretch")
    assert auto.fit == "stretch" and auto.boxes is None
    np.testing.assert_array_equal(auto.images, plain.images)


def test_mvtec_folder_pad_masks_and_test_fit(tmp_path: Path) -> None:
    root = tmp_path / "part"
    _write_folder(root / "train" / "good", [(40, 100)] * 3)
    _write_folder(root / "test" / "good", [(40, 100)])
    _write_folder(root / "test" / "dent", [(40, 100)])
    mask = np.zeros((40, 100), np.uint8)
    mask[10:30, 80:100] = 255  # touches the right edge of the part
    (root / "ground_truth" / "dent").mkdir(parents=True)
    cv2.imwrite(str(root / "ground_truth" / "dent" / "000_mask.png"), mask)
    train, test = load_mvtec_folder(root, size=50, fit="auto")
    assert train.fit == test.fit == "pad"
    box = (0, 15, 50, 20)  # 40 x 100 -> 20 x 50, centred
    assert test.boxes is not None and [tuple(b) for b in test.boxes] == [box, box]
    dent = test.defect_types.index("dent")
    m = test.masks[dent]
    assert m[15:35, 40:50].any() and not m[:15].any() and not m[35:].any()
    back = unletterbox(m.astype(np.uint8), box, (40, 100), cv2.INTER_NEAREST) > 0
    assert (back == (mask > 127)).mean() > 0.97


# -- station parity --------------------------------------------------------------------------


@pytest.mark.parametrize("fit", ["stretch", "pad"])
@pytest.mark.parametrize("shape", [(40, 130), (130, 40)])
def test_station_preprocess_equals_training_loader(
    tmp_path: Path, fit: str, shape: tuple[int, int]
) -> None:
    """The pixels a model is trained on are the pixels the station feeds it, in both fits."""
    originals = _write_folder(tmp_path / "good", [shape])
    loaded = load_normal_folder(tmp_path / "good", size=64, fit=fit)  # type: ignore[arg-type]
    frame = read_image(tmp_path / "good" / "000.png")  # what the camera delivers
    np.testing.assert_array_equal(frame, originals[0])
    image, box = preprocess_box(frame, 64, None, fit)
    np.testing.assert_array_equal(image, loaded.images[0])
    np.testing.assert_array_equal(preprocess(frame, 64, None, fit), loaded.images[0])
    assert box == loaded.box(0)
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)  # a mono camera: replicated to RGB
    assert preprocess(gray, 64, None, fit).shape == (64, 64, 3)


def test_station_preprocess_with_roi_letterboxes_the_region() -> None:
    frame = _gradient(100, 200)
    roi = (20, 10, 160, 40)
    image, box = preprocess_box(frame, 64, roi, "pad")
    assert box == (0, 24, 64, 16)
    np.testing.assert_array_equal(image, letterbox(frame[10:50, 20:180], 64, "pad")[0])


# -- image sets ------------------------------------------------------------------------------


def _padded_set() -> ImageSet:
    images = [_gradient(40, 100), _gradient(100, 40), _gradient(50, 50)]
    done = [letterbox(im, 32, "pad") for im in images]
    return from_samples(
        [d[0] for d in done],
        [np.zeros((32, 32), bool)] * 3,
        [None, "dent", None],
        ["a", "b", "c"],
        "pad",
        [d[1] for d in done],
    )


def test_imageset_carries_fit_and_boxes() -> None:
    s = _padded_set()
    assert s.boxes is not None
    assert s.subset([2, 0]).boxes.tolist() == [s.boxes[2].tolist(), s.boxes[0].tolist()]  # type: ignore[union-attr]
    normal = s.normal()
    assert normal.fit == "pad" and normal.ids == ["a", "c"]
    assert normal.boxes is not None and normal.boxes.tolist() == [
        s.boxes[0].tolist(),
        s.boxes[2].tolist(),
    ]
    both = ImageSet.concat([s, s.subset([1])])
    assert both.fit == "pad" and both.boxes is not None and len(both.boxes) == 4
    small = s.resized(16)
    assert small.fit == "pad" and small.images.shape[1:3] == (16, 16)
    assert small.boxes is not None and small.boxes[0].tolist() == [0, 4, 16, 7]
    stretched = ImageSet(s.images, s.masks, s.defect_types)
    assert stretched.fit == "stretch" and stretched.box(0) == (0, 0, 32, 32)
    assert stretched.valid_boxes().tolist() == [[0, 0, 32, 32]] * 3
    with pytest.raises(ValueError, match="fits"):
        ImageSet.concat([s, stretched])
    with pytest.raises(ValueError, match="fit"):
        ImageSet(s.images, s.masks, s.defect_types, fit="crop")
    with pytest.raises(ValueError, match="boxes"):
        ImageSet(s.images, s.masks, s.defect_types, fit="pad", boxes=np.zeros((2, 4)))


# -- metrics ---------------------------------------------------------------------------------


def test_evaluate_on_a_padded_set_ignores_the_padding() -> None:
    """Maps that are perfect inside each valid box and wild in the padding score perfectly."""
    rng = np.random.default_rng(0)
    n, size = 6, 32
    box = (0, 8, 32, 16)  # landscape 2:1 parts
    masks = np.zeros((n, size, size), bool)
    masks[3:, 12:18, 10:20] = True
    maps = rng.normal(1.0, 0.1, (n, 1, size, size)).astype(np.float32)
    maps[:, 0][masks] += 5.0
    maps[:3, 0, :8] = 50.0  # padding of normal images: hotter than any defect
    maps[:3, 0, 24:] = 50.0
    test = ImageSet(
        np.zeros((n, size, size, 3), np.uint8),
        masks,
        ["good"] * 3 + ["dent"] * 3,
        fit="pad",
        boxes=np.array([box] * n),
    )
    scores = maps.reshape(n, -1).max(1)
    cal = calibrate(scores[:3], maps[:3])
    result = evaluate(scores, maps, test, cal)
    assert result["pixel_auroc"] > 0.999  # bilinear blending at the mask edges only
    assert result["aupro"] > 0.99
    # the same numbers as cropping each box by hand and resizing it to the comparison size
    cmp_maps, cmp_masks = comparison_pixels(maps, test)
    assert cmp_maps.shape == cmp_masks.shape == (n, COMPARE_SIZE, COMPARE_SIZE)
    by_hand = np.stack(
        [cv2.resize(crop_box(m[0], box), (COMPARE_SIZE,) * 2) for m in maps]
    )  # bilinear
    np.testing.assert_allclose(cmp_maps, by_hand)
    # without the boxes the padding would count
    stretched = ImageSet(test.images, masks, test.defect_types)
    assert pixel_auroc(maps, masks) < 0.9
    assert evaluate(scores, maps, stretched, cal)["pixel_auroc"] < 0.9


def test_comparison_pixels_leaves_stretched_sets_alone() -> None:
    masks = np.zeros((2, 8, 8), bool)
    test = ImageSet(np.zeros((2, 8, 8, 3), np.uint8), masks, ["good", "good"])
    maps = np.ones((2, 1, 8, 8), np.float32)
    got_maps, got_masks = comparison_pixels(maps, test)
    assert got_masks is masks and got_maps.shape == (2, 8, 8)
    assert np.shares_memory(got_maps, maps)


# -- loop ------------------------------------------------------------------------------------


@pytest.mark.parametrize("fit", ["stretch", "pad"])
def test_station_crop_maps_a_letterboxed_map_to_the_frame(fit: str) -> None:
    from inspection.loop.dataset import station_crop

    frame = np.zeros((48, 144, 3), np.uint8)
    frame[16:32, 96:120] = 255
    image, _ = preprocess_box(frame, 64, None, fit)
    amap = image.mean(axis=2).astype(np.float32) / 255.0  # hot where the frame is bright
    crop = station_crop(frame, amap, 0.5, fit=fit)
    # the spot with the station's margin (8 px each side): bright pixels all inside the crop
    assert 16 * 24 <= int((crop[..., 0] == 255).sum()) <= 16 * 24
    assert crop.shape[0] <= 16 + 2 * 8 + 4 and crop.shape[1] <= 24 + 2 * 8 + 4


# -- bundles ---------------------------------------------------------------------------------


def test_padded_training_set_makes_a_pad_bundle_the_station_reads(tmp_path: Path) -> None:
    from inspection import training
    from inspection.detectors import registry
    from inspection.runtime import OpenVinoModel
    from tests.conftest import synthetic_set

    base = synthetic_set(96, 24, 0, seed=4)
    frames = [np.ascontiguousarray(im[24:72]) for im in base.images]  # 48 x 96 parts
    done = [preprocess_box(f, 64, None, "pad") for f in frames]
    normals = from_samples(
        [d[0] for d in done],
        [np.zeros((64, 64), bool)] * len(done),
        [None] * len(done),
        base.ids,
        "pad",
        [d[1] for d in done],
    )
    assert normals.box(0) == (0, 16, 64, 32)
    cls = registry.get("padim")
    trained = training.train(cls(cls.quick_config()), normals)
    assert trained.fit == "pad"
    bundle = training.export_openvino(trained, tmp_path / "bundle")
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["input"]["fit"] == "pad" and meta["input"]["size"] == 64
    model = OpenVinoModel(bundle)
    assert model.fit == "pad"
    assert training.load_trained(bundle).fit == "pad"
    # the station's preprocessing with the bundle's fit gives the training pixels
    station_input = preprocess(frames[0], model.size, None, model.fit)
    np.testing.assert_array_equal(station_input, normals.images[0])
    pred = model.predict(station_input[None])
    assert pred.anomaly_map.shape == (1, 64, 64)
    # bundles written before the fit existed stretch
    del meta["input"]["fit"]
    (bundle / "model.json").write_text(json.dumps(meta))
    assert OpenVinoModel(bundle).fit == "stretch"
    assert training.load_trained(bundle).fit == "stretch"
