"""Property-based fuzzing of what a station reads from outside: image files dropped into a
watched folder, and station configs (YAML text and already-parsed mappings).

The contract: bad input is refused with the package's specific error (``FrameError`` for a
frame, ``ConfigError`` for a config) and a readable message; nothing else escapes, and a
running station counts bad files and keeps going. Derandomized, so runs repeat.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inspection.errors import ConfigError, FrameError
from inspection.station.config import load_station_config, parse_station_config
from inspection.station.sources import decode_image
from tests.station.conftest import assert_accounted, make_config, make_station

FUZZ = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _encoded(ext: str, seed: int, h: int, w: int, channels: int) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (h, w) if channels == 1 else (h, w, channels)
    ok, buf = cv2.imencode(ext, rng.integers(0, 256, shape, dtype=np.uint8))
    assert ok
    return buf.tobytes()


@st.composite
def image_files(draw: st.DrawFn) -> tuple[str, bytes]:
    """A file name and its bytes: random noise, a truncated image, a mutated image, or a
    valid one under a wrong or right extension."""
    ext = draw(st.sampled_from(EXTENSIONS))
    name = f"cam{draw(st.integers(0, 999))}{ext}"
    kind = draw(st.sampled_from(["random", "truncated", "mutated", "header", "valid"]))
    if kind == "random":
        return name, draw(st.binary(max_size=2048))
    real_ext = draw(st.sampled_from([".png", ".jpg", ".bmp", ".tiff"]))
    data = _encoded(
        real_ext,
        draw(st.integers(0, 2**16)),
        draw(st.integers(1, 24)),
        draw(st.integers(1, 24)),
        draw(st.sampled_from([1, 3, 4])),
    )
    if kind == "truncated":
        return name, data[: draw(st.integers(0, max(0, len(data) - 1)))]
    if kind == "mutated":
        buf = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            buf[draw(st.integers(0, len(buf) - 1))] = draw(st.integers(0, 255))
        return name, bytes(buf)
    if kind == "header" and len(data) >= 26:  # absurd sizes in the header fields
        buf = bytearray(data)
        offset = draw(st.integers(0, min(32, len(buf) - 8)))
        struct.pack_into(
            "<ii",
            buf,
            offset,
            *draw(
                st.tuples(st.integers(), st.integers()).map(lambda t: (t[0] % 2**31, t[1] % 2**31))
            ),
        )
        return name, bytes(buf)
    return name, data


@FUZZ
@given(image_files())
def test_decode_image_returns_rgb_or_raises_frame_error(file: tuple[str, bytes]) -> None:
    name, data = file
    try:
        image = decode_image(data, name)
    except FrameError as exc:
        message = str(exc)
    else:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        assert image.size > 0
        return
    assert name in message


@pytest.mark.slow
@settings(
    max_examples=6,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(st.lists(image_files(), min_size=1, max_size=12, unique_by=lambda f: f[0]))
def test_a_station_on_a_folder_of_fuzzed_files_keeps_running(
    tmp_path_factory: pytest.TempPathFactory, db_factory: Any, files: list[tuple[str, bytes]]
) -> None:
    """Every file is either stored as a result or counted as a bad frame; nothing crashes."""
    tmp_path = tmp_path_factory.mktemp("fuzz-folder")
    watch = tmp_path / "share"
    watch.mkdir()
    for name, data in files:
        (watch / name).write_bytes(data)
    cam = {
        "type": "folder",
        "path": str(watch),
        "settle_s": 0.0,
        "poll_s": 0.02,
        "reconnect": {"initial_s": 0.01, "max_s": 0.05},
    }
    station = make_station(make_config(tmp_path, camera=cam), db_factory())
    station.start(max_frames=len(files))
    deadline = time.monotonic() + 30
    while not station.capture_finished and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = station.stop()
    assert_accounted(stats)
    c = stats["counters"]
    assert c["captured"] == len(files), c
    assert c["persisted"] + c["bad_frames"] == len(files), c
    assert c["persist_failures"] == 0
    assert station._capture is not None and station._capture.error is None
    assert station._scoring is not None and station._scoring.error is None
    assert station._persist is not None and station._persist.error is None


# -- station configs ---------------------------------------------------------------------------

KEYS = [
    "id",
    "line",
    "description",
    "camera",
    "detector",
    "retention",
    "pipeline",
    "outputs",
    "roi",
    "resize",
    "image_threshold",
    "pixel_threshold",
    "classifier",
    "retrain",
    "artifacts_dir",
    "type",
    "path",
    "fps",
    "seed",
    "size",
    "family",
    "url",
    "index",
    "credentials_env",
    "source",
    "bootstrap",
    "x",
    "y",
    "w",
    "h",
    "days",
    "frames",
    "schedule",
    "queue_size",
    "batch_size",
    "webhook",
    "reconnect",
    "initial_s",
    "max_s",
]
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.sampled_from(
        [
            "synthetic",
            "folder",
            "usb",
            "stream",
            "video",
            "bundle",
            "database",
            "disc",
            "all",
            "none",
            "*/5 * * * *",
            "rtsp://u:p@cam/s",
            "../../etc",
        ]
    )
)
config_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(KEYS) | st.text(max_size=8) | st.integers(), children, max_size=6
        )
    ),
    max_leaves=30,
)
config_dicts = st.dictionaries(
    st.sampled_from(KEYS) | st.text(max_size=8), config_values, max_size=10
)


def _valid_base(tmp_path: Path) -> dict[str, Any]:
    return make_config(tmp_path).model_dump(mode="json")


@FUZZ
@given(config_dicts)
def test_malformed_config_mappings_raise_config_error(data: dict[str, Any]) -> None:
    try:
        parse_station_config(data)
    except ConfigError as exc:
        message = str(exc)
    else:
        return
    assert message.strip()


@FUZZ
@given(st.data())
def test_mutated_valid_configs_raise_config_error_or_parse(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    base = _valid_base(tmp_path_factory.getbasetemp())
    section = data.draw(st.sampled_from(sorted(base)))
    if isinstance(base[section], dict) and base[section]:
        key = data.draw(st.sampled_from(sorted(base[section])))
        base[section] = {**base[section], key: data.draw(config_values)}
    else:
        base[section] = data.draw(config_values)
    try:
        parse_station_config(base)
    except ConfigError as exc:
        message = str(exc)
    else:
        return
    assert message.strip()


yaml_texts = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
    config_dicts.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.sampled_from(
        [
            "id: [",
            "{",
            "a: *anchor",
            "!!python/object:os.system {}",
            "- 1\n- 2",
            "''",
            "id: s\ncamera: {type: folder}",
            "? [a, b]\n: c",
            "id: s\nid: t",
            "camera:\n  type: stream\n  url: rtsp://admin:secret@cam/1",
        ]
    ),
)


@FUZZ
@given(yaml_texts, st.booleans())
def test_malformed_config_files_raise_config_error(
    tmp_path_factory: pytest.TempPathFactory, text: str, as_bytes: bool
) -> None:
    folder = tmp_path_factory.mktemp("cfg")
    path = folder / "station.yaml"
    if as_bytes:
        path.write_bytes(text.encode("utf-8", "surrogatepass")[:200] + b"\xff\xfe")
    else:
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_station_config(path)
    except ConfigError as exc:
        message = str(exc)
    else:
        return
    assert message.strip()
    if "admin:secret" in text:
        assert "secret" not in message, message  # credentials are never echoed
