"""The page's DOM as the desktop's process sees it: Chromium's DevTools protocol over ``--remote-debugging-pipe``,
for the browser's sign-in forms (OpenAI's ``browser_authentication``).

Sent as source with agent.py (before it, after devtools.py — the pipe it speaks over — into the same call: the
standard library only, no import of the bridge), never imported by the bridge.

Where a sign-in goes is judged outside the page, never from what its script can redefine:

- the document and its origin are the browser's: the main frame's ``securityOrigin`` and ``loaderId`` (a new one
  for every document) from ``Page.getFrameTree``, not ``location`` or ``performance.timeOrigin`` read in the page;
- the form is read and filled in an isolated world of that document (``Page.createIsolatedWorld``): the page's
  script shares its DOM but none of its JavaScript, so the getters used (the form's resolved ``action``, its
  ``method`` and ``target``, an input's ``value`` setter) are the browser's own, whatever the page redefined; the
  world's context dies with its document, so values cannot be filled into another one;
- the submission is watched at the network: from just before the values are filled until the submission has gone
  (:data:`GUARD` seconds at most), every request of the page is paused (``Fetch.enable``) and let through only to
  the credential origin; one anywhere else is failed before it is sent, and the sign-in is refused.

A form whose document is not the one asked about, or stands elsewhere, or posts elsewhere, in its address (GET),
or into another window, is refused before any value is filled, the reason said (never a value).

Strict and bounded: each call waits at most its timeout (a page stuck in a dialog or a loop answers late; a late
answer is dropped by its id), a message is at most :data:`MAX_MESSAGE` bytes, and whatever fails makes the
detection report nothing rather than fail the action. Detection is one ``Target.getTargets`` and, per page target
(the browser's tabs), one ``Runtime.evaluate`` (:data:`SHOWN_JS`: a visible password field?), and only where it
says yes one ``Page.getFrameTree`` and one ``Runtime.evaluate`` more (and one ``Page.createIsolatedWorld`` per new
document), done once after an action settled, never by polling.

What leaves this module for the bridge is the form's shape (ids, labels, required, types, the document's origin)
and a key naming the document; the values a client submits come in for :meth:`Pages.fill` and go nowhere but the
page (and masking.py, which keeps them out of the screen while the page may show them).
"""

import contextlib
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # in the call, devtools.py's source comes before this file's (desktop.py)
    from .devtools import MAX_MESSAGE, DevTools, DevToolsError, url_origin

MAX_PAGES = 8
MAX_FIELDS = 6
"""OpenAI's ``browser_authentication`` takes values for up to six fields."""
WORLD = "responses-bridge"
"""The isolated world the bridge reads and fills pages in (its own JavaScript globals, the page's DOM)."""
GUARD = 1.5
"""Seconds at most that a submission's requests are watched after the form was submitted."""

FIELDS_JS = """() => {
  const kinds = ['text', 'email', 'tel', 'password', 'number', 'url', 'search'];
  const shown = e => {
    if (e.disabled || e.readOnly || !e.getClientRects().length) return false;
    const box = e.getBoundingClientRect(), style = getComputedStyle(e);
    return box.width >= 2 && box.height >= 2 && style.visibility === 'visible' && Number(style.opacity) > 0;
  };
  if (document.visibilityState !== 'visible') return null;
  const password = [...document.querySelectorAll('input[type=password]')].find(shown);
  if (!password) return null;
  const scope = password.form ? [...password.form.elements] : [...document.querySelectorAll('input')];
  const inputs = scope.filter(e => e.tagName === 'INPUT' && kinds.includes(e.type) && shown(e)).slice(0, MAX_FIELDS);
  if (!inputs.includes(password)) inputs[inputs.length - 1] = password;
  const taken = new Set();
  const fields = inputs.map(e => {
    const base = (e.name || e.id || e.type).replace(/[^A-Za-z0-9_.-]/g, '_').slice(0, 60) || 'field';
    let id = base;
    for (let n = 2; taken.has(id); n++) id = base + '_' + n;
    taken.add(id);
    const named = (e.labels && e.labels.length && e.labels[0].innerText) || e.getAttribute('aria-label') ||
      e.placeholder || e.name || e.id || e.type;
    return {element: e, id, label: String(named).trim().slice(0, 200), required: e.required, type: e.type};
  });
  return {form: password.form, fields};
}""".replace("MAX_FIELDS", str(MAX_FIELDS))
"""The visible page's first shown password field, and the shown text-like fields of its form (of the page, for a
form-less one): what a sign-in form is here."""

