"""Synthetic production line: parametric parts with nuisance variation and labelled defects.

The project's own data source for the demo, unit tests and the closed-loop simulation. Three
part families (``disc``: a machined flange with bolt holes; ``tile``: a textured ceramic tile;
``pcb``: a board with traces, pads and a chip) are rendered with realistic nuisance variation
(pose jitter, lighting gain and gradient, sensor noise). Defects (``scratch``, ``crack``,
``hole``, ``stain``, ``missing``) are drawn with an exact pixel mask and a type label.

Every sample is a pure function of ``(family, size, seed, index, defect_type)``, so two runs with
the same arguments give bit-identical images.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from inspection.data.imageset import ImageSet, from_samples

FAMILIES: tuple[str, ...] = ("disc", "tile", "pcb")
DEFECT_TYPES: tuple[str, ...] = ("scratch", "crack", "hole", "stain", "missing")


@dataclass(frozen=True)
class SyntheticSample:
    """One rendered part.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) bool, True on defect pixels (all False for a good part).
        defect_type: defect label, or None for a good part.
        family: part family name.
        index: position in the line's stream (the seed of this sample's randomness).
    """

    image: np.ndarray
    mask: np.ndarray
    defect_type: str | None
    family: str
    index: int

    @property
    def is_anomalous(self) -> bool:
        return self.defect_type is not None


def image_set(samples: Sequence[SyntheticSample], prefix: str = "") -> ImageSet:
    """``samples`` as an :class:`ImageSet` (masks and types as rendered; ids ``prefix`` + index)."""
    return from_samples(
        [s.image for s in samples],
        [s.mask for s in samples],
        [s.defect_type for s in samples],
        [f"{prefix}{s.index}" for s in samples],
    )


def _lighting(rng: np.random.Generator, size: int) -> np.ndarray:
    """(H, W, 1) float multiplicative illumination: global gain times a soft linear gradient."""
    gain = rng.uniform(0.9, 1.1)
    angle = rng.uniform(0, 2 * math.pi)
    strength = rng.uniform(0.0, 0.12)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    grad = 1.0 + strength * (np.cos(angle) * xx + np.sin(angle) * yy)
    return (gain * grad)[..., None]


def _pose(rng: np.random.Generator, size: int) -> np.ndarray:
    """2x3 affine for pose jitter (part in a fixture): rotation +-1.5 degrees, shift +-1.5 % of size."""
    angle = rng.uniform(-1.5, 1.5)
    tx, ty = rng.uniform(-0.015, 0.015, size=2) * size
    m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
    m[:, 2] += (tx, ty)
    return m


class _Canvas:
    """A float32 RGB canvas in [0, 255] plus the part's support mask and feature anchors."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.rgb = np.zeros((size, size, 3), np.float32)
        self.part = np.zeros((size, size), np.uint8)
        # Small features a "missing" defect may remove: (x, y, radius, fill colour).
        self.features: list[tuple[int, int, int, tuple[float, float, float]]] = []


def _render_disc(rng: np.random.Generator, size: int) -> _Canvas:
    c = _Canvas(size)
    c.rgb[:] = (60, 62, 66)
    cx = cy = size // 2
    radius = int(size * 0.40)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    r = np.hypot(xx - cx, yy - cy)
    rings = 165 + 14 * np.sin(r / size * rng.uniform(55, 65)) + 18 * (1 - r / radius)
    disc = r <= radius
    c.rgb[disc] = np.stack([rings, rings, rings * 1.02], -1)[disc]
    c.part[disc] = 1
    bore = r <= radius * 0.22
    c.rgb[bore] = (40, 40, 44)
    for k in range(6):  # fixed bolt pattern; pose jitter rotates the whole part later
        a = k * math.pi / 3
        x = int(cx + 0.68 * radius * math.cos(a))
        y = int(cy + 0.68 * radius * math.sin(a))
        hr = max(2, int(size * 0.035))
        cv2.circle(c.rgb, (x, y), hr, (45, 45, 50), -1, cv2.LINE_AA)
        c.features.append((x, y, hr + 1, (168.0, 168.0, 171.0)))
    return c


def _render_tile(rng: np.random.Generator, size: int) -> _Canvas:
    c = _Canvas(size)
    c.rgb[:] = (35, 35, 38)
    margin = int(size * 0.06)
    noise = rng.normal(0, 1, (size, size)).astype(np.float32)
    coarse = cv2.GaussianBlur(noise, (0, 0), size / 40) * 60
    fine = cv2.GaussianBlur(noise, (0, 0), 0.8) * 6
    tex = 150 + coarse + fine
    base = np.stack([tex * 1.05, tex * 0.95, tex * 0.85], -1)
    c.part[margin : size - margin, margin : size - margin] = 1
    sel = c.part.astype(bool)
    c.rgb[sel] = base[sel]
    for x in (margin, size - margin - 1):
        for y in (margin, size - margin - 1):
            c.features.append((x, y, int(size * 0.06), (35.0, 35.0, 38.0)))
    return c


