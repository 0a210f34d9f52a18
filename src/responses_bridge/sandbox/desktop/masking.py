"""What a sign-in submitted stays out of every picture: from just before its values are filled until the desktop
leaves the credential origin, the pages of that origin show them masked, or the screen is not sent.

Sent as source with agent.py (after page.py, before agent.py: the standard library only), never imported by the
bridge. The values stay in the desktop's process memory only, as long as a page of the origin may show them
(the browser's page has them anyway), and are dropped once no tab stands there.

How: in the bridge's isolated world of each such document (page.py's :data:`WORLD`, which the page's script cannot
reach), :data:`MASK_JS` replaces each value wherever the DOM holds it — text (the title's too: it is a text node),
every attribute (what CSS ``attr()`` could draw), the open shadow roots — with :data:`BULLETS`, and draws a text
field or text area whose value holds one as discs; in the tab's main document and in every frame of the origin
within it (a same-origin ``<iframe>``), each checked before each screenshot. A ``MutationObserver`` does it again
on every change: its callback runs at the microtask checkpoint of the page's task that made the change, before the
browser paints, so a page that mirrors the field into its text is never drawn with the value. A new document of
the origin (the submission's answer, say) gets the same at its start, before its own script runs
(``Page.addScriptToEvaluateOnNewDocument`` in that world).

:meth:`Masking.check` runs before every screenshot of the desktop (the model's, the stored item's, the watch
feed's: they are all the desktop process's answers). When a value is still in a page's DOM after masking, or in a
page's address (the address bar shows it), the screenshot is not sent: ``why`` says so and the bridge tells the
model. What no DOM view holds is out of reach — a value drawn on a canvas, into an image, or in a closed shadow
root; docs/agents.md says so.

Values shorter than :data:`MIN_MASKED` characters are not masked (a one-letter value would mask that letter
everywhere).
"""

import contextlib
import json
from typing import TYPE_CHECKING
from urllib.parse import unquote, unquote_plus

if TYPE_CHECKING:  # in the call, devtools.py's and page.py's sources come before this file's (desktop.py)
    from .devtools import DevToolsError
    from .page import WORLD, Pages

MIN_MASKED = 3
BULLETS = "\u2022" * 8
"""What a value is replaced with: always eight, so its length is not shown either."""

MASK_JS = """(values) => {
  const state = window.__bridgeMask || (window.__bridgeMask = {values: [], roots: new Set(), observer: null});
  for (const value of values) if (!state.values.includes(value)) state.values.push(value);
  const has = text => typeof text === 'string' && state.values.some(value => text.includes(value));
  const scrub = text => state.values.reduce((out, value) => out.split(value).join('BULLETS'), text);
  let masked = 0;
  const element = e => {
    for (const attribute of [...e.attributes])
      if (has(attribute.value)) { e.setAttribute(attribute.name, scrub(attribute.value)); masked++; }
    if ((e instanceof HTMLInputElement && e.type !== 'password' || e instanceof HTMLTextAreaElement) &&
        has(e.value) && e.style.getPropertyValue('-webkit-text-security') !== 'disc') {
      e.style.setProperty('-webkit-text-security', 'disc', 'important');
      masked++;
    }
    if (e.shadowRoot) root(e.shadowRoot);
  };
  const node = n => {
    if (n.nodeType === Node.TEXT_NODE) { if (has(n.data)) { n.data = scrub(n.data); masked++; } return; }
    if (n.nodeType === Node.ELEMENT_NODE) element(n);
    if (n.nodeType !== Node.ELEMENT_NODE && n.nodeType !== Node.DOCUMENT_NODE &&
        n.nodeType !== Node.DOCUMENT_FRAGMENT_NODE) return;
    const walker = document.createTreeWalker(n, NodeFilter.SHOW_ELEMENT | NodeFilter.SHOW_TEXT);
    for (let next = walker.nextNode(); next; next = walker.nextNode()) {
      if (next.nodeType === Node.TEXT_NODE) { if (has(next.data)) { next.data = scrub(next.data); masked++; } }
      else element(next);
    }
  };
  const changed = records => {
    for (const record of records) {
      if (record.type === 'childList') record.addedNodes.forEach(node);
      else if (record.type === 'attributes') element(record.target);
      else node(record.target);
    }
  };
  const watch = where => state.observer.observe(where, {subtree: true, childList: true, characterData: true,
                                                        attributes: true});
  const root = shadow => { if (!state.roots.has(shadow)) { state.roots.add(shadow); watch(shadow); } node(shadow); };
  if (!state.observer) {
    state.observer = new MutationObserver(changed);
    watch(document);
    // a field's value set by a keystroke is no mutation: masked as it is typed
    document.addEventListener('input', event => event.target instanceof Element && element(event.target), true);
  }
  node(document);
  const before = masked;
  node(document);  // what is left: nothing, unless the page put it back at once
  return {masked: before, left: masked - before};
}""".replace("BULLETS", BULLETS)
"""Mask the values in the document (and keep masking them): how many places were masked now, and how many still
held one right after (a page fighting the mask)."""


