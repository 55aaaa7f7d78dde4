// The inspection detail page: viewer, facts, one-key labelling with undo and the history.
import { api, el, fmtTime, pageData, toast } from "./common.js";
import { addType, bindKeys } from "./keys.js";
import { Viewer, renderFacts } from "./viewer.js";

const data = pageData();
let item = data.item;
const types = data.defect_types;
const root = document.getElementById("detail");
const viewer = new Viewer();
let pending = 0;
let chain = Promise.resolve();

function describe(entry) {
  const snap = entry.after || entry.before || {};
  const what = snap.verdict === "pass" ? "OK" : snap.defect_type || "defect";
  return entry.action === "label.undo" ? `undid ${what}` : `labelled ${what}`;
}

function renderHistory() {
  const list = document.getElementById("history");
  list.replaceChildren();
  if (!item.history.length) {
    list.append(el("li", { class: "muted" }, "No labels yet"));
    return;
  }
  for (const entry of item.history) {
    list.append(
      el(
        "li",
        { class: entry.action === "label.undo" ? "is-undo" : "" },
        el("span", {}, el("strong", {}, entry.actor), " ", describe(entry)),
        el("span", { class: "muted" }, fmtTime(entry.at)),
      ),
    );
  }
}

function render() {
  root.dataset.currentId = String(item.id);
  renderFacts(document.getElementById("facts"), item);
  renderHistory();
}

async function reload() {
  item = await api("GET", `/api/inspections/${item.id}`);
  render();
}

function enqueue(work) {
  pending += 1;
  root.dataset.pending = String(pending);
  chain = chain
    .then(work)
    .then(reload)
    .catch((error) => toast(error.message, "error"))
    .finally(() => {
      pending -= 1;
      root.dataset.pending = String(pending);
    });
}

const keys = bindKeys(
  {
    label: (verdict, defectType) => {
      const added = defectType ? addType(types, defectType, item.station_id) : null;
      if (added) keys.setTypes(types);
      enqueue(async () => {
        if (added === "new") await keys.createType(defectType, item.station_id);
        await api("POST", `/api/inspections/${item.id}/labels`, { verdict, defect_type: defectType });
        toast(verdict === "pass" ? "Labelled OK" : `Labelled ${defectType}`);
      });
    },
    skip: () => {
      if (data.next_id) window.location.href = `/inspections/${data.next_id}`;
    },
    undo: () =>
      enqueue(async () => {
        await api("DELETE", `/api/inspections/${item.id}/labels/latest`);
        toast("Undone");
      }),
    next: () => {
      if (data.next_id) window.location.href = `/inspections/${data.next_id}`;
    },
    prev: () => {
      if (data.prev_id) window.location.href = `/inspections/${data.prev_id}`;
    },
    open: () => {},
    enqueue,
  },
  viewer,
  types,
);

keys.setStation(item.station_id, item.station);
viewer.show(item);
render();
