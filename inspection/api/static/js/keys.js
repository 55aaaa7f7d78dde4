// One-key labelling: maps key presses to actions and runs the "new type" and help dialogs.
import { el, isTyping } from "./common.js";

/**
 * Listen for labelling shortcuts and call handlers:
 *   label(verdict, defectType), skip(), undo(), next(), prev(), open(),
 *   and viewer.toggleOverlay() / cycleMode() / changeOpacity() / toggleOutlines().
 * Returns an object with setTypes(types) to change the 1-9 mapping.
 */
export function bindKeys(handlers, viewer, types) {
  let byKey = new Map();
  const setTypes = (list) => {
    byKey = new Map(list.filter((t) => t.key).map((t) => [String(t.key), t.name]));
    renderLegend(list);
  };
  setTypes(types);

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
    // The server creates the type as its own audited action (defect_type.create, undone with
    // DELETE /api/defect-types/{id}) and gives it the lowest free key, as addType does here.
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
  return { setTypes };
}

/** Rebuild the key legend (#key-legend) for the current defect types. */
function renderLegend(types) {
  const legend = document.getElementById("key-legend");
  if (!legend) return;
  const row = (key, text) => [el("kbd", {}, key), el("span", {}, text)];
  legend.replaceChildren(
    ...row("o", "OK part (pass)"),
    el("span", { class: "sep" }),
    ...types.filter((t) => t.key).flatMap((t) => row(String(t.key), t.name)),
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