def _render_pcb(rng: np.random.Generator, size: int) -> _Canvas:
    c = _Canvas(size)
    c.rgb[:] = (30, 95, 50)
    c.part[:] = 1
    copper = (200, 150, 70)
    step = size // 8
    for i in range(1, 8):
        y = i * step
        cv2.line(c.rgb, (step // 2, y), (size - step // 2, y), copper, max(1, size // 128))
    for i in (2, 6):
        x = i * step
        cv2.line(c.rgb, (x, step // 2), (x, size - step // 2), copper, max(1, size // 128))
    pad_r = max(2, size // 40)
    for i in range(1, 8, 2):
        for j in (1, 3, 5, 7):
            x, y = j * step, i * step
            cv2.circle(c.rgb, (x, y), pad_r, (215, 200, 160), -1, cv2.LINE_AA)
            c.features.append((x, y, pad_r + 1, (30.0, 95.0, 50.0)))
    cv2.rectangle(
        c.rgb, (3 * step, 3 * step + step // 3), (5 * step, 5 * step - step // 3), (25, 25, 28), -1
    )
    return c


_RENDERERS = {"disc": _render_disc, "tile": _render_tile, "pcb": _render_pcb}


def _random_point_on_part(
    rng: np.random.Generator, part: np.ndarray, border: int
) -> tuple[int, int]:
    ys, xs = np.nonzero(part[border:-border, border:-border])
    k = int(rng.integers(len(xs)))
    return int(xs[k]) + border, int(ys[k]) + border


def _draw_defect(rng: np.random.Generator, c: _Canvas, kind: str) -> np.ndarray:
    """Draw a defect of ``kind`` onto ``c.rgb``; return its (H, W) uint8 mask."""
    size = c.size
    mask = np.zeros((size, size), np.uint8)
    x0, y0 = _random_point_on_part(rng, c.part, border=size // 6)
    if kind == "scratch":
        angle = rng.uniform(0, math.pi)
        length = rng.uniform(0.2, 0.35) * size
        dx, dy = math.cos(angle) * length / 2, math.sin(angle) * length / 2
        p1 = (int(x0 - dx), int(y0 - dy))
        p2 = (int(x0 + dx), int(y0 + dy))
        width = int(rng.integers(1, 3)) * max(1, size // 256)
        cv2.line(mask, p1, p2, 1, width + 1)
        shade = rng.choice([235.0, 25.0])
        c.rgb[mask.astype(bool)] = shade
    elif kind == "crack":
        pts = [(float(x0), float(y0))]
        heading = rng.uniform(0, 2 * math.pi)
        for _ in range(int(rng.integers(12, 20))):
            heading += rng.normal(0, 0.45)
            step = size * 0.018
            x, y = pts[-1]
            pts.append((x + step * math.cos(heading), y + step * math.sin(heading)))
        poly = np.array(pts, np.int32).reshape(-1, 1, 2)
        cv2.polylines(mask, [poly], False, 1, max(2, size // 128))
        c.rgb[mask.astype(bool)] *= 0.25
    elif kind == "hole":
        radius = int(rng.uniform(0.015, 0.035) * size) + 2
        cv2.circle(mask, (x0, y0), radius, 1, -1)
        c.rgb[mask.astype(bool)] = (18, 18, 20)
        rim = cv2.dilate(mask, np.ones((3, 3), np.uint8)) - mask
        c.rgb[rim.astype(bool)] *= 1.3
        mask |= rim
    elif kind == "stain":
        blob = np.zeros((size, size), np.float32)
        axes = (int(rng.uniform(0.04, 0.08) * size), int(rng.uniform(0.03, 0.06) * size))
        cv2.ellipse(blob, (x0, y0), axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
        blob = cv2.GaussianBlur(blob, (0, 0), size / 80) * rng.uniform(0.5, 0.75)
        colour = np.array([120, 80, 30], np.float32)
        c.rgb = c.rgb * (1 - blob[..., None]) + colour * blob[..., None]
        mask = (blob > 0.15).astype(np.uint8)
    elif kind == "missing":
        x, y, r, fill = c.features[int(rng.integers(len(c.features)))]
        if c.part[y, x]:
            cv2.circle(mask, (x, y), r + 1, 1, -1)
        else:  # tile corner chipped off: background shows through a wedge
            cv2.circle(mask, (x, y), r, 1, -1)
        c.rgb[mask.astype(bool)] = fill
    else:
        raise ValueError(f"unknown defect type {kind!r}; expected one of {DEFECT_TYPES}")
    return mask


#: Defect kinds :func:`paint_defect` can draw onto any image ("missing" needs part features).
PAINTABLE_TYPES: tuple[str, ...] = ("scratch", "crack", "hole", "stain")


def paint_defect(
    image: np.ndarray, kind: str, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic defect of ``kind`` onto a copy of a real (H, W, 3) uint8 image.

    The defect is placed anywhere but the outer sixth of the image. Returns the painted image
    (H, W, 3) uint8 and the defect's (H, W) uint8 mask. Used to validate detectors on a
    user's own normal images when no real defects are available (:mod:`inspection.validation`).
    """
    if kind not in PAINTABLE_TYPES:
        raise ValueError(f"cannot paint {kind!r} onto an image; expected one of {PAINTABLE_TYPES}")
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise ValueError(f"expected a square (H, W, 3) image, got shape {image.shape}")
    canvas = _Canvas(image.shape[0])
    canvas.rgb = image.astype(np.float32)
    canvas.part[:] = 1
    mask = _draw_defect(rng, canvas, kind)
    return np.clip(canvas.rgb, 0, 255).astype(np.uint8), mask


class SyntheticLine:
    """A deterministic stream of parts from one family, some defective.

    Args:
        family: one of :data:`FAMILIES`.
        size: square image side in pixels.
        seed: stream seed; sample ``i`` depends only on (family, size, seed, i, defect type).
        defect_rate: probability that a streamed part is defective.
        defect_types: defect types the stream draws from.
    """

    def __init__(
        self,
        family: str = "disc",
        size: int = 256,
        seed: int = 0,
        defect_rate: float = 0.1,
        defect_types: Sequence[str] = DEFECT_TYPES,
    ) -> None:
        if family not in _RENDERERS:
            raise ValueError(f"unknown part family {family!r}; expected one of {FAMILIES}")
        unknown = set(defect_types) - set(DEFECT_TYPES)
        if unknown:
            raise ValueError(f"unknown defect types {sorted(unknown)}; expected {DEFECT_TYPES}")
        if size < 32:
            raise ValueError("size must be at least 32 pixels")
        self.family = family
        self.size = size
        self.seed = seed
        self.defect_rate = defect_rate
        self.defect_types = tuple(defect_types)

    def _rng(self, index: int, salt: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, index, salt, FAMILIES.index(self.family)])

    def render(self, index: int, defect_type: str | None) -> SyntheticSample:
        """Render part ``index`` with ``defect_type`` (None for a good part)."""
        rng = self._rng(index, 0)
        canvas = _RENDERERS[self.family](rng, self.size)
        mask = np.zeros((self.size, self.size), np.uint8)
        if defect_type is not None:
            mask = _draw_defect(self._rng(index, 1), canvas, defect_type)
        pose = _pose(rng, self.size)
        dsize, border = (self.size, self.size), cv2.BORDER_REPLICATE
        rgb = cv2.warpAffine(canvas.rgb, pose, dsize, flags=cv2.INTER_LINEAR, borderMode=border)
        mask = cv2.warpAffine(mask, pose, dsize, flags=cv2.INTER_NEAREST, borderMode=border)
        rgb = rgb * _lighting(rng, self.size)
        rgb += rng.normal(0, rng.uniform(1.5, 4.0), rgb.shape).astype(np.float32)
        image = np.clip(rgb, 0, 255).astype(np.uint8)
        return SyntheticSample(image, mask.astype(bool), defect_type, self.family, index)

    def sample(self, index: int) -> SyntheticSample:
        """Part ``index`` of the stream, defective with probability ``defect_rate``."""
        rng = self._rng(index, 2)
        kind: str | None = None
        if rng.uniform() < self.defect_rate:
            kind = self.defect_types[int(rng.integers(len(self.defect_types)))]
        return self.render(index, kind)

    def normals(self, n: int, start: int = 0) -> list[SyntheticSample]:
        """``n`` good parts with indices ``start .. start + n - 1``."""
        return [self.render(i, None) for i in range(start, start + n)]

    def defects(
        self, n: int, start: int = 0, types: Sequence[str] | None = None
    ) -> list[SyntheticSample]:
        """``n`` defective parts cycling through ``types`` (default: the line's defect types)."""
        kinds = tuple(types) if types is not None else self.defect_types
        return [self.render(start + i, kinds[i % len(kinds)]) for i in range(n)]

    def __iter__(self) -> Iterator[SyntheticSample]:
        index = 0
        while True:
            yield self.sample(index)
            index += 1
