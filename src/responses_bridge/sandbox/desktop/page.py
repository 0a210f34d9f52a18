"""The page's DOM as the desktop's process sees it: Chromium's DevTools protocol over ``--remote-debugging-pipe``,
for the browser's sign-in forms (OpenAI's ``browser_authentication``).

Sent as source with agent.py (before it, into the same call: the standard library only, no import of the bridge),
never imported by the bridge. The browser reads DevTools messages from its fd 3 and writes them to its fd 4, each a
JSON text ended by a NUL byte; :func:`browser_pipes` makes the two pipes and :func:`piped` the command that puts
their ends there (bash's redirections: Python's ``subprocess`` keeps a file descriptor's number but cannot choose
it). No port is opened: nothing else in the call, the page least of all, can speak to the browser this way.

Strict and bounded: each call waits at most its timeout (a page stuck in a dialog or a loop answers late; a late
answer is dropped by its id), a message is at most :data:`MAX_MESSAGE` bytes, and whatever fails makes the
detection report nothing rather than fail the action. Detection is one ``Target.getTargets`` and one
``Runtime.evaluate`` per page target (the browser's tabs; only a visible one answers), done once after an action
settled, never by polling.

What leaves this module for the bridge is the form's shape (ids, labels, required, types, the page's origin) and
a key naming the document; the values a client submits come in for :meth:`Pages.fill` and go nowhere but the page.
"""

import contextlib
import fcntl
import json
import os
import select
import time

