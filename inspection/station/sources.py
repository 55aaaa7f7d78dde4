"""Camera sources: USB, RTSP/HTTP streams, video files, watched folders, the synthetic line.

Every source implements :class:`FrameSource`: ``open`` / ``read`` / ``close``. ``read`` returns
a :class:`Frame`, ``None`` when no frame is ready yet (it waits at most a fraction of a second
first), or :data:`END` when a finite source is exhausted. It raises
:class:`~inspection.errors.CameraError` when the camera is lost (the capture stage reconnects
with backoff) and :class:`~inspection.errors.FrameError` for one unusable frame (counted as a
bad frame and skipped). Frames are RGB ``uint8`` ``(H, W, 3)``.

OpenCV + NumPy only (the station hot path imports no torch).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import logging
import os
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, Literal, TypeVar

import cv2
import numpy as np

from inspection.errors import CameraError, ConfigError, FrameError
from inspection.station.config import (
    CameraConfig,
    FolderSourceConfig,
    StreamSourceConfig,
    SyntheticSourceConfig,
    UsbSourceConfig,
    VideoSourceConfig,
    _SourceBase,
)

logger = logging.getLogger(__name__)


@dataclass
class Frame:
    """One captured frame.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        ref: where it came from (file name, ``usb:0#17``, ``synthetic:disc:1:42``), stored as the
            inspection's ``frame_ref``; never contains credentials.
        key: a stable idempotency key when the source has one (folder files), else None (the
            pipeline then uses ``<run id>-<sequence>``).
        captured_at: aware UTC wall-clock time of capture.
        t_capture: ``time.perf_counter()`` at capture, for latencies.
        truth: ground truth when known (synthetic line: defect type or ``"good"``), never stored.
        seq: per-run sequence number, set by the capture stage.
    """

    image: np.ndarray
    ref: str
    key: str | None = None
    captured_at: dt.datetime | None = None
    t_capture: float = 0.0
    truth: str | None = None
    seq: int = -1


class _End:
    def __repr__(self) -> str:
        return "END"


#: Returned by :meth:`FrameSource.read` when a finite source has no more frames.
END: Final = _End()

ReadResult = Frame | _End | None


def _stamp(frame: Frame) -> Frame:
    frame.captured_at = dt.datetime.now(dt.UTC)
    frame.t_capture = time.perf_counter()
    return frame


def to_rgb(image: np.ndarray | None, ref: str) -> np.ndarray:
    """An OpenCV BGR/gray/BGRA image as (H, W, 3) uint8 RGB.

    Raises:
        FrameError: empty, or not an 8-bit 1/3/4-channel image.
    """
    if image is None or image.size == 0:
        raise FrameError(f"{ref}: empty frame")
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:  # 16-bit industrial cameras / TIFFs
            image = (image >> 8).astype(np.uint8)
        else:
            raise FrameError(f"{ref}: unsupported pixel type {image.dtype}")
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    raise FrameError(f"{ref}: unsupported frame shape {image.shape}")


class FrameSource(ABC):
    """A camera. ``overflow`` is what capture does when scoring falls behind (see config)."""

    overflow: Literal["drop", "wait"] = "drop"

    @abstractmethod
    def describe(self) -> str:
        """A short description safe to log (no credentials)."""

    @abstractmethod
    def open(self) -> None:
        """Connect. Raises :class:`CameraError` when the camera is unavailable."""

    @abstractmethod
    def read(self) -> ReadResult:
        """The next frame, None (nothing yet), or :data:`END`; see the module docstring."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the camera; safe to call when not open."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.describe()})"


# -- OpenCV VideoCapture sources ---------------------------------------------------------------


_Config = TypeVar("_Config", bound=_SourceBase)


