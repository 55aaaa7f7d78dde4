// Forms that change what the line does (promote, roll back, save thresholds) ask first: a form
// with data-confirm="..." submits only after the user confirms that message, which names what
// changes, and then carries confirmed=yes. Without it the server changes nothing and asks on a
// page of its own (inspection/api/confirmations.py), so a form posted without JavaScript still
// takes two steps. Loaded on every page (no inline scripts: the Content-Security-Policy forbids
// them). Also: filter forms leave empty fields out (below).
document.addEventListener(
  "submit",
  (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
    if (!window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      event.stopImmediatePropagation();
      return;
    }
    let field = form.querySelector("input[name=confirmed]");
    if (!field) {
      field = document.createElement("input");
      Object.assign(field, { type: "hidden", name: "confirmed" });
      form.append(field);
    }
    field.value = "yes";
  },
  true,
);

// Filter forms (method="get") leave their empty fields out of the URL: "station_id=" is not a
// station, and the server rightly refuses it (422), so "All stations" / "any" mean "not sent".
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || form.method !== "get" || event.defaultPrevented) return;
  for (const field of form.elements) {
    if ((field instanceof HTMLInputElement || field instanceof HTMLSelectElement) && field.name && field.value === "") {
      field.disabled = true;
      window.setTimeout(() => { field.disabled = false; }, 0);
    }
  }
});
