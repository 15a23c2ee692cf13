// Review decisions: each button posts one decision and shows the server's answer in the row.
(function () {
  const review = document.getElementById("review");
  if (!review) return;
  const upload = review.dataset.upload;
  const labelList = document.getElementById("label-list");

  async function decide(row, action, label) {
    const state = row.querySelector(".state");
    const response = await fetch(`/api/review/${upload}/glyphs/${row.dataset.glyphId}`, {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({action, label}),
    });
    const body = await response.json();
    if (!response.ok) {
      state.querySelector(".final").textContent = body.error;
      state.classList.add("error");
      return;
    }
    state.classList.remove("error");
    state.querySelector(".final").textContent = body.decision ? `${body.decision}: ${body.final_text}` : "";
    state.querySelector(".conflict").textContent = body.conflicts.length ? `also on ${body.conflicts.join(", ")}` : "";
    row.classList.toggle("decided", Boolean(body.decision));
    row.dataset.final = body.final;
    document.getElementById("decided").textContent = body.decided;
  }

  let timer = null;
  async function suggest(text) {
    const response = await fetch("/api/labels?q=" + encodeURIComponent(text));
    if (!response.ok) return;
    labelList.replaceChildren(...(await response.json()).map((l) => new Option(l.text, l.label)));
  }

  for (const row of document.querySelectorAll("tr.glyph")) {
    const input = row.querySelector(".label-input");
    row.querySelector(".accept").addEventListener("click", () => decide(row, "accept"));
    row.querySelector(".unknown").addEventListener("click", () => decide(row, "unknown"));
    row.querySelector(".change").addEventListener("click", () => decide(row, "change", input.value));
    input.addEventListener("keydown", (e) => { if (e.key === "Enter") decide(row, "change", input.value); });
    input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => suggest(input.value), 150); });
    for (const pick of row.querySelectorAll(".pick")) {
      pick.addEventListener("click", () => decide(row, "change", pick.dataset.label));
    }
  }
})();