class _CaptureSource(FrameSource, Generic[_Config]):
    """Shared VideoCapture handling for USB cameras, streams and video files.

    :meth:`read` is a live device's (``device`` names it when it stops delivering frames);
    video files read their own way.
    """

    device = "camera"

    def __init__(self, config: _Config) -> None:
        self.config = config
        self.overflow = config.overflow_policy()
        self._cap: Any = None
        self._n = 0

    def _open_capture(self) -> Any:
        raise NotImplementedError

    def open(self) -> None:
        self.close()
        cap = self._open_capture()
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise CameraError(f"cannot open camera {self.describe()}")
        self._cap = cap
        logger.info("camera %s opened", self.describe())

    def _grab(self) -> np.ndarray | None:
        if self._cap is None:
            raise CameraError(f"camera {self.describe()} is not open")
        ok, image = self._cap.read()
        return image if ok else None

    def _frame(self, image: np.ndarray, name: str) -> Frame:
        """The next frame of this source (numbered ``name#n``), in RGB and time-stamped."""
        self._n += 1
        ref = f"{name}#{self._n}"
        return _stamp(Frame(to_rgb(image, ref), ref))

    def read(self) -> ReadResult:
        image = self._grab()
        if image is None:
            raise CameraError(f"{self.device} {self.describe()} stopped delivering frames")
        return self._frame(image, self.describe())

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class UsbSource(_CaptureSource[UsbSourceConfig]):
    """A local camera by OpenCV device index."""

    def describe(self) -> str:
        return f"usb:{self.config.index}"

    def _open_capture(self) -> Any:
        cap = cv2.VideoCapture(self.config.index)
        if self.config.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
        if self.config.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
        if self.config.fps:
            cap.set(cv2.CAP_PROP_FPS, self.config.fps)
        return cap


def resolve_stream_url(config: StreamSourceConfig, environ: Mapping[str, str] | None = None) -> str:
    """The stream URL with ``{user}``/``{password}`` filled (URL-quoted) from the environment.

    Raises:
        ConfigError: a needed ``<credentials_env>_USER``/``_PASSWORD`` variable is not set (the
            message names the variable, never a value).
    """
    env = os.environ if environ is None else environ
    url = config.url
    if config.credentials_env is None:
        return url
    values = {}
    for field in ("user", "password"):
        if "{" + field + "}" not in url:
            continue
        var = f"{config.credentials_env}_{field.upper()}"
        value = env.get(var)
        if value is None:
            raise ConfigError(f"camera credentials: environment variable {var} is not set")
        values[field] = urllib.parse.quote(value, safe="")
    for field, value in values.items():
        url = url.replace("{" + field + "}", value)
    return url


