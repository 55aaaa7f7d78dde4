// Forms that change what the line does (promote, roll back, save thresholds) ask first: a form
// with data-confirm="..." submits only after the user confirms that message, which names what
// changes. Loaded on every page (no inline scripts: the Content-Security-Policy forbids them).
document.addEventListener(
  "submit",
  (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
    if (!window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  },
  true,
);
