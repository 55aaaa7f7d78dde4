"""Charts as inline SVG, generated on the server (no chart library, no scripts needed).

Each function returns :class:`markupsafe.Markup` ready to drop into a template; every piece of
text that comes from data is escaped. Colours come from CSS classes (``static/app.css``), so the
charts follow the page's theme. Sizes are in SVG user units; the SVGs scale to their container.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from inspection.services.line_stats import Histogram, YieldPoint

PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 48, 16, 16, 36


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _nice_step(value: float) -> float:
    """A round step (1, 2, 2.5 or 5 x 10^k) at or above ``value``."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        candidate = step * 10**exponent
        if candidate >= value - 1e-12:
            return candidate
    return 10.0 ** (exponent + 1)


def _count_axis(max_value: float) -> tuple[float, float]:
    """Axis top and tick step for counts: whole-number steps, about four intervals."""
    step = max(1.0, _nice_step(max_value / 4))
    top = step * max(1, math.ceil(max_value / step))
    return top, step


def _fmt_count(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.1f}k".replace(".0k", "k")
    return f"{value:.0f}"


def _svg(width: int, height: int, title: str, body: Sequence[str], extra: str = "") -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{_e(title)}" preserveAspectRatio="xMidYMid meet"{extra}>'
        f"<title>{_e(title)}</title>{''.join(body)}</svg>"
    )


def _empty(width: int, height: int, title: str) -> Markup:
    return _svg(
        width,
        height,
        title,
        [
            f'<text class="chart-empty" x="{width / 2}" y="{height / 2}" '
            'text-anchor="middle">No inspections in this window</text>'
        ],
    )


def _y_axis(
    top: float, step: float, x0: float, x1: float, y0: float, y1: float, fmt: str
) -> list[str]:
    """Horizontal grid lines with labels every ``step`` from 0 to ``top``."""
    parts = []
    n = round(top / step)
    for i in range(n + 1):
        value = i * step
        y = y0 - (value / top) * (y0 - y1)
        label = f"{value:.0f}%" if fmt == "pct" else _fmt_count(value)
        parts.append(f'<line class="grid" x1="{x0}" x2="{x1}" y1="{y:.1f}" y2="{y:.1f}"/>')
        parts.append(
            f'<text class="tick" x="{x0 - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>'
        )
    return parts


def yield_chart(
    points: Sequence[YieldPoint], bucket: str, *, width: int = 720, height: int = 240
) -> Markup:
    """First-pass yield per bucket as a line with per-bucket volume bars behind it."""
    title = f"Yield per {bucket}"
    if not points:
        return _empty(width, height, title)
    x0, x1 = PAD_LEFT, width - PAD_RIGHT
    y0, y1 = height - PAD_BOTTOM, PAD_TOP
    n = len(points)
    step = (x1 - x0) / n
    volume_max = max(p.n_pass + p.n_fail for p in points) or 1
    parts = _y_axis(100.0, 25.0, x0, x1, y0, y1, "pct")
    coords = []
    for i, p in enumerate(points):
        cx = x0 + step * (i + 0.5)
        total = p.n_pass + p.n_fail
        bar_h = (y0 - y1) * 0.35 * total / volume_max
        when = p.start.strftime("%Y-%m-%d %H:00" if bucket == "hour" else "%Y-%m-%d")
        parts.append(
            f'<rect class="bar-volume" x="{cx - step * 0.4:.1f}" y="{y0 - bar_h:.1f}" '
            f'width="{step * 0.8:.1f}" height="{bar_h:.1f}"><title>{_e(when)}: {total} '
            f"inspections</title></rect>"
        )
        cy = y0 - (y0 - y1) * p.yield_pct / 100
        coords.append((cx, cy, when, p))
    path = " ".join(
        f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y, _, _) in enumerate(coords)
    )
    parts.append(f'<path class="line-yield" d="{path}"/>')
    for cx, cy, when, p in coords:
        parts.append(
            f'<circle class="dot-yield" cx="{cx:.1f}" cy="{cy:.1f}" r="3"><title>{_e(when)}: '
            f"{p.yield_pct:.1f}% pass ({p.n_pass} pass, {p.n_fail} fail)</title></circle>"
        )
    label_every = max(1, math.ceil(n / 8))
    for i, (cx, _, _, p) in enumerate(coords):
        if i % label_every:
            continue
        text = p.start.strftime("%H:00" if bucket == "hour" else "%b %d")
        parts.append(
            f'<text class="tick" x="{cx:.1f}" y="{y0 + 16}" text-anchor="middle">{_e(text)}</text>'
        )
    parts.append(f'<line class="axis" x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}"/>')
    return _svg(width, height, title, parts)


