// Threshold editing: live preview of how many past verdicts would flip, and the histogram marker.
import { api } from "./common.js";

const panel = document.getElementById("threshold-panel");
const input = document.getElementById("image-threshold");
const slider = document.getElementById("threshold-slider");
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
    document.getElementById("pv-flips").textContent = result.flips.toLocaleString();
    document.getElementById("pv-total").textContent = result.total.toLocaleString();
    document.getElementById("pv-to-fail").textContent = result.to_fail.toLocaleString();
    document.getElementById("pv-to-pass").textContent = result.to_pass.toLocaleString();
    document.getElementById("pv-agree").textContent = `${result.confirmed} / ${result.contradicted}`;
  } catch (_) {
    /* invalid value while typing: keep the last preview */
  }
}

function changed(value) {
  if (!Number.isFinite(value) || value < 0 || value > 100) return;
  moveMarker(value);
  clearTimeout(timer);
  timer = setTimeout(() => preview(value), 120);
}

if (input && slider) {
  input.addEventListener("input", () => {
    slider.value = input.value;
    changed(Number(input.value));
  });
  slider.addEventListener("input", () => {
    input.value = Number(slider.value).toFixed(3);
    changed(Number(slider.value));
  });
}
