// Family names come from the server a few at a time (an index may hold thousands of families).
(function () {
  const input = document.getElementById("family");
  const list = document.getElementById("family-list");
  if (!input || !list) return;
  let timer = null;
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const response = await fetch("/api/families?q=" + encodeURIComponent(input.value));
      if (!response.ok) return;
      list.replaceChildren(...(await response.json()).map((name) => new Option(name, name)));
    }, 150);
  });
})();
