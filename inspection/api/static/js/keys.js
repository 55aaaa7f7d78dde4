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
 * Returns { setTypes(types), createType(name) }: change the 1-9 mapping; create a type named in
 * the dialog (call it in the page's write chain, before the label that uses it).
 */
export function bindKeys(handlers, viewer, types) {
  let byKey = new Map();
  const createdHere = new Set(); // names of the types this page created (undoable here)
  const setTypes = (list) => {
    byKey = new Map(list.filter((t) => t.key).map((t) => [String(t.key), t.name]));
    renderLegend(list, createdHere, undoType);
  };
  setTypes(types);

  async function createType(name) {
    let saved;
    try {
      saved = await api("POST", "/api/defect-types", { name });
    } catch (error) {
      if (error.status === 409) return; // someone created it meanwhile: label with theirs
      throw error;
    }
    const entry = types.find((t) => t.name === saved.name);
    if (entry) Object.assign(entry, { id: saved.id, key: saved.key });
    else types.push({ id: saved.id, name: saved.name, key: saved.key });
    types.sort((a, b) => (a.key ?? 99) - (b.key ?? 99) || a.name.localeCompare(b.name));
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
      toast(`Removed the new type ${entry.name}; key ${entry.key} is free again`);
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
  return { setTypes, createType };
}

/** Rebuild the key legend (#key-legend) for the current defect types; the types this page
 * created get an undo button. */
function renderLegend(types, createdHere, undoType) {
  const legend = document.getElementById("key-legend");
  if (!legend) return;
  const row = (key, text) => [el("kbd", {}, key), el("span", {}, text)];
  const typeRow = (t) => {
    if (!createdHere.has(t.name) || !t.id) return row(String(t.key), t.name);
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
    return [el("kbd", {}, String(t.key)), el("span", {}, t.name, " ", button)];
  };
  legend.replaceChildren(
    ...row("o", "OK part (pass)"),
    el("span", { class: "sep" }),
    ...types.filter((t) => t.key).flatMap(typeRow),
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
 * Add a defect type to the list (and the key legend): with the key the server gave it, or, for
 * a type created by a label, the lowest free key (the server's rule). Existing keys never move.
 */
export function addType(types, name, serverKey = undefined, id = null) {
  if (types.some((t) => t.name === name)) return false;
  const used = new Set(types.map((t) => t.key).filter(Boolean));
  let key = serverKey === undefined ? null : serverKey;
  for (let k = 1; serverKey === undefined && k <= 9; k += 1) {
    if (!used.has(k)) {
      key = k;
      break;
    }
  }
  types.push({ id, name, key });
  types.sort((a, b) => (a.key ?? 99) - (b.key ?? 99) || a.name.localeCompare(b.name));
  return true;
}