HIST_CLASSES = (("ok", "bar-ok"), ("unlabelled", "bar-unlabelled"), ("defect", "bar-defect"))


def histogram_chart(
    hist: Histogram,
    threshold: float,
    *,
    width: int = 720,
    height: int = 240,
    proposed: float | None = None,
) -> Markup:
    """Stacked score histogram (operator OK / unlabelled / defect) with the threshold line.

    The SVG carries ``data-x0``, ``data-x1`` and ``data-hi`` so a script can move the
    ``.line-proposed`` marker to a threshold being edited.
    """
    title = "Normalised score histogram with the image threshold"
    totals = [sum(hist.counts[c][i] for c, _ in HIST_CLASSES) for i in range(hist.bins)]
    if not any(totals):
        return _empty(width, height, title)
    x0, x1 = PAD_LEFT, width - PAD_RIGHT
    y0, y1 = height - PAD_BOTTOM, PAD_TOP
    top, step_y = _count_axis(max(totals))
    bin_w = (x1 - x0) / hist.bins
    parts = _y_axis(top, step_y, x0, x1, y0, y1, "count")
    for i in range(hist.bins):
        base = float(y0)
        lo = i * hist.width
        for name, css in HIST_CLASSES:
            n = hist.counts[name][i]
            if not n:
                continue
            h = (y0 - y1) * n / top
            parts.append(
                f'<rect class="{css}" x="{x0 + i * bin_w + 0.5:.1f}" y="{base - h:.1f}" '
                f'width="{max(bin_w - 1, 0.5):.1f}" height="{h:.1f}"><title>score '
                f"{lo:.3f}–{lo + hist.width:.3f}: {n} {name}</title></rect>"
            )
            base -= h

    def marker(value: float, css: str, label: str) -> str:
        x = x0 + (x1 - x0) * min(max(value / hist.hi, 0.0), 1.0)
        return (
            f'<g class="{css}"><line x1="{x:.1f}" x2="{x:.1f}" y1="{y1 - 4}" y2="{y0}"/>'
            f'<text x="{x + 4:.1f}" y="{y1 + 8}">{_e(label)}</text></g>'
        )

    parts.append(marker(threshold, "line-threshold", f"threshold {threshold:.2f}"))
    shown = proposed if proposed is not None else threshold
    hidden = "" if proposed is not None else ' visibility="hidden"'
    x = x0 + (x1 - x0) * min(max(shown / hist.hi, 0.0), 1.0)
    parts.append(
        f'<g class="line-proposed"{hidden}><line x1="{x:.1f}" x2="{x:.1f}" y1="{y1 - 4}" '
        f'y2="{y0}"/><text x="{x + 4:.1f}" y="{y1 + 24}">new {shown:.2f}</text></g>'
    )
    for i in range(0, 5):
        value = hist.hi * i / 4
        x = x0 + (x1 - x0) * i / 4
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{y0 + 16}" text-anchor="middle">{value:.2f}</text>'
        )
    parts.append(f'<line class="axis" x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}"/>')
    extra = f' data-x0="{x0}" data-x1="{x1}" data-hi="{hist.hi}"'
    return _svg(width, height, title, parts, extra)


