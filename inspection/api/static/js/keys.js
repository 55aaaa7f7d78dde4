// One-key labelling: maps key presses to actions and runs the "new type" and help dialogs.
// A type named in the "new type" dialog is created by its own request (POST /api/defect-types,
// audited defect_type.create) before the label that uses it; until the page is left, its legend
// entry has a button that undoes the creation (DELETE /api/defect-types/{id}).
import { api, el, isTyping, toast } from "./common.js";

/**
 * Listen for labelling shortcuts and call handlers:
 *   label(verdict, defectType), skip(), undo(), next(), prev(), open(),
 *   enqueue(work) (runs an async write after the page's pending ones),
 *   and viewer.toggleOverlay() / cycleMode() / changeOpacity() / toggleOutlines().
 * Keys are per station (each type's `keys` maps a station id to its key there): 1-9 follow the
 * station set with setStation(id, name), the shown item's.
 * Returns { setTypes(types), setStation(id, name), createType(name) }: redraw the mapping; follow
 * another station; create a type named in the dialog at the current station (call it in the
 * page's write chain, before the label that uses it).
 */
export function bindKeys(handlers, viewer, types) {
  let byKey = new Map();
  let station = { id: null, name: "" };
  const createdHere = new Set(); // names of the types this page created (undoable here)
  const setTypes = (list) => {
    const keyed = atStation(list, station.id);
    byKey = new Map(keyed.map(([key, t]) => [String(key), t.name]));
    renderLegend(keyed, station.name, createdHere, undoType);
  };
  const setStation = (id, name) => {
    if (id === station.id) return;
    station = { id, name };
    setTypes(types);
  };

  async function createType(name, stationId) {
    let saved;
    try {
      saved = await api("POST", "/api/defect-types", { name, station_id: stationId });
    } catch (error) {
      if (error.status === 409) return; // someone created it meanwhile: label with theirs
      throw error;
    }
    const entry = types.find((t) => t.name === saved.name);
    if (entry) Object.assign(entry, { id: saved.id, keys: saved.keys });
    else types.push({ id: saved.id, name: saved.name, keys: saved.keys });
    createdHere.add(saved.name);
    setTypes(types);
  }

  function undoType(entry) {
    handlers.enqueue(async () => {
      try {
        await api("DELETE", `/api/defect-types/${entry.id}`);
      } catch (error) {
        throw new Error(`${entry.name} stays: ${error.message}`);
      }
      const index = types.indexOf(entry);
      if (index >= 0) types.splice(index, 1);
      createdHere.delete(entry.name);
      setTypes(types);
      toast(`Removed the new type ${entry.name}; its key is free again`);
    });
  }

  const newTypeModal = document.getElementById("newtype-modal");
  const newTypeForm = document.getElementById("newtype-form");
  const newTypeName = document.getElementById("newtype-name");
  const helpModal = document.getElementById("help-modal");
  const isOpen = (modal) => modal && !modal.hidden;

  const closeModals = () => {
    if (newTypeModal) newTypeModal.hidden = true;
    if (helpModal) helpModal.hidden = true;
  };
  const openNewType = () => {
    newTypeName.value = "";
    newTypeModal.hidden = false;
    newTypeName.focus();
  };
  newTypeForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const name = newTypeName.value.trim();
    if (!name || !newTypeName.checkValidity()) {
      newTypeName.reportValidity();
      return;
    }
    newTypeModal.hidden = true;
    newTypeName.blur();
    // The page creates the type first (createType, in its write chain) when it is new to it.
    handlers.label("fail", name.toLowerCase());
  });
  document.getElementById("newtype-cancel").addEventListener("click", closeModals);
  document.getElementById("help-close").addEventListener("click", closeModals);

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      closeModals();
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (isOpen(newTypeModal) || isTyping(event)) return;
    if (isOpen(helpModal)) {
      if (event.key === "?") closeModals();
      return;
    }
    const key = event.key;
    let handled = true;
    if (key === "o") handlers.label("pass", null);
    else if (byKey.has(key)) handlers.label("fail", byKey.get(key));
    else if (key === "n") openNewType();
    else if (key === "s") handlers.skip();
    else if (key === "u") handlers.undo();
    else if (key === "j" || key === "ArrowDown") handlers.next();
    else if (key === "k" || key === "ArrowUp") handlers.prev();
    else if (key === "Enter") handlers.open();
    else if (key === "h") viewer.toggleOverlay();
    else if (key === "b") viewer.toggleOutlines();
    else if (key === "v") viewer.cycleMode();
    else if (key === "[") viewer.changeOpacity(-10);
    else if (key === "]") viewer.changeOpacity(10);
    else if (key === "?") helpModal.hidden = false;
    else handled = false;
    if (handled) event.preventDefault();
  });
  return { setTypes, setStation, createType };
}

/** The types with a key at the station as [key, type] pairs, by key. */
function atStation(types, stationId) {
  return types
    .map((t) => [(t.keys || {})[stationId], t])
    .filter(([key]) => key)
    .sort((a, b) => a[0] - b[0]);
}

/** Rebuild the key legend (#key-legend) for one station's keys ([key, type] pairs); the types
 * this page created get an undo button. */
function renderLegend(keyed, stationName, createdHere, undoType) {
  const legend = document.getElementById("key-legend");
  if (!legend) return;
  const caption = document.getElementById("key-station");
  if (caption) caption.textContent = stationName;
  const row = (key, text) => [el("kbd", {}, key), el("span", {}, text)];
  const typeRow = ([key, t]) => {
    if (!createdHere.has(t.name) || !t.id) return row(String(key), t.name);
    const button = el(
      "button",
      { type: "button", class: "undo-type", title: `Undo new type ${t.name}`, "aria-label": `Undo new type ${t.name}` },
      "undo",
    );
    button.addEventListener("click", () => {
      button.disabled = true;
      button.blur();
      undoType(t);
    });
    return [el("kbd", {}, String(key)), el("span", {}, t.name, " ", button)];
  };
  legend.replaceChildren(
    ...row("o", "OK part (pass)"),
    el("span", { class: "sep" }),
    ...keyed.flatMap(typeRow),
    ...row("n", "new defect type…"),
    el("span", { class: "sep" }),
    ...row("s", "skip"),
    ...row("u", "undo last label"),
    el("kbd", {}, "j"),
    el("span", {}, "next · ", el("kbd", {}, "k"), " previous"),
    ...row("?", "all shortcuts"),
  );
}

/**
 * Before a label with `name` at a station: add the type to the list if the page does not know
 * it, and give it the lowest free key at that station if it has none there (the server's rule;
 * existing keys never move). Returns "new" (create it first: createType), "keyed" or null.
 */
export function addType(types, name, stationId) {
  let entry = types.find((t) => t.name === name);
  const isNew = !entry;
  if (isNew) {
    entry = { id: null, name, keys: {} };
    types.push(entry);
  }
  entry.keys = entry.keys || {};
  if (entry.keys[stationId]) return isNew ? "new" : null;
  const used = new Set(atStation(types, stationId).map(([key]) => key));
  for (let k = 1; k <= 9; k += 1) {
    if (!used.has(k)) {
      entry.keys[stationId] = k;
      break;
    }
  }
  return isNew ? "new" : "keyed";
}