POSTS_JS = """(form, origin) => {
  if (!form) return null;
  const read = name => Object.getOwnPropertyDescriptor(HTMLFormElement.prototype, name).get.call(form);
  let to = 'null';
  try { to = new URL(read('action')).origin; } catch (error) {}
  if (to !== origin) return 'the form posts to ' + to + ', not to ' + origin;
  if (read('method') !== 'post')
    return 'the form sends its values in its address (method ' + read('method') + '), where the screen and ' +
      'the history would show them';
  const target = read('target');
  if (target && target !== '_self') return 'the form submits into another window (target ' + target + ')';
  return null;
}"""
"""Why ``form`` may not be submitted for ``origin`` (null: it may), read with the isolated world's own getters:
its resolved action's origin, its method, its target (an ``<input name=action>`` shadows ``form.action`` for a
script; the prototype's getter does not look at it)."""

SHOWN_JS = "document.visibilityState === 'visible' && !!document.querySelector('input[type=password]')"
"""Whether the tab may show a sign-in form, asked in the page's own world (one call, as cheap as it can be): only
where it says so is the form looked for in the bridge's world. A page's script can make it say no — and so only
keeps its own form from being asked about — or yes, which costs that page the full look."""

DETECT_JS = "(() => { const found = (" + FIELDS_JS + ")(); return found && JSON.stringify({fields:" \
            " found.fields.map(({id, label, required, type}) => ({id, label, required, type}))}); })()"
FILL_JS = """(async (origin, values) => {
  const found = (FIELDS_JS)(), posts = (POSTS_JS);
  if (!found) return {outcome: 'gone', why: 'the sign-in form is no longer on the page'};
  let why = posts(found.form, origin);
  if (why) return {outcome: 'refused', why};
  const setValue = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
  const filled = [];
  let last = null;
  for (const field of found.fields) {
    if (!Object.prototype.hasOwnProperty.call(values, field.id)) continue;
    const e = field.element;
    // never drawn legibly: what is typed is masked like a password and transparent (a username is not masked)
    for (const [name, value] of [['-webkit-text-security', 'disc'], ['color', 'transparent'],
                                 ['caret-color', 'transparent'], ['text-shadow', 'none']])
      e.style.setProperty(name, value, 'important');
    e.focus();
    setValue.call(e, values[field.id]);
    e.dispatchEvent(new Event('input', {bubbles: true}));
    e.dispatchEvent(new Event('change', {bubbles: true}));
    filled.push(e);
    last = e;
  }
  const clear = () => { for (const e of filled) setValue.call(e, ''); };
  // the masked fields drawn before the page may change (two frames, at most 0.3 s): the screen never shows them
  // otherwise, whatever the submission does next
  await Promise.race([new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done))),
                      new Promise(done => setTimeout(done, 300))]);
  if (!found.fields.every(field => field.element.isConnected)) {
    clear();
    return {outcome: 'gone', why: 'the sign-in form left the page as it was filled', filled: true};
  }
  // the page may have changed the form as it was filled; where it now posts is not said: the page, which has the
  // values now, chose it (a host name can spell a value)
  if (posts(found.form, origin)) {
    clear();
    return {outcome: 'refused', filled: true,
            why: 'the page changed the form as its values were filled: it would no longer post them to ' + origin};
  }
  if (found.form) {
    HTMLFormElement.prototype.requestSubmit.call(found.form);
    return {outcome: 'submitted', filled: true};
  }
  if (last) last.focus();
  return {outcome: 'enter', filled: true};
})""".replace("FIELDS_JS", FIELDS_JS).replace("POSTS_JS", POSTS_JS)
"""Fill the form of the isolated world's document for ``origin`` ('refused' when it may not be: why), then submit
it ('submitted'), or, with no form, leave the focus in its last field for Enter to be pressed ('enter')."""
CLEAR_JS = """(() => {
  const setValue = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
  for (const e of document.querySelectorAll('input')) if (e.type !== 'hidden') setValue.call(e, '');
})()"""
"""A refused submission's page keeps no value: every input of its document emptied."""


