// The inspection image viewer: frame, heatmap overlay (toggle + opacity) and defect outlines.
import { el } from "./common.js";

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The heatmap views, in the order the "v" key cycles through them. */
export const MODES = ["contour", "heat", "side"];

function fmtValue(value) {
  return Math.abs(value) >= 100 || value === 0 ? value.toFixed(0) : value.toPrecision(3);
}

export class Viewer {
  constructor() {
    this.root = document.getElementById("viewer");
    this.wrap = document.getElementById("viewer-wrap");
    this.plain = document.getElementById("viewer-plain");
    this.plainImg = document.getElementById("plain-img");
    this.frame = document.getElementById("frame-img");
    this.overlay = document.getElementById("overlay-img");
    this.outlines = document.getElementById("outlines");
    this.overlayToggle = document.getElementById("overlay-toggle");
    this.outlineToggle = document.getElementById("outline-toggle");
    this.opacityInput = document.getElementById("overlay-opacity");
    this.modeSelect = document.getElementById("overlay-mode");
    this.scaleBox = document.getElementById("colour-scale");
    this.item = null;
    this.scaleSeq = 0;
    const stored = window.localStorage;
    this.opacityInput.value = stored.getItem("inspection.opacity") || "60";
    this.overlayToggle.checked = stored.getItem("inspection.overlay") !== "off";
    this.outlineToggle.checked = stored.getItem("inspection.outlines") !== "off";
    const mode = stored.getItem("inspection.view");
    this.modeSelect.value = MODES.includes(mode) ? mode : "contour";
    this.overlayToggle.addEventListener("change", () => this.apply());
    this.outlineToggle.addEventListener("change", () => this.apply());
    this.opacityInput.addEventListener("input", () => this.apply());
    this.modeSelect.addEventListener("change", () => {
      this.apply();
      this.loadOverlay();
    });
    this.apply();
  }

  get mode() {
    return this.modeSelect.value;
  }

  apply() {
    const mode = this.mode;
    this.root.classList.toggle("no-overlay", !this.overlayToggle.checked);
    this.root.classList.toggle("no-outlines", !this.outlineToggle.checked);
    this.root.dataset.mode = mode;
    this.wrap.classList.toggle("side", mode === "side");
    this.plain.hidden = mode !== "side" || this.root.hidden;
    // Contour lines are drawn opaque; the opacity slider is for the filled heatmap.
    const opacity = Number(this.opacityInput.value) / 100;
    this.overlay.style.opacity = mode === "contour" ? "1" : String(opacity);
    this.opacityInput.disabled = mode === "contour";
    const stored = window.localStorage;
    stored.setItem("inspection.opacity", this.opacityInput.value);
    stored.setItem("inspection.overlay", this.overlayToggle.checked ? "on" : "off");
    stored.setItem("inspection.outlines", this.outlineToggle.checked ? "on" : "off");
    stored.setItem("inspection.view", mode);
  }

  toggleOverlay() {
    this.overlayToggle.checked = !this.overlayToggle.checked;
    this.apply();
  }

  toggleOutlines() {
    this.outlineToggle.checked = !this.outlineToggle.checked;
    this.apply();
  }

  /** The next view: contours -> heatmap -> side by side -> contours. */
  cycleMode() {
    this.modeSelect.value = MODES[(MODES.indexOf(this.mode) + 1) % MODES.length];
    if (!this.overlayToggle.checked) this.overlayToggle.checked = true;
    this.apply();
    this.loadOverlay();
  }

  changeOpacity(delta) {
    const value = Math.max(0, Math.min(100, Number(this.opacityInput.value) + delta));
    this.opacityInput.value = String(value);
    if (!this.overlayToggle.checked) this.overlayToggle.checked = true;
    if (this.mode === "contour") this.modeSelect.value = "heat";
    this.apply();
    this.loadOverlay();
  }

  /** Point the overlay image at the current item's heatmap in the current view. */
  loadOverlay() {
    const item = this.item;
    if (item && item.overlay_url) {
      const url = this.mode === "contour" ? `${item.overlay_url}?style=contour` : item.overlay_url;
      if (this.overlay.getAttribute("src") !== url) this.overlay.src = url;
      this.overlay.hidden = false;
    } else {
      this.overlay.removeAttribute("src");
      this.overlay.hidden = true;
    }
  }

  /** Fetch and show the overlay's colour scale (values in the heatmap's units). */
  async loadScale(item) {
    const mine = ++this.scaleSeq;
    this.scaleBox.hidden = true;
    if (!item || !item.overlay_url) return;
    let scale;
    try {
      const response = await fetch(`/api/inspections/${item.id}/overlay-scale`, {
        headers: { Accept: "application/json" },
        credentials: "same-origin",
      });
      if (!response.ok) return;
      scale = await response.json();
    } catch (_) {
      return;
    }
    if (mine !== this.scaleSeq) return;
    document.getElementById("cs-min").textContent = fmtValue(scale.vmin);
    document.getElementById("cs-max").textContent = fmtValue(scale.vmax);
    const mark = document.getElementById("cs-mark");
    const span = Math.max(scale.vmax - scale.vmin, 1e-9);
    if (scale.pixel_threshold !== null) {
      mark.hidden = false;
      mark.style.left = `${(100 * (scale.pixel_threshold - scale.vmin)) / span}%`;
      mark.title = `pixel threshold ${fmtValue(scale.pixel_threshold)}`;
    } else mark.hidden = true;
    const note = scale.pixel_threshold !== null
      ? `pixel threshold ${fmtValue(scale.pixel_threshold)} (marked)`
      : "scaled to this image (no pixel threshold set)";
    document.getElementById("cs-note").textContent = note;
    this.scaleBox.title = scale.units;
    this.scaleBox.hidden = false;
  }

