"""Frames, thumbnails and heatmap overlays served to the browser, with an in-memory LRU cache.

Overlays are rendered from the stored lossless heatmap (``.npz`` float32, see
:func:`inspection.storage.decode_heatmap`): resized to the frame's size, coloured with the turbo
colour map, and made transparent where the anomaly score is low, as an RGBA PNG laid over the
frame by the page (opacity and on/off are the page's business), or as isolines only (the
contour view, which leaves the defect itself visible). The colour scale is fixed per station so
overlays are comparable: with a pixel threshold ``t`` the map runs from ``0.6 t`` (transparent)
to ``1.5 t`` (red); without one, from the map's median to its maximum (:class:`OverlayScale`,
which the page shows as a colour bar in these units).

Keys always come from the database and are validated by the store (no path traversal); frames
in formats browsers cannot show (BMP, TIFF, ...) are converted to PNG.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from inspection.errors import ImageDecodeError
from inspection.storage import ArtifactStore, decode_heatmap

BROWSER_TYPES: dict[str, str] = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
}


@dataclass(frozen=True)
class ImageBytes:
    """Encoded image bytes and their media type."""

    data: bytes
    media_type: str


class LruBytesCache:
    """A thread-safe LRU cache of byte strings bounded by their total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[object, ...], ImageBytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> ImageBytes | None:
        """The cached value, marked as recently used, or None."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple[object, ...], value: ImageBytes) -> None:
        """Cache ``value`` (values larger than a quarter of the cache are not kept)."""
        size = len(value.data)
        if size > self.max_bytes // 4:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old.data)
            self._items[key] = value
            self._size += size
            while self._size > self.max_bytes and self._items:
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted.data)

    def __len__(self) -> int:
        return len(self._items)


def _ext(key: str) -> str:
    return key.rsplit(".", 1)[-1].lower() if "." in key else ""


def _decode(data: bytes, flags: int, what: str) -> npt.NDArray[np.uint8]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if image is None:
        raise ImageDecodeError(f"cannot decode {what}")
    return np.asarray(image, dtype=np.uint8)


def _png(image: npt.NDArray[np.uint8]) -> bytes:
    ok, buffer = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise ImageDecodeError("PNG encoding failed")
    return bytes(buffer.tobytes())


@dataclass(frozen=True)
class OverlayScale:
    """The colour scale of a heatmap overlay, in the heatmap's own units (the detector's
    per-pixel anomaly score, the units of the station's pixel threshold).

    ``vmin`` is transparent, ``vmax`` the hottest colour; ``levels`` are the values the
    contour view draws isolines at (each in its colour on the same scale).
    """

    vmin: float
    vmax: float
    levels: tuple[float, ...]
    pixel_threshold: float | None

    def unit(self, value: float) -> float:
        """Where ``value`` lies on the scale, 0 (vmin) to 1 (vmax), clipped."""
        span = max(self.vmax - self.vmin, 1e-6)
        return float(min(max((value - self.vmin) / span, 0.0), 1.0))


def overlay_scale(
    heatmap: npt.NDArray[np.float32], *, pixel_threshold: float | None
) -> OverlayScale:
    """The fixed per-station scale with a pixel threshold ``t`` (``0.6 t`` .. ``1.5 t``,
    contours at ``t`` and ``1.25 t``), else the map's median .. maximum (contours at half and
    85 % of that span)."""
    if pixel_threshold is not None and pixel_threshold > 0:
        t = float(pixel_threshold)
        return OverlayScale(0.6 * t, 1.5 * t, (t, 1.25 * t), t)
    values = np.nan_to_num(heatmap.astype(np.float32), nan=0.0)
    vmin = float(np.median(values))
    vmax = max(float(values.max()), vmin + 1e-6)
    span = vmax - vmin
    return OverlayScale(vmin, vmax, (vmin + 0.5 * span, vmin + 0.85 * span), None)


def overlay_rgba(
    heatmap: npt.NDArray[np.float32],
    *,
    size: tuple[int, int] | None,
    pixel_threshold: float | None,
    style: str = "heat",
) -> npt.NDArray[np.uint8]:
    """A BGRA overlay image (``(H, W, 4)`` uint8) of ``heatmap`` at ``size`` = (width, height).

    ``style="heat"``: the turbo-coloured map, transparent where the score is low;
    ``style="contour"``: only isolines at the scale's ``levels`` (the defect itself stays
    visible), each in its colour on the same scale.
    """
    scale = overlay_scale(heatmap, pixel_threshold=pixel_threshold)
    values = np.nan_to_num(heatmap.astype(np.float32), nan=0.0)
    if size is not None and (values.shape[1], values.shape[0]) != size:
        values = cv2.resize(values, size, interpolation=cv2.INTER_LINEAR)
    if style == "contour":
        return _contours(values, scale)
    span = max(scale.vmax - scale.vmin, 1e-6)
    unit = np.clip((values - scale.vmin) / span, 0.0, 1.0)
    gray = (unit * 255).astype(np.uint8)
    colour = cv2.applyColorMap(gray, cv2.COLORMAP_TURBO)
    alpha = (np.clip(unit * 1.3, 0.0, 1.0) ** 1.2 * 225).astype(np.uint8)
    return np.dstack([colour, alpha])


def _contours(values: npt.NDArray[np.float32], scale: OverlayScale) -> npt.NDArray[np.uint8]:
    height, width = values.shape
    out = np.zeros((height, width, 4), np.uint8)
    thickness = max(1, round(min(height, width) / 256))
    for level in scale.levels:
        mask = (values >= level).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
        gray = np.full((1, 1), round(255 * scale.unit(level)), np.uint8)
        b, g, r = (int(c) for c in cv2.applyColorMap(gray, cv2.COLORMAP_TURBO)[0, 0])
        cv2.drawContours(out, contours, -1, (b, g, r, 255), thickness, cv2.LINE_AA)
    return out


class ImageService:
    """Reads frames and renders thumbnails and overlays from an :class:`ArtifactStore`."""

    def __init__(self, store: ArtifactStore, *, cache_bytes: int) -> None:
        self.store = store
        self.cache = LruBytesCache(cache_bytes)

    def frame(self, key: str) -> ImageBytes:
        """The frame stored under ``key`` in a format browsers display."""
        media_type = BROWSER_TYPES.get(_ext(key))
        if media_type is not None:
            return ImageBytes(self.store.read(key), media_type)
        cache_key: tuple[object, ...] = ("frame", key)
        cached = self.cache.get(cache_key)
        if cached is not None:
            return cached
        image = _decode(self.store.read(key), cv2.IMREAD_UNCHANGED, f"frame {key!r}")
        result = ImageBytes(_png(image), "image/png")
        self.cache.put(cache_key, result)
        return result

    def thumbnail(self, key: str, max_side: int) -> ImageBytes:
        """A JPEG of the frame with its longer side at most ``max_side`` pixels."""
        cache_key: tuple[object, ...] = ("thumb", key, max_side)
        cached = self.cache.get(cache_key)
        if cached is not None:
            return cached
        image = _decode(self.store.read(key), cv2.IMREAD_COLOR, f"frame {key!r}")
        height, width = image.shape[:2]
        scale = max_side / max(height, width)
        if scale < 1:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            image = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
        ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
        if not ok:
            raise ImageDecodeError(f"JPEG encoding of {key!r} failed")
        result = ImageBytes(bytes(buffer.tobytes()), "image/jpeg")
        self.cache.put(cache_key, result)
        return result

    def overlay(
        self,
        heatmap_key: str,
        *,
        size: tuple[int, int] | None,
        pixel_threshold: float | None,
        style: str = "heat",
    ) -> ImageBytes:
        """The heatmap under ``heatmap_key`` as an RGBA PNG overlay of ``size`` (width, height),
        filled (``style="heat"``) or as isolines only (``style="contour"``)."""
        cache_key: tuple[object, ...] = ("overlay", heatmap_key, size, pixel_threshold, style)
        cached = self.cache.get(cache_key)
        if cached is not None:
            return cached
        heatmap = decode_heatmap(self.store.read(heatmap_key))
        rgba = overlay_rgba(heatmap, size=size, pixel_threshold=pixel_threshold, style=style)
        result = ImageBytes(_png(rgba), "image/png")
        self.cache.put(cache_key, result)
        return result

    def overlay_scale(self, heatmap_key: str, *, pixel_threshold: float | None) -> OverlayScale:
        """The colour scale :meth:`overlay` uses for this heatmap (reads it without a pixel
        threshold: the scale then follows the map)."""
        if pixel_threshold is not None and pixel_threshold > 0:
            return overlay_scale(np.zeros((1, 1), np.float32), pixel_threshold=pixel_threshold)
        heatmap = decode_heatmap(self.store.read(heatmap_key))
        return overlay_scale(heatmap, pixel_threshold=None)