class Pages:
    """The browser's page targets, a session attached to each once, the sign-in form of the visible one (the
    document it stands in, as the browser knows it), and the filling of that form."""

    def __init__(self, devtools: DevTools) -> None:
        self.devtools = devtools
        self._sessions: dict[str, str] = {}
        # (target, frame): (its document's loaderId, the world's context)
        self._worlds: dict[tuple[str, str], tuple[str, int]] = {}
        self._form: dict | None = None

    def targets(self, timeout: float) -> list[dict]:
        """The page targets (tabs), at most :data:`MAX_PAGES`, each with ``session`` (attached once)."""
        infos = self.devtools.call("Target.getTargets", {}, timeout=timeout)["targetInfos"]
        pages = [info for info in infos if info.get("type") == "page"][:MAX_PAGES]
        ids = {info["targetId"] for info in pages}
        self._sessions = {target: session for target, session in self._sessions.items() if target in ids}
        self._worlds = {key: world for key, world in self._worlds.items() if key[0] in ids}
        for info in pages:
            if info["targetId"] not in self._sessions:
                self._sessions[info["targetId"]] = self.devtools.call(
                    "Target.attachToTarget", {"targetId": info["targetId"], "flatten": True},
                    timeout=timeout)["sessionId"]
            info["session"] = self._sessions[info["targetId"]]
        return pages

    def frame(self, session: str, timeout: float) -> dict:
        """The page's main frame as the browser has it: ``id``, ``loaderId`` (its document), ``securityOrigin``,
        ``url``."""
        return self.devtools.call("Page.getFrameTree", {}, session, timeout)["frameTree"]["frame"]

    def frames(self, session: str, timeout: float) -> list[dict]:
        """The page's frames in its renderer (the main frame first, then its same-process children, at most
        :data:`MAX_PAGES` × 4), as :meth:`frame` gives the main one."""
        found: list[dict] = []
        waiting = [self.devtools.call("Page.getFrameTree", {}, session, timeout)["frameTree"]]
        while waiting and len(found) < MAX_PAGES * 4:
            tree = waiting.pop(0)
            found.append(tree["frame"])
            waiting += tree.get("childFrames") or []
        return found

    def world(self, target: str, session: str, frame: dict, timeout: float) -> int:
        """The context of the bridge's isolated world in ``frame``'s document (made once per document)."""
        known = self._worlds.get((target, frame["id"]))
        if known is not None and known[0] == frame["loaderId"]:
            return known[1]
        context = self.devtools.call("Page.createIsolatedWorld", {"frameId": frame["id"], "worldName": WORLD},
                                     session, timeout)["executionContextId"]
        self._worlds[(target, frame["id"])] = (frame["loaderId"], context)
        return context

    def evaluate(self, session: str, context: int, expression: str, timeout: float, **more: object) -> object:
        """``expression``'s value in ``context``; :class:`DevToolsError` when it threw (or the context is gone)."""
        found = self.devtools.call("Runtime.evaluate", {"expression": expression, "contextId": context,
                                                        "returnByValue": True, **more}, session, timeout)
        if "exceptionDetails" in found:
            raise DevToolsError("the expression threw")
        return found.get("result", {}).get("value")

    def sign_in(self, timeout: float = 0.5) -> dict | None:
        """The visible page's sign-in form (``{origin, key, fields}``: the origin and key the browser's), or None
        (none, or the browser did not answer in time: an action is never failed for it)."""
        try:
            for target in self.targets(timeout):
                shown = self.devtools.call("Runtime.evaluate", {"expression": SHOWN_JS, "returnByValue": True},
                                           target["session"], timeout).get("result", {}).get("value")
                if shown is False:  # the common case, one call a tab; a page that lies here only hides its form
                    continue
                frame = self.frame(target["session"], timeout)
                context = self.world(target["targetId"], target["session"], frame, timeout)
                found = self.evaluate(target["session"], context, DETECT_JS, timeout)
                if isinstance(found, str) and len(found) <= MAX_MESSAGE:
                    key = f"{target['targetId']}/{frame['loaderId']}"
                    self._form = {"key": key, "session": target["session"], "context": context,
                                  "loader": frame["loaderId"], "origin": frame.get("securityOrigin") or "null"}
                    return {**json.loads(found), "origin": self._form["origin"], "key": key}
        except (DevToolsError, KeyError, TypeError, ValueError):
            return None
        return None

    def form_session(self, key: str) -> str | None:
        """The session of the page whose form was reported under ``key``."""
        return self._form["session"] if self._form is not None and self._form["key"] == key else None

    def fill(self, key: str, origin: str, values: dict[str, str], before: Callable[[str, int], None],
             timeout: float = 2.0) -> tuple[str, str | None, bool]:
        """Fill and submit the form reported under ``key`` for ``origin`` (its credential origin), ``before(session,
        context)`` done in its world first: ('submitted', None, True), or ('refused' | 'gone', why, whether values
        were filled). Never says a value, whatever fails."""
        form = self._form
        if form is None or form["key"] != key:
            return "gone", "the sign-in form is no longer on the page", False
        if form["origin"] != origin:
            return "refused", f"the form was found at {form['origin']}, not at {origin}", False
        session = form["session"]
        try:
            frame = self.frame(session, timeout)
        except (DevToolsError, KeyError):
            return "gone", "the page that showed the sign-in form is gone", False
        now = frame.get("securityOrigin") or "null"
        if now != origin:
            return "refused", f"the page now stands at {now}, not at {origin}", False
        if frame.get("loaderId") != form["loader"]:
            return "refused", ("the page is no longer the document the sign-in was asked for (it navigated since), "
                               "though it stands at the same origin"), False
        try:
            self.devtools.call("Fetch.enable", {"patterns": [{"urlPattern": "*", "requestStage": "Request"}]},
                               session, timeout)
        except DevToolsError:
            return "gone", "the page's requests could not be watched", False
        try:
            return self._submit(form, origin, values, before, timeout)
        finally:
            with contextlib.suppress(DevToolsError):
                self._guard(session, origin, 0.0)
                self.devtools.call("Fetch.disable", {}, session, timeout)

    def _submit(self, form: dict, origin: str, values: dict[str, str], before: Callable[[str, int], None],
                timeout: float) -> tuple[str, str | None, bool]:
        session, context = form["session"], form["context"]
        before(session, context)
        expression = f"({FILL_JS})({json.dumps(origin)}, {json.dumps(values)})"
        try:
            found = self.evaluate(session, context, expression, timeout, awaitPromise=True, userGesture=True)
        except DevToolsError:  # its context is gone with its document: nothing was filled in another
            return "gone", "the page that showed the sign-in form is gone", True
        finally:
            del expression
        outcome = found.get("outcome") if isinstance(found, dict) else None
        if outcome not in ("submitted", "enter"):
            why = found.get("why") if isinstance(found, dict) else None
            return (("refused" if outcome == "refused" else "gone"), str(why or "the form was not submitted")[:300],
                    isinstance(found, dict) and found.get("filled") is True)
        if outcome == "enter":
            with contextlib.suppress(DevToolsError):
                for kind in ("keyDown", "keyUp"):
                    self.devtools.call("Input.dispatchKeyEvent", {
                        "type": kind, "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13,
                        **({"text": "\r"} if kind == "keyDown" else {})}, session, timeout)
        refused = self._guard(session, origin, GUARD)
        if refused is not None:
            with contextlib.suppress(DevToolsError):
                self.evaluate(session, context, CLEAR_JS, timeout)
            return "refused", refused, True
        return "submitted", None, True

    def _guard(self, session: str, origin: str, bound: float) -> str | None:
        """The page's paused requests answered for ``bound`` seconds at most (0: those paused now): to ``origin``
        (or a scheme with no network: ``data:``, ``blob:``) continued, elsewhere failed before they are sent. Ends
        early once the submission's document request went to ``origin``. Why it was refused, or None."""
        until = time.monotonic() + bound
        refused: str | None = None
        while True:
            for event in self.devtools.events(max(until - time.monotonic(), 0.0)):
                params = event.get("params") or {}
                request_id = params.get("requestId")
                if event.get("sessionId") != session or not isinstance(request_id, str):
                    continue
                url = str((params.get("request") or {}).get("url", ""))
                goes = url_origin(url)
                network = url.split(":", 1)[0].lower() in ("http", "https", "ws", "wss")
                if goes == origin or not network:
                    self.devtools.call("Fetch.continueRequest", {"requestId": request_id}, session)
                    if params.get("resourceType") == "Document" and network and refused is None:
                        until = time.monotonic()  # the submission went where it may: nothing more to watch
                else:
                    self.devtools.call("Fetch.failRequest", {"requestId": request_id,
                                                             "errorReason": "BlockedByClient"}, session)
                    # where is not said: the page chose it with the values in hand (a host name can spell one)
                    refused = refused or (f"the page sent the submission to another origin than {origin}: it was "
                                          "stopped before it was sent")
            if time.monotonic() >= until:
                return refused