  /** Show an inspection (an InspectionOut from the API), or nothing with null. */
  show(item) {
    this.item = item;
    this.outlines.replaceChildren();
    if (!item) {
      this.frame.removeAttribute("src");
      this.plainImg.removeAttribute("src");
      this.overlay.removeAttribute("src");
      this.root.hidden = true;
      this.apply();
      this.loadScale(null);
      return;
    }
    this.root.hidden = false;
    const width = item.width || 256;
    const height = item.height || 256;
    // One box for frame, overlay and outlines with the frame's aspect ratio (see app.css).
    this.wrap.style.setProperty("--ar", String(width / height));
    this.outlines.setAttribute("viewBox", `0 0 ${width} ${height}`);
    if (item.frame_url) {
      this.frame.src = item.frame_url;
      this.plainImg.src = item.frame_url;
    } else {
      this.frame.removeAttribute("src");
      this.plainImg.removeAttribute("src");
    }
    this.apply();
    this.loadOverlay();
    this.loadScale(item);
    const labelSize = Math.max(9, Math.round(width / 40));
    item.regions.forEach((region, index) => {
      const name = region.is_unknown ? "unknown" : region.defect_type || "region";
      const rect = svg("rect", {
        x: region.x, y: region.y, width: Math.max(1, region.w), height: Math.max(1, region.h),
        class: region.is_unknown ? "unknown" : "known",
      });
      rect.append(svg("title", {}, `${index + 1}: ${name}`));
      this.outlines.append(rect);
      const ty = region.y > labelSize + 2 ? region.y - 4 : region.y + region.h + labelSize;
      const rightHalf = region.x + region.w / 2 > width / 2;
      this.outlines.append(
        svg(
          "text",
          {
            x: rightHalf ? region.x + region.w : region.x,
            y: ty,
            "font-size": labelSize,
            "text-anchor": rightHalf ? "end" : "start",
          },
          `${index + 1} ${name}`,
        ),
      );
    });
  }
}

/** The facts column of an inspection: score vs threshold, verdict, type, station, model. */
export function renderFacts(container, item) {
  container.replaceChildren();
  if (!item) return;
  const over = item.norm_score >= item.threshold;
  const scale = Math.max(1, item.norm_score, item.threshold);
  const fill = el("div", { class: `fill${over ? " over" : ""}` });
  fill.style.width = `${Math.min(100, (100 * item.norm_score) / scale)}%`;
  const thr = el("div", { class: "thr", title: `threshold ${item.threshold}` });
  thr.style.left = `${Math.min(100, (100 * item.threshold) / scale)}%`;
  const badges = el(
    "div", {},
    el("span", { class: `badge badge-${item.verdict}` }, item.verdict),
    " ",
    item.has_unknown ? el("span", { class: "badge badge-unknown" }, "unknown type") : null,
    " ",
    item.uncertain ? el("span", { class: "badge badge-uncertain" }, "uncertain") : null,
  );
  const label = item.label
    ? `${item.label.verdict === "pass" ? "OK" : item.label.defect_type || "defect"} by ${item.label.user}`
    : "not labelled";
  container.append(
    el("h3", {}, "Anomaly score"),
    el("div", { class: "score-big" },
      el("span", { class: "v", id: "score-value" }, item.norm_score.toFixed(3)),
      el("span", { class: "muted" }, `threshold ${item.threshold.toFixed(2)}`)),
    el("div", { class: "gauge", role: "img", "aria-label": "score against threshold" }, fill, thr),
    badges,
    el("dl", {},
      el("dt", {}, "Inspection"), el("dd", {}, el("a", { href: item.detail_url }, `#${item.id}`)),
      el("dt", {}, "Station"), el("dd", {}, item.station),
      el("dt", {}, "Predicted"), el("dd", {}, item.predicted_type || "–"),
      el("dt", {}, "Regions"), el("dd", {}, String(item.regions.length)),
      el("dt", {}, "Raw score"), el("dd", {}, item.raw_score.toFixed(3)),
      el("dt", {}, "Model"), el("dd", {}, item.model_version_id ? `#${item.model_version_id}` : "–"),
      el("dt", {}, "Captured"), el("dd", {}, item.captured_at.replace("T", " ").slice(0, 19)),
      el("dt", {}, "Label"), el("dd", { id: "current-label" }, label)),
  );
}
