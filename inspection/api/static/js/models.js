// Model versions page: tick exactly two versions, then "Compare selected" opens /models?a=&b=.
const picks = () => Array.from(document.querySelectorAll("input.compare-pick:checked"));
const button = document.getElementById("compare-btn");
const form = document.getElementById("compare-form");

function update() {
  button.disabled = picks().length !== 2;
}

document.addEventListener("change", (event) => {
  if (!event.target.classList.contains("compare-pick")) return;
  const chosen = picks();
  if (chosen.length > 2) {
    chosen.filter((box) => box !== event.target).slice(0, chosen.length - 2).forEach((box) => {
      box.checked = false;
    });
  }
  update();
});

form.addEventListener("submit", (event) => {
  const chosen = picks();
  if (chosen.length !== 2) {
    event.preventDefault();
    return;
  }
  form.replaceChildren();
  for (const [name, box] of [["a", chosen[0]], ["b", chosen[1]]]) {
    const input = document.createElement("input");
    input.type = "hidden";
    input.name = name;
    input.value = box.value;
    form.append(input);
  }
});

update();
