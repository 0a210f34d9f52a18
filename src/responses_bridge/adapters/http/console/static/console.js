// The console's one script, served from /console/static/ (the page's CSP allows this file and nothing inline). Every
// page works without it; with it: a copy button copies the text of the element it names, and a running response's
// page follows its output as it streams (the server-sent events of /console/logs/{id}/live), reloading once it ends.
"use strict";

document.addEventListener("click", (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const said = button.parentElement.querySelector(".copied");
  navigator.clipboard.writeText(source.textContent).then(() => { if (said) said.hidden = false; });
});

const live = document.querySelector("[data-live]");
if (live && window.EventSource) {
  const shown = document.getElementById("live-text");
  const events = new EventSource(live.dataset.live);
  events.addEventListener("delta", (event) => { shown.textContent += JSON.parse(event.data); });
  events.addEventListener("done", () => { events.close(); window.location.reload(); });
  events.onerror = () => { events.close(); };
}