def pareto_chart(
    items: Sequence[tuple[str, int]], *, width: int = 720, height: int = 240
) -> Markup:
    """Defect Pareto: regions per type, most frequent first, with the cumulative share line."""
    title = "Defect Pareto (detected regions per type)"
    items = [(name, n) for name, n in items if n > 0][:12]
    if not items:
        return _empty(width, height, title)
    x0, x1 = PAD_LEFT, width - PAD_RIGHT - 32
    y0, y1 = height - PAD_BOTTOM, PAD_TOP
    total = sum(n for _, n in items)
    top, step_y = _count_axis(items[0][1])
    step = (x1 - x0) / len(items)
    parts = _y_axis(top, step_y, x0, x1, y0, y1, "count")
    cumulative = 0
    coords = []
    for i, (name, n) in enumerate(items):
        h = (y0 - y1) * n / top
        x = x0 + i * step
        css = "bar-unknown" if name == "unknown" else "bar-defect"
        parts.append(
            f'<rect class="{css}" x="{x + step * 0.15:.1f}" y="{y0 - h:.1f}" '
            f'width="{step * 0.7:.1f}" height="{h:.1f}"><title>{_e(name)}: {n} regions '
            f"({100 * n / total:.1f}%)</title></rect>"
        )
        parts.append(
            f'<text class="tick" x="{x + step / 2:.1f}" y="{y0 + 16}" '
            f'text-anchor="middle">{_e(name[:14])}</text>'
        )
        cumulative += n
        coords.append((x + step / 2, y0 - (y0 - y1) * cumulative / total))
    path = " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(coords))
    parts.append(f'<path class="line-cumulative" d="{path}"/>')
    for x, y in coords:
        parts.append(f'<circle class="dot-cumulative" cx="{x:.1f}" cy="{y:.1f}" r="2.5"/>')
    for i in range(5):
        y = y0 - (y0 - y1) * i / 4
        parts.append(f'<text class="tick" x="{x1 + 6}" y="{y + 4:.1f}">{25 * i}%</text>')
    parts.append(f'<line class="axis" x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}"/>')
    return _svg(width, height, title, parts)


def score_bar(score: float, threshold: float, *, hi: float = 1.0, width: int = 120) -> Markup:
    """A small horizontal bar: the score's position against the threshold marker."""
    scale = max(hi, score, threshold) or 1.0
    w = width * min(max(score / scale, 0.0), 1.0)
    t = width * min(max(threshold / scale, 0.0), 1.0)
    css = "bar-fail" if score >= threshold else "bar-pass"
    return Markup(
        f'<svg class="scorebar" viewBox="0 0 {width} 10" role="img" '
        f'aria-label="score {score:.3f}, threshold {threshold:.2f}">'
        f'<rect class="scorebar-track" x="0" y="2" width="{width}" height="6" rx="3"/>'
        f'<rect class="{css}" x="0" y="2" width="{w:.1f}" height="6" rx="3"/>'
        f'<line class="scorebar-threshold" x1="{t:.1f}" x2="{t:.1f}" y1="0" y2="10"/></svg>'
    )


def inline_code(text: str | None) -> Markup:
    """Docstring text with ``double backticks`` shown as ``<code>`` (everything escaped)."""
    parts = escape(text or "").split("``")
    out = [f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts)]
    return Markup("".join(out))


def fmt_when(value: dt.datetime | None) -> str:
    """A timestamp for tables: ``YYYY-MM-DD HH:MM:SS`` UTC, or an en dash."""
    if value is None:
        return "–"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_ago(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """``12 s ago``, ``5 min ago``, ``3 h ago``, ``2 d ago`` (or ``never``)."""
    if value is None:
        return "never"
    now = now or dt.datetime.now(dt.UTC)
    seconds = max(0.0, (now - value).total_seconds())
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86_400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86_400:.0f} d ago"
