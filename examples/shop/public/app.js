// Asks the server that delivered this bundle which version it runs and shows it, so a page
// opened during a deployment tells which release the bundle came from.
(async () => {
  const out = document.getElementById("version");
  try {
    const info = await (await fetch("/version.json", { cache: "no-store" })).json();
    out.textContent = `${info.service} ${info.version.slice(0, 12)}`;
  } catch (err) {
    out.textContent = `unavailable (${err})`;
  }
})();