def redact_url(url: str) -> str:
    """``url`` with any user-info replaced by ``***`` (safe to log)."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"***@{host}"))


class StreamSource(_CaptureSource[StreamSourceConfig]):
    """An RTSP/HTTP stream (FFmpeg backend) with credentials from the environment."""

    device = "stream"

    def describe(self) -> str:
        return redact_url(self.config.url.replace("{user}", "").replace("{password}", ""))

    def _open_capture(self) -> Any:
        url = resolve_stream_url(self.config)
        params = [
            cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
            int(self.config.open_timeout_s * 1000),
            cv2.CAP_PROP_READ_TIMEOUT_MSEC,
            int(self.config.read_timeout_s * 1000),
        ]
        return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)


class VideoFileSource(_CaptureSource[VideoSourceConfig]):
    """Frames of a video file; :data:`END` at its end unless ``loop``."""

    def __init__(self, config: VideoSourceConfig) -> None:
        super().__init__(config)
        self._period_s = 0.0
        self._next_t = 0.0

    def describe(self) -> str:
        return f"video:{self.config.path}"

    def _open_capture(self) -> Any:
        if not self.config.path.is_file():
            raise CameraError(f"video file {self.config.path} does not exist")
        cap = cv2.VideoCapture(str(self.config.path))
        fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
        self._period_s = 1.0 / fps if self.config.realtime and fps and fps > 0 else 0.0
        self._next_t = time.perf_counter()
        return cap

    def read(self) -> ReadResult:
        if self._period_s:
            wait = self._next_t - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            self._next_t = max(self._next_t + self._period_s, time.perf_counter() - 1.0)
        image = self._grab()
        if image is None:
            if not self.config.loop:
                return END
            self.open()
            image = self._grab()
            if image is None:
                raise CameraError(f"video file {self.config.path} has no frames")
        return self._frame(image, self.config.path.name)


# -- watched folder ----------------------------------------------------------------------------

_TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".filepart")


def check_complete(data: bytes, name: str) -> None:
    """Reject files a camera has not finished writing (truncated JPEG/PNG).

    OpenCV decodes a truncated JPEG into a partly grey image without an error, so JPEGs must end
    with the EOI marker (trailing zero padding allowed) and PNGs must contain the IEND chunk.

    Raises:
        FrameError: the file is empty or visibly truncated.
    """
    if not data:
        raise FrameError(f"{name}: empty file")
    lower = name.lower()
    if lower.endswith((".jpg", ".jpeg")):
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise FrameError(f"{name}: truncated JPEG (no end-of-image marker)")
    elif lower.endswith(".png") and b"IEND" not in data[-16:]:
        raise FrameError(f"{name}: truncated PNG (no IEND chunk)")


def decode_image(data: bytes, name: str) -> np.ndarray:
    """Encoded image bytes -> (H, W, 3) uint8 RGB.

    Raises:
        FrameError: truncated, corrupt or not an image.
    """
    check_complete(data, name)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise FrameError(f"{name}: cannot decode image (corrupt or unsupported)")
    return to_rgb(image, name)


class FolderSource(FrameSource):
    """New image files in a folder, each processed once, oldest first (see the config)."""

    def __init__(self, config: FolderSourceConfig) -> None:
        self.config = config
        self.overflow = config.overflow_policy()
        self._done: set[str] = set()
        self._pending: dict[str, tuple[int, int, float]] = {}  # name -> size, mtime_ns, since
        self._ready: list[tuple[int, str, int]] = []  # (mtime_ns, name, size), oldest first
        self._last_scan = -float("inf")

    def describe(self) -> str:
        return f"folder:{self.config.path}"

    def open(self) -> None:
        if not self.config.path.is_dir():
            raise CameraError(f"watched folder {self.config.path} does not exist or is not mounted")
        state = self.config.state_file
        if state is not None and state.is_file():
            self._done.update(n for n in state.read_text(encoding="utf-8").splitlines() if n)
        if self.config.move_to is not None:
            (self.config.move_to / "rejected").mkdir(parents=True, exist_ok=True)
        self._pending.clear()
        self._ready.clear()
        logger.info("watching %s (%d files already processed)", self.config.path, len(self._done))

    def _wanted(self, name: str) -> bool:
        lower = name.lower()
        if name.startswith(".") or lower.endswith(_TEMP_SUFFIXES) or name in self._done:
            return False
        return any(fnmatch.fnmatch(lower, p.lower()) for p in self.config.patterns)

    def _scan(self) -> None:
        now = time.monotonic()
        self._last_scan = now
        try:
            entries = list(os.scandir(self.config.path))
        except OSError as exc:
            raise CameraError(f"watched folder {self.config.path} is unavailable: {exc}") from exc
        queued = {name for _, name, _ in self._ready}
        seen: set[str] = set()
        for entry in entries:
            if not self._wanted(entry.name) or entry.name in queued:
                continue
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
            except OSError:
                continue  # vanished between listing and stat
            seen.add(entry.name)
            sig = (st.st_size, st.st_mtime_ns)
            old = self._pending.get(entry.name)
            if old is None or old[:2] != sig:
                self._pending[entry.name] = (*sig, now)
            elif now - old[2] >= self.config.settle_s:
                self._ready.append((st.st_mtime_ns, entry.name, st.st_size))
                del self._pending[entry.name]
        for name in set(self._pending) - seen:
            del self._pending[name]  # removed before it settled
        self._ready.sort()

    def read(self) -> ReadResult:
        if not self._ready:
            wait = self._last_scan + self.config.poll_s - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, 0.2))
            self._scan()
            if not self._ready:
                return None
        mtime_ns, name, size = self._ready.pop(0)
        path = self.config.path / name
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            logger.info("%s vanished before it was read", path)
            return None
        except OSError as exc:
            raise CameraError(f"cannot read {path}: {exc}") from exc
        key = hashlib.sha256(f"{name}|{size}|{mtime_ns}".encode()).hexdigest()[:40]
        try:
            image = decode_image(data, name)
        except FrameError:
            self._mark_done(name, rejected=True)
            raise
        self._mark_done(name, rejected=False)
        return _stamp(Frame(image, name, key=f"f-{key}"))

    def _mark_done(self, name: str, rejected: bool) -> None:
        self._done.add(name)
        target = self.config.move_to
        if target is not None:
            dest = (target / "rejected" if rejected else target) / name
            try:
                os.replace(self.config.path / name, dest)
                return
            except OSError as exc:
                logger.warning("cannot move %s to %s: %s", name, dest.parent, exc)
        if self.config.state_file is not None:
            try:
                self.config.state_file.parent.mkdir(parents=True, exist_ok=True)
                with self.config.state_file.open("a", encoding="utf-8") as fh:
                    fh.write(name + "\n")
            except OSError as exc:
                logger.warning("cannot record %s in %s: %s", name, self.config.state_file, exc)


# -- synthetic line ----------------------------------------------------------------------------


class SyntheticSource(FrameSource):
    """The synthetic production line as a camera (deterministic parts, optional frame rate)."""

    def __init__(self, config: SyntheticSourceConfig) -> None:
        from inspection.data.synthetic import SyntheticLine

        self.config = config
        self.overflow = config.overflow_policy()
        self.line = SyntheticLine(
            family=config.family, size=config.size, seed=config.seed, defect_rate=config.defect_rate
        )
        self._index = config.start_index
        self._cache: list[tuple[np.ndarray, str]] = []
        self._next_t = 0.0

    def describe(self) -> str:
        c = self.config
        return f"synthetic:{c.family}:{c.seed}"

    def open(self) -> None:
        c = self.config
        if c.cache and not self._cache:
            for i in range(c.start_index, c.start_index + c.cache):
                sample = self.line.sample(i)
                self._cache.append((sample.image, sample.defect_type or "good"))
        self._next_t = time.perf_counter()

    def read(self) -> ReadResult:
        c = self.config
        if c.count is not None and self._index >= c.start_index + c.count:
            return END
        if c.fps:
            wait = self._next_t - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            # A late pipeline does not make the camera burst afterwards (at most 1 s of catch-up).
            self._next_t = max(self._next_t + 1.0 / c.fps, time.perf_counter() - 1.0)
        index = self._index
        self._index += 1
        if self._cache:
            part = (index - c.start_index) % len(self._cache)
            image, truth = self._cache[part]
            ref = f"{self.describe()}:{index}(part {c.start_index + part})"
            return _stamp(Frame(image, ref, truth=truth))
        sample = self.line.sample(index)
        ref = f"{self.describe()}:{index}"
        return _stamp(Frame(sample.image, ref, truth=sample.defect_type or "good"))


def make_source(config: CameraConfig) -> FrameSource:
    """The source for a camera config."""
    if isinstance(config, UsbSourceConfig):
        return UsbSource(config)
    if isinstance(config, StreamSourceConfig):
        return StreamSource(config)
    if isinstance(config, VideoSourceConfig):
        return VideoFileSource(config)
    if isinstance(config, FolderSourceConfig):
        return FolderSource(config)
    if isinstance(config, SyntheticSourceConfig):
        return SyntheticSource(config)
    raise ConfigError(f"unsupported camera type {type(config).__name__}")


__all__ = [
    "END",
    "Frame",
    "FrameSource",
    "FolderSource",
    "ReadResult",
    "StreamSource",
    "SyntheticSource",
    "UsbSource",
    "VideoFileSource",
    "check_complete",
    "decode_image",
    "make_source",
    "redact_url",
    "resolve_stream_url",
    "to_rgb",
]