MAX_MESSAGE = 1 << 22
MAX_PAGES = 8
MAX_FIELDS = 6
"""OpenAI's ``browser_authentication`` takes values for up to six fields."""

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
  return {form: password.form, fields, origin: location.origin, key: String(performance.timeOrigin)};
}""".replace("MAX_FIELDS", str(MAX_FIELDS))
"""The visible page's first shown password field, and the shown text-like fields of its form (of the page, for a
form-less one): what a sign-in form is here."""

DETECT_JS = "(() => { const found = (" + FIELDS_JS + ")(); return found && JSON.stringify({origin: found.origin," \
            " key: found.key, fields: found.fields.map(({id, label, required, type}) =>" \
            " ({id, label, required, type}))}); })()"
FILL_JS = """(async (key, values) => {
  const found = (FIELDS_JS)();
  if (!found || found.key !== key) return 'gone';
  const setValue = Object.getOwnPropertyDescriptor(HTMLInputElement.prototype, 'value').set;
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
    last = e;
  }
  // the masked fields drawn before the page may change (two frames, at most 0.3 s): the screen never shows them
  // otherwise, whatever the submission does next
  await Promise.race([new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done))),
                      new Promise(done => setTimeout(done, 300))]);
  if (found.key !== String(performance.timeOrigin) || !found.fields.every(field => field.element.isConnected))
    return 'gone';
  if (found.form) {
    if (found.form.requestSubmit) found.form.requestSubmit(); else found.form.submit();
    return 'submitted';
  }
  if (last) last.focus();
  return 'enter';
})""".replace("FIELDS_JS", FIELDS_JS)
"""Fill the form of the document ``key`` names (not another: 'gone'), then submit it ('submitted'), or, with no
form, leave the focus in its last field for the desktop to press Enter ('enter')."""


class DevToolsError(Exception):
    """The browser answered with an error, too late, or not at all."""


def browser_pipes() -> tuple[tuple[int, int], tuple[int, int]]:
    """((the browser's read end, the browser's write end), (ours to write, ours to read)); the browser's ends at
    numbers above 9 (they are moved to 3 and 4 by :func:`piped`), every end close-on-exec but as passed."""
    to_read, to_write = os.pipe()
    from_read, from_write = os.pipe()
    theirs = []
    for end in (to_read, from_write):
        theirs.append(fcntl.fcntl(end, fcntl.F_DUPFD_CLOEXEC, 10))
        os.close(end)
    return (theirs[0], theirs[1]), (to_write, from_read)


def piped(command: list[str], ends: tuple[int, int]) -> list[str]:
    """``command`` started with ``ends`` as its fds 3 (it reads) and 4 (it writes), and those numbers closed."""
    read, write = ends
    return ["/bin/bash", "-c", f'exec "$@" 3<&{read} 4>&{write} {read}<&- {write}>&-', "browser", *command]


class DevTools:
    """One DevTools connection over the pipes, used from one thread: a request, then its answer."""

    def __init__(self, write: int, read: int) -> None:
        self._write = write
        self._read = read
        self._buffer = b""
        self._last = 0

    def close(self) -> None:
        for end in (self._write, self._read):
            with contextlib.suppress(OSError):
                os.close(end)

    def call(self, method: str, params: dict, session: str = "", timeout: float = 1.0) -> dict:
        self._last += 1
        message: dict[str, object] = {"id": self._last, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        try:
            while data:
                data = data[os.write(self._write, data):]
        except OSError as error:
            raise DevToolsError(f"the browser's pipe is closed ({error.strerror})") from None
        until = time.monotonic() + timeout
        while True:
            while b"\0" in self._buffer:
                frame, _, self._buffer = self._buffer.partition(b"\0")
                try:
                    answer = json.loads(frame)
                except ValueError:
                    raise DevToolsError("the browser sent something that is not JSON") from None
                if isinstance(answer, dict) and answer.get("id") == self._last:
                    if "error" in answer:
                        raise DevToolsError(f"{method}: {str(answer['error'].get('message', ''))[:200]}")
                    return answer.get("result") or {}
            left = until - time.monotonic()
            if left <= 0 or not select.select([self._read], [], [], left)[0]:
                raise DevToolsError(f"{method}: no answer within {timeout:g} s")
            chunk = os.read(self._read, 1 << 16)
            if not chunk:
                raise DevToolsError("the browser closed its pipe")
            self._buffer += chunk
            if len(self._buffer) > MAX_MESSAGE:
                raise DevToolsError("a message from the browser is too large")


class Pages:
    """The browser's page targets, a session attached to each once, and the sign-in form of the visible one."""

    def __init__(self, devtools: DevTools) -> None:
        self.devtools = devtools
        self._sessions: dict[str, str] = {}
        self._form_session = ""

    def _visible(self, expression: str, timeout: float) -> tuple[str, object]:
        """(session, value) of the first page target whose ``expression`` is not null."""
        targets = self.devtools.call("Target.getTargets", {}, timeout=timeout)["targetInfos"]
        pages = [target["targetId"] for target in targets if target.get("type") == "page"][:MAX_PAGES]
        self._sessions = {target: session for target, session in self._sessions.items() if target in pages}
        for target in pages:
            session = self._sessions.get(target)
            if session is None:
                session = self.devtools.call("Target.attachToTarget", {"targetId": target, "flatten": True},
                                             timeout=timeout)["sessionId"]
                self._sessions[target] = session
            value = self.devtools.call("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                       session, timeout).get("result", {}).get("value")
            if value is not None:
                return session, value
        return "", None

    def sign_in(self, timeout: float = 0.5) -> dict | None:
        """The visible page's sign-in form (``{origin, key, fields}``), or None (none, or the browser did not
        answer in time: an action is never failed for it)."""
        try:
            session, found = self._visible(DETECT_JS, timeout)
        except (DevToolsError, KeyError, TypeError):
            return None
        if not isinstance(found, str) or len(found) > MAX_MESSAGE:
            return None
        self._form_session = session
        return json.loads(found)

    def fill(self, key: str, values: dict[str, str], timeout: float = 2.0) -> str:
        """Fill and submit the form reported under ``key``: 'submitted', 'enter' (no form: Enter to press) or
        'gone' (the page changed since). Never says a value, whatever fails."""
        if not self._form_session:
            return "gone"
        expression = f"({FILL_JS})({json.dumps(key)}, {json.dumps(values)})"
        try:
            found = self.devtools.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                            "awaitPromise": True, "userGesture": True},
                                       self._form_session, timeout)
        except DevToolsError:
            return "gone"
        finally:
            del expression
        value = found.get("result", {}).get("value")
        return value if value in ("submitted", "enter") else "gone"
