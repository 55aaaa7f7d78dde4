// Threshold editing: live preview of how many past verdicts would flip, and the histogram marker.
// The number field and the slider share one range (their min/max attributes, from the server);
// saving asks for a confirmation that names the old and new values and the preview's flips.
import { api } from "./common.js";

const panel = document.getElementById("threshold-panel");
const form = document.getElementById("threshold-form");
const input = document.getElementById("image-threshold");
const slider = document.getElementById("threshold-slider");
const pixelInput = form ? form.elements.namedItem("pixel_threshold") : null;
const saveButton = document.getElementById("save-thresholds");
const lo = input ? Number(input.min) : 0;
const hi = input ? Number(input.max) : 1;
let lastPreview = null;
const chart = document.querySelector("#hist svg.chart");
let timer = null;
let seq = 0;

function moveMarker(value) {
  if (!chart || !chart.dataset.x0) return;
  const x0 = Number(chart.dataset.x0);
  const x1 = Number(chart.dataset.x1);
  const hi = Number(chart.dataset.hi);
  const x = x0 + (x1 - x0) * Math.min(Math.max(value / hi, 0), 1);
  const group = chart.querySelector(".line-proposed");
  if (!group) return;
  const changed = Math.abs(value - Number(panel.dataset.current)) > 1e-9;
  group.setAttribute("visibility", changed ? "visible" : "hidden");
  const line = group.querySelector("line");
  line.setAttribute("x1", x);
  line.setAttribute("x2", x);
  const text = group.querySelector("text");
  text.setAttribute("x", x + 4);
  text.textContent = `new ${value.toFixed(2)}`;
}

async function preview(value) {
  const mine = ++seq;
  const url = `/api/stations/${panel.dataset.station}/threshold-preview?image_threshold=${value}&days=${panel.dataset.days}`;
  try {
    const result = await api("GET", url);
    if (mine !== seq) return;
    lastPreview = result;
    describeChange();
    document.getElementById("pv-flips").textContent = result.flips.toLocaleString();
    document.getElementById("pv-total").textContent = result.total.toLocaleString();
    document.getElementById("pv-to-fail").textContent = result.to_fail.toLocaleString();
    document.getElementById("pv-to-pass").textContent = result.to_pass.toLocaleString();
    document.getElementById("pv-agree").textContent = `${result.confirmed} / ${result.contradicted}`;
  } catch (_) {
    /* invalid value while typing: keep the last preview */
  }
}

/** The confirmation the save button asks for: what changes, and what the preview says. */
function describeChange() {
  if (!form) return;
  const fmt = (v) => (v === "" || v === null ? "not set" : Number(v).toFixed(3));
  const parts = [];
  const current = Number(panel.dataset.current);
  if (input.value !== "" && Math.abs(Number(input.value) - current) > 1e-9) {
    parts.push(`image threshold ${fmt(current)} → ${fmt(input.value)}`);
  } else if (input.value === "") parts.push(`image threshold ${fmt(current)} → the default`);
  if (pixelInput && pixelInput.value !== panel.dataset.pixel) {
    parts.push(`pixel threshold ${fmt(panel.dataset.pixel)} → ${fmt(pixelInput.value)}`);
  }
  let text = `Save the thresholds of ${panel.dataset.name}: `;
  text += parts.length ? parts.join("; ") : "nothing changes";
  if (lastPreview && parts.length) {
    text += `. Over the last ${panel.dataset.days} days ${lastPreview.flips} of ${lastPreview.total} inspections would change verdict (${lastPreview.to_fail} pass → fail, ${lastPreview.to_pass} fail → pass)`;
  }
  form.dataset.confirm = `${text}. Stations apply it to new frames. Continue?`;
}

/** The number field is valid only inside the slider's range; invalid values cannot be saved. */
function valid(value) {
  return Number.isFinite(value) && value >= lo && value <= hi;
}

function changed(value) {
  const ok = input.value === "" || valid(value);
  input.setCustomValidity(ok ? "" : `between ${lo} and ${hi}`);
  if (saveButton) saveButton.disabled = !ok;
  describeChange();
  if (!valid(value)) return;
  moveMarker(value);
  clearTimeout(timer);
  timer = setTimeout(() => preview(value), 120);
}

if (input && slider) {
  input.addEventListener("input", () => {
    if (valid(Number(input.value))) slider.value = input.value;
    changed(Number(input.value));
  });
  slider.addEventListener("input", () => {
    input.value = Number(slider.value).toFixed(3);
    changed(Number(slider.value));
  });
  if (pixelInput) pixelInput.addEventListener("input", describeChange);
  describeChange();
}
