// The review queue: a list of inspections, the viewer, and one-key labelling with undo.
// Labels are saved in order through a promise chain, so fast typing never reorders writes;
// #review[data-pending] says how many are still being saved.
import { api, el, fmtTime, pageData, toast } from "./common.js";
import { addType, bindKeys } from "./keys.js";
import { Viewer, renderFacts } from "./viewer.js";

const data = pageData();
const state = {
  items: data.items,
  index: 0,
  nextCursor: data.next_cursor,
  loadingMore: false,
  undoStack: [],
  pending: 0,
  reviewed: 0,
  chain: Promise.resolve(),
  types: data.defect_types,
};

const root = document.getElementById("review");
const list = document.getElementById("queue-list");
const facts = document.getElementById("facts");
const history = document.getElementById("history");
const viewer = new Viewer();

function labelText(label) {
  if (!label) return "";
  return label.verdict === "pass" ? "✓ OK" : `✗ ${label.defect_type || "defect"}`;
}

function renderItem(item, index) {
  const classes = ["queue-item"];
  if (index === state.index) classes.push("selected");
  if (item.label) classes.push("labelled", `label-${item.label.verdict}`);
  if (item.skipped && !item.label) classes.push("skipped");
  if (item.error) classes.push("error");
  const badges = [];
  if (item.has_unknown) badges.push(el("span", { class: "badge badge-unknown" }, "unknown"));
  else if (item.predicted_type) badges.push(el("span", { class: "badge" }, item.predicted_type));
  if (item.uncertain) badges.push(el("span", { class: "badge badge-uncertain" }, "uncertain"));
  const node = el(
    "li",
    {
      class: classes.join(" "),
      id: `q-${item.id}`,
      dataset: { id: String(item.id), label: labelText(item.label) },
    },
    el("img", { src: item.thumb_url || "", alt: "", loading: "lazy" }),
    el(
      "div",
      // The label is shown by CSS (.meta::after reads attr(data-label) of this element).
      { class: "meta", dataset: { label: labelText(item.label) } },
      el("div", { class: "line1" }, `#${item.id}`, ...badges),
      el("div", { class: "line2" }, `${item.station} · ${fmtTime(item.captured_at)}`),
    ),
    el(
      "div",
      { class: "score" },
      el("div", { class: item.norm_score >= item.threshold ? "v fail" : "v" }, item.norm_score.toFixed(3)),
      el("div", { class: "muted" }, item.verdict),
    ),
  );
  node.addEventListener("click", () => select(index));
  return node;
}

function renderList() {
  list.replaceChildren(...state.items.map(renderItem));
  document.getElementById("loaded-count").textContent = `${state.items.length} loaded`;
  document.getElementById("more-state").textContent = state.nextCursor
    ? "more below"
    : state.items.length
      ? "end of queue"
      : "";
}

function updateRow(index) {
  const old = list.children[index];
  if (old) old.replaceWith(renderItem(state.items[index], index));
}

function renderHistory(item) {
  history.replaceChildren();
  if (!item || !item.label) {
    history.append(el("li", { class: "muted" }, "No labels yet"));
    return;
  }
  history.append(el("li", {}, el("span", {}, labelText(item.label)), el("span", { class: "muted" }, item.label.user)));
  history.append(el("li", {}, el("a", { href: item.detail_url }, "Full history →")));
}

function current() {
  return state.items[state.index] || null;
}

function show() {
  const item = current();
  root.dataset.currentId = item ? String(item.id) : "";
  if (item) keys.setStation(item.station_id, item.station); // keys are per station
  viewer.show(item);
  renderFacts(facts, item);
  renderHistory(item);
  if (!item) {
    facts.append(
      el("div", { class: "empty-state" }, el("h2", {}, "Queue is empty"), el("p", {}, "Nothing left to review with these filters.")),
    );
  }
  const row = list.children[state.index];
  if (row) row.scrollIntoView({ block: "nearest" });
}

function select(index) {
  if (!state.items.length) {
    state.index = 0;
    show();
    return;
  }
  const previous = state.index;
  state.index = Math.max(0, Math.min(state.items.length - 1, index));
  if (previous !== state.index) updateRow(previous);
  updateRow(state.index);
  show();
  maybeLoadMore();
}

/** The next item after the current one that has no label yet (or simply the next). */
function advance() {
  for (let i = state.index + 1; i < state.items.length; i += 1) {
    if (!state.items[i].label) {
      select(i);
      return;
    }
  }
  if (state.index < state.items.length - 1) select(state.index + 1);
  else {
    updateRow(state.index);
    show();
    maybeLoadMore(true);
  }
}