class Masking:
    """The submitted values of the desktop's last sign-in and their origin, while a tab may show them."""

    def __init__(self, pages: "Pages") -> None:
        self.pages = pages
        self._origin: str | None = None
        self._values: list[str] = []
        self._scripts: dict[str, str] = {}  # session: the identifier of the script its new documents start with

    @property
    def active(self) -> bool:
        return self._origin is not None

    def start(self, session: str, origin: str, values: dict[str, str], timeout: float = 1.0) -> None:
        """Mask ``values`` in ``origin``'s pages from now on: ``session``'s new documents before anything else."""
        self.end(timeout)
        self._origin = origin
        self._values = [value for value in values.values() if len(value) >= MIN_MASKED]
        self._boot(session, timeout)

    def moved(self, pages: "Pages") -> None:
        """The browser was started again (browser.py): the values stay masked in the new browser's pages — its
        new documents' scripts are added at the next :meth:`check`; the old browser's went with it."""
        self.pages = pages
        self._scripts.clear()

    def install(self, session: str, context: int, timeout: float = 1.0) -> None:
        """Masking in the document of ``context`` (the bridge's world in it), before values are filled there."""
        if self._values:
            with contextlib.suppress(DevToolsError):
                self.pages.evaluate(session, context, f"({MASK_JS})({json.dumps(self._values)})", timeout)

    def _boot(self, session: str, timeout: float) -> None:
        if not self._values or session in self._scripts:
            return
        source = (f"if (location.origin === {json.dumps(self._origin)}) "
                  f"({MASK_JS})({json.dumps(self._values)});")
        with contextlib.suppress(DevToolsError, KeyError):
            self._scripts[session] = self.pages.devtools.call(
                "Page.addScriptToEvaluateOnNewDocument", {"source": source, "worldName": WORLD}, session,
                timeout)["identifier"]

    def check(self, timeout: float = 1.0) -> tuple[int, str | None]:
        """Before a screenshot: the values masked in every tab at the origin — how many places were masked now,
        and why the screen may not be sent (None: it may). No tab there any more: masking ends."""
        if self._origin is None:
            return 0, None
        masked, present = 0, False
        try:
            for target in self.pages.targets(timeout):
                session = target["session"]
                frames = self.pages.frames(session, timeout)
                if (frames[0].get("securityOrigin") or "null") == self._origin:
                    present = True
                    if self._shown_in(str(frames[0].get("url", ""))):  # the address bar shows the main frame's
                        return masked, "the page's address holds a value of the sign-in"
                    self._boot(session, timeout)
                    shown = frames if self._values else []
                else:  # another origin's tab: its frames of the origin (an about:blank one inherits its creator's)
                    shown = [frame for frame in frames[1:] if self._values and (
                        (frame.get("securityOrigin") or "null") == self._origin)]
                for frame in shown:  # every frame of such a tab: an about:blank or srcdoc child is its creator's
                    try:
                        context = self.pages.world(target["targetId"], session, frame, timeout)
                    except DevToolsError:
                        if frame is frames[0]:
                            raise
                        continue  # a frame in another renderer (another site's): not this origin's document
                    found = self.pages.evaluate(session, context, f"({MASK_JS})({json.dumps(self._values)})",
                                                timeout)
                    if not isinstance(found, dict):
                        return masked, "the page could not be checked for the sign-in's values"
                    masked += int(found.get("masked") or 0)
                    if found.get("left"):
                        return masked, "the page shows a value of the sign-in and keeps putting it back"
        except (DevToolsError, KeyError, TypeError, ValueError):
            return masked, "the page could not be checked for the sign-in's values"
        if not present:
            self.end(timeout)
        return masked, None

    def _shown_in(self, url: str) -> bool:
        decoded = {url, unquote(url), unquote_plus(url)}
        return any(value in text for value in self._values for text in decoded)

    def end(self, timeout: float = 1.0) -> None:
        """The values forgotten, the new documents' script removed."""
        for session, identifier in self._scripts.items():
            with contextlib.suppress(DevToolsError):
                self.pages.devtools.call("Page.removeScriptToEvaluateOnNewDocument", {"identifier": identifier},
                                         session, timeout)
        self._scripts.clear()
        self._values.clear()
        self._origin = None
