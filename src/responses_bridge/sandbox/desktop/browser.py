"""The desktop's browser, started again when it has gone: sent as source after agent.py, into the same call
(desktop.py), never imported by the bridge — the standard library only, and the names of the sources before it.

Chromium ends when its last tab or window is closed (a model's ``CTRL+W``), when it crashes, or when the kernel
kills it (out of memory), and the display stays, black: every later call said ``completed`` over a black screen.
:class:`Browser` notices it on the model's next request and starts it again where it was (docs/agents.md,
"Desktop: its network and its browser").
"""

import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # in the call, these are the sources sent before this file's
    from .devtools import DevToolsError
    from .page import Pages

StartBrowser = Callable[[dict, bool], "tuple[subprocess.Popen, Pages]"]
"""agent.py's start of Chromium with its DevTools pipe: (the configuration, sandboxed) -> (its process, its pages)."""
WaitForBrowser = Callable[[Any, subprocess.Popen, float], "str | None"]
"""agent.py's wait for Chromium's first drawing on the screen: (the screen, its process, until) -> why not, or None."""

BROWSER_ENDING = 2.0
"""Seconds a request whose screen went black waits for its browser to end (a last tab closed), to start it again at
once."""
REMEMBER_AFTER = 0.05
"""Seconds without a request after an answer before the browser's address is read (:meth:`Browser.remember`): a
model's next call takes longer (a round trip to the model at least); a client sending actions back to back (a
benchmark, a fast model) gets the read on its way at most once a second (:data:`REMEMBER_EVERY`)."""
REMEMBER_WAIT = 0.3
"""Seconds the first read of the address waits for DevTools; a read unanswered (a loaded machine) is tried again,
each waiting twice as long, up to :data:`REMEMBER_MOST`, while no request came: else a browser gone would start
again at a stale address, or at ``about:blank``."""
REMEMBER_MOST = 2.4
REMEMBER_EVERY = 1.0
"""Seconds after which a request that finds the address unread since the last answer reads it on its own way
first: a client whose calls come back to back (a fast model, a benchmark) never leaves the desktop idle long
enough for :data:`REMEMBER_AFTER`, and a browser closed then came back at ``about:blank``; at most one read a
second is added to such a client's actions."""