async function maybeLoadMore(force = false) {
  if (!state.nextCursor || state.loadingMore) return;
  if (!force && state.items.length - state.index > 10) return;
  state.loadingMore = true;
  try {
    const sep = data.query ? "&" : "";
    const url = `/api/review-queue?${data.query}${sep}cursor=${encodeURIComponent(state.nextCursor)}&limit=50`;
    const page = await api("GET", url);
    const known = new Set(state.items.map((i) => i.id));
    const fresh = page.items.filter((i) => !known.has(i.id));
    const wasAtEnd = state.index >= state.items.length - 1 && current() && current().label;
    state.items.push(...fresh);
    state.nextCursor = page.next_cursor;
    renderList();
    if (wasAtEnd) advance();
  } catch (error) {
    toast(`Could not load more: ${error.message}`, "error");
  } finally {
    state.loadingMore = false;
  }
}

async function refreshCount() {
  try {
    const count = await api("GET", `/api/review-queue/count?${data.query}`);
    document.getElementById("queue-count").textContent = `${count.count.toLocaleString()}${count.capped ? "+" : ""}`;
  } catch (_) {
    document.getElementById("queue-count").textContent = "?";
  }
}

function setPending(delta) {
  state.pending += delta;
  root.dataset.pending = String(state.pending);
  const sync = document.getElementById("sync-state");
  sync.textContent = state.pending ? `Saving ${state.pending}…` : "All saved";
  sync.className = state.pending ? "sync-busy" : "sync-ok";
  if (!state.pending) refreshCount();
}

/** Queue a write; writes run one after another in the order they were asked for. */
function enqueue(work) {
  setPending(1);
  state.chain = state.chain
    .then(work)
    .catch((error) => toast(error.message, "error"))
    .finally(() => setPending(-1));
}

function label(verdict, defectType) {
  const item = current();
  if (!item) return;
  if (item.label && item.label.pending) return;
  const index = state.index;
  const optimistic = { verdict, defect_type: defectType, user: data.user.username, pending: true };
  const previous = item.label;
  item.label = optimistic;
  item.error = false;
  state.undoStack.push({ id: item.id, previous });
  state.reviewed += 1;
  document.getElementById("reviewed-count").textContent = String(state.reviewed);
  const added = defectType ? addType(state.types, defectType, item.station_id) : null;
  if (added) keys.setTypes(state.types);
  advance();
  enqueue(async () => {
    try {
      if (added === "new") await keys.createType(defectType, item.station_id);
      const saved = await api("POST", `/api/inspections/${item.id}/labels`, {
        verdict,
        defect_type: defectType,
      });
      item.label = saved;
    } catch (error) {
      item.label = previous;
      item.error = true;
      state.reviewed -= 1;
      document.getElementById("reviewed-count").textContent = String(state.reviewed);
      state.undoStack = state.undoStack.filter((entry) => entry.id !== item.id);
      throw new Error(`#${item.id} not saved: ${error.message}`);
    } finally {
      updateRow(index);
      if (current() === item) show();
    }
  });
}

function undo() {
  const entry = state.undoStack.pop();
  if (!entry) {
    toast("Nothing to undo");
    return;
  }
  const index = state.items.findIndex((i) => i.id === entry.id);
  const item = state.items[index];
  if (!item) return;
  item.label = entry.previous;
  state.reviewed = Math.max(0, state.reviewed - 1);
  document.getElementById("reviewed-count").textContent = String(state.reviewed);
  select(index);
  enqueue(async () => {
    try {
      await api("DELETE", `/api/inspections/${item.id}/labels/latest`);
      toast(`Undone: #${item.id}`);
    } finally {
      updateRow(index);
    }
  });
}

function skip() {
  const item = current();
  if (!item) return;
  item.skipped = true;
  updateRow(state.index);
  if (state.index < state.items.length - 1) select(state.index + 1);
  else maybeLoadMore(true);
}

const keys = bindKeys(
  {
    label,
    skip,
    undo,
    enqueue,
    next: () => select(state.index + 1),
    prev: () => select(state.index - 1),
    open: () => {
      const item = current();
      if (item) window.location.href = item.detail_url;
    },
  },
  viewer,
  state.types,
);

window.addEventListener("beforeunload", (event) => {
  if (state.pending) event.preventDefault();
});

renderList();
select(0);
refreshCount();
