"""Camera sources: stream credentials from the environment, video files, synthetic pacing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from inspection.errors import CameraError, ConfigError, FrameError
from inspection.station.config import (
    StreamSourceConfig,
    SyntheticSourceConfig,
    VideoSourceConfig,
)
from inspection.station.sources import (
    END,
    Frame,
    StreamSource,
    SyntheticSource,
    VideoFileSource,
    decode_image,
    redact_url,
    resolve_stream_url,
)


def test_stream_credentials_come_from_environment() -> None:
    cfg = StreamSourceConfig(url="rtsp://{user}:{password}@cam1:554/s", credentials_env="CAM1")
    env = {"CAM1_USER": "op", "CAM1_PASSWORD": "p@ss:w/rd"}
    assert resolve_stream_url(cfg, env) == "rtsp://op:p%40ss%3Aw%2Frd@cam1:554/s"
    with pytest.raises(ConfigError, match="CAM1_PASSWORD is not set") as info:
        resolve_stream_url(cfg, {"CAM1_USER": "op"})
    assert "op" not in str(info.value).replace("CAM1", "")
    source = StreamSource(cfg)
    assert "p@ss" not in source.describe() and "cam1:554" in source.describe()
    assert redact_url("rtsp://op:secret@cam/s") == "rtsp://***@cam/s"


def test_unreachable_stream_is_a_camera_error(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setenv("CAMX_USER", "op")
    monkeypatch.setenv("CAMX_PASSWORD", "hunter2")
    cfg = StreamSourceConfig(
        url="rtsp://{user}:{password}@127.0.0.1:9/none",
        credentials_env="CAMX",
        open_timeout_s=0.5,
        read_timeout_s=0.5,
    )
    with pytest.raises(CameraError) as info:
        StreamSource(cfg).open()
    assert "hunter2" not in str(info.value) and "hunter2" not in caplog.text


def _write_video(path: Path, n: int) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (48, 32))
    assert writer.isOpened()
    for i in range(n):
        writer.write(np.full((32, 48, 3), 20 * i, np.uint8))
    writer.release()


def test_video_file_reads_to_end_and_loops(tmp_path: Path) -> None:
    video = tmp_path / "clip.avi"
    _write_video(video, 3)
    source = VideoFileSource(VideoSourceConfig(path=video))
    source.open()
    frames = [source.read() for _ in range(4)]
    assert all(isinstance(f, Frame) for f in frames[:3]) and frames[3] is END
    assert frames[0].image.shape == (32, 48, 3)  # type: ignore[union-attr]
    looping = VideoFileSource(VideoSourceConfig(path=video, loop=True))
    looping.open()
    assert all(isinstance(looping.read(), Frame) for _ in range(7))
    missing = VideoFileSource(VideoSourceConfig(path=tmp_path / "nope.avi"))
    with pytest.raises(CameraError):
        missing.open()


def test_synthetic_source_count_cache_and_truth() -> None:
    cfg = SyntheticSourceConfig(size=32, seed=1, defect_rate=0.5, count=5, cache=2)
    source = SyntheticSource(cfg)
    source.open()
    frames = [source.read() for _ in range(6)]
    assert frames[5] is END
    real = [f for f in frames if isinstance(f, Frame)]
    np.testing.assert_array_equal(real[0].image, real[2].image)  # cache of two parts replayed
    assert all(f.truth is not None for f in real)
    assert cfg.overflow_policy() == "wait"
    assert SyntheticSourceConfig(fps=30).overflow_policy() == "drop"


def test_decode_rejects_truncated_and_garbage() -> None:
    _ok, png = cv2.imencode(".png", np.zeros((8, 8), np.uint8))
    assert decode_image(png.tobytes(), "a.png").shape == (8, 8, 3)
    with pytest.raises(FrameError, match="truncated PNG"):
        decode_image(png.tobytes()[:-20], "a.png")
    with pytest.raises(FrameError, match="cannot decode"):
        decode_image(b"\x89PNG garbage IEND\xaeB`\x82", "b.png")
    with pytest.raises(FrameError, match="empty"):
        decode_image(b"", "c.jpg")