class Browser:
    """The browser's process and its DevTools, started again when it has gone.

    Chromium ends when its last tab or window is closed (a model's ``CTRL+W``), when it crashes, or when the
    kernel kills it (out of memory); the display stays, black. Each model's request (``detect``) first asks
    :meth:`revive`: a browser gone is started again at the last address it showed (:meth:`remember_later`: read
    once the desktop has been idle a moment after an answer, while the model thinks; on an action's way at most
    once a second, where calls come back to back),
    and the answer's ``browser`` says what happened, which the model is told. A request whose actions closed it
    (the screen went black, and DevTools shows no tab) waits briefly for it to end and starts it at once, so the
    model's screenshot is a browser's. The open tabs and what was typed into pages are lost with it, and so are its
    cookies: the profile is incognito and keeps nothing (a sign-in is asked again)."""

    def __init__(self, config: dict, screen: Any, sandboxed: bool, start: StartBrowser,
                 wait: WaitForBrowser) -> None:
        self.config = config
        self.screen = screen  # agent.py's Screen: ``start`` and ``wait`` are its, given, so neither file imports both
        self.sandboxed = sandboxed
        self._start_browser, self._wait_for_browser = start, wait
        self.process: subprocess.Popen | None = None
        self.pages: Pages | None = None
        self.url = str(config["url"])
        self._lock = threading.Lock()  # DevTools is used from one thread at a time: a request's, or the timer's
        self._timer: threading.Timer | None = None
        self._held = False
        self._unread = False  # an answer came since the address was last read
        self._read_at = 0.0  # when it was last read (the monotonic clock)

    def start(self, until: float) -> str | None:
        """Started and drawn (without Chromium's own sandbox where it cannot start here); why not, else None."""
        self.process, self.pages = self._start_browser({**self.config, "url": self.url}, self.sandboxed)
        error = self._wait_for_browser(self.screen, self.process, until)
        if error is not None and self.sandboxed and self.process.poll() is not None:
            # its own sandbox could not start here (no user namespace: "No usable sandbox!"): without it
            self.sandboxed = False
            self.pages.devtools.close()
            self.process, self.pages = self._start_browser({**self.config, "url": self.url}, self.sandboxed)
            error = self._wait_for_browser(self.screen, self.process, until)
        return error

    def gone(self) -> str | None:
        """How the browser ended, when it has: None while it runs."""
        code = self.process.poll() if self.process is not None else None
        if code is None:
            return None
        if code == 0:
            return "the browser closed (its last tab or window was closed)"
        if code < 0:
            name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
            return f"the browser was killed ({name}{': perhaps out of memory' if -code == 9 else ''})"
        return f"the browser ended with status {code} (a crash)"

    def revive(self, wait: float = 0.0) -> tuple[str | None, str | None]:
        """(what happened, why it failed): the browser started again at its last address when it had gone
        (waiting ``wait`` seconds for one that is ending); (None, None) while it runs."""
        if self.process is not None and wait > 0 and not self._showing():
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(wait)
        ended = self.gone()
        if ended is None:
            return None, None
        self.stop()
        error = self.start(time.monotonic() + float(self.config["start_timeout"]))
        if error is not None:
            return ended, f"{ended}, and could not be started again: {error}"
        return (f"{ended}. It was started again at {self.url[:300]}; its other tabs and whatever was typed into "
                "its pages are gone."), None

    def _showing(self) -> bool:
        """The browser answers DevTools with a tab: alive (a black screen is its page's, drawn full screen)."""
        if self.pages is None:
            return False
        try:
            targets = self.pages.devtools.call("Target.getTargets", {}, timeout=0.3)["targetInfos"]
        except (DevToolsError, KeyError, TypeError):
            return False
        return any(target.get("type") == "page" for target in targets)

    def remember_later(self) -> None:
        """:meth:`remember` once no request came for :data:`REMEMBER_AFTER` seconds (in a timer's thread)."""
        with self._lock:
            self._held = False
            self._unread = True
        self._timer = threading.Timer(REMEMBER_AFTER, self._remember_unless_held)
        self._timer.daemon = True
        self._timer.start()

    def hold(self) -> None:
        """A request begins: the timer's :meth:`remember` is not started, or has ended (DevTools is the request's);
        the address read first where no read came since the last answer and none for :data:`REMEMBER_EVERY`."""
        with self._lock:
            self._held = True
            if self._unread and time.monotonic() - self._read_at > REMEMBER_EVERY:
                self.remember()  # the timer's read never came: calls back to back
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _remember_unless_held(self, wait: float = REMEMBER_WAIT) -> None:
        with self._lock:
            if self._held or self.remember(wait) or wait * 2 > REMEMBER_MOST:
                return
            self._timer = threading.Timer(0.0, self._remember_unless_held, (wait * 2,))  # hold() cancels it
            self._timer.daemon = True
            self._timer.start()

    def remember(self, wait: float = REMEMBER_WAIT) -> bool:
        """The address of its (first) tab, to start it again there: an http(s) page's only, else kept. False: the
        browser did not answer within ``wait`` seconds."""
        if self.pages is None or self.gone() is not None:
            return True
        try:
            targets = self.pages.devtools.call("Target.getTargets", {}, timeout=wait)["targetInfos"]
        except DevToolsError:
            return False
        except (KeyError, TypeError, AttributeError):
            return True
        self._unread, self._read_at = False, time.monotonic()
        with contextlib.suppress(TypeError, AttributeError):
            for target in targets:
                url = str(target.get("url", ""))
                if target.get("type") == "page" and url.startswith(("http://", "https://")) and len(url) < 4096:
                    self.url = url
                    break
        return True

    def stop(self) -> None:
        """Its whole session ended (start_new_session: renderers left by a killed browser too), DevTools closed."""
        if self.pages is not None:
            self.pages.devtools.close()
        if self.process is not None:
            with contextlib.suppress(OSError):
                os.killpg(self.process.pid, signal.SIGKILL if self.process.poll() is not None else signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(2.0)
