"""The desktop's browser remembers the address it shows, to start again there once it has gone (a last tab
closed, a kill): read off DevTools while the desktop is idle after an answer. On a loaded machine the browser can
take longer than the first read waits; the read is tried again, waiting longer each time, while no request came.
And calls back to back (a fast model) never leave the desktop idle: the request reads it on its way, at most once
a second. Before, either left the address at ``about:blank`` and a closed browser came back there."""

from __future__ import annotations

import time
from typing import Any

import pytest

from responses_bridge.sandbox.desktop import browser as browser_source
from responses_bridge.sandbox.desktop.browser import REMEMBER_AFTER, REMEMBER_MOST, Browser
from responses_bridge.sandbox.desktop.devtools import DevToolsError

PAGE = "http://127.0.0.1:9/last"


@pytest.fixture(autouse=True)
def sent_after_devtools(monkeypatch: pytest.MonkeyPatch) -> None:
    """In the call, browser.py is source sent after devtools.py's (desktop.py): their names are one namespace."""
    monkeypatch.setattr(browser_source, "DevToolsError", DevToolsError, raising=False)


class SlowDevTools:
    """Answers ``Target.getTargets`` only to a read that waits at least ``needs`` seconds."""

    def __init__(self, needs: float) -> None:
        self.needs = needs
        self.waits: list[float] = []

    def call(self, method: str, params: dict[str, Any], timeout: float = 1.0) -> dict[str, Any]:
        self.waits.append(timeout)
        if timeout < self.needs:
            raise DevToolsError(f"{method}: no answer within {timeout:g} s")
        return {"targetInfos": [{"type": "page", "url": "about:blank"}, {"type": "page", "url": PAGE}]}


class Running:
    def poll(self) -> None:
        return None


def browser(needs: float) -> tuple[Browser, SlowDevTools]:
    made = Browser({"url": "about:blank"}, None, False, lambda config, sandboxed: (None, None),
                   lambda screen, process, until: None)
    devtools = SlowDevTools(needs)
    made.pages, made.process = type("Pages", (), {"devtools": devtools})(), Running()  # type: ignore[assignment]
    return made, devtools


def settled(made: Browser, seconds: float = 8.0) -> None:
    """Until the last read's timer ended. A read that tries again makes the next timer under the browser's lock,
    so the timer looked at under it is started already (unlocked, a new one could be seen before its start)."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        with made._lock:
            if made._timer is None or not made._timer.is_alive():
                return
        time.sleep(0.01)


def test_a_slow_browser_s_address_is_read_again_waiting_longer() -> None:
    made, devtools = browser(needs=1.0)
    made.remember_later()
    settled(made)
    assert made.url == PAGE
    assert devtools.waits == [0.3, 0.6, 1.2]


def test_the_reads_stop_at_a_bound() -> None:
    made, devtools = browser(needs=REMEMBER_MOST * 4)  # never answers in time: tried up to the bound, then kept
    made.remember_later()
    settled(made)
    assert made.url == "about:blank" and devtools.waits == [0.3, 0.6, 1.2, 2.4]


def test_calls_back_to_back_read_it_on_their_way_at_most_once_a_second() -> None:
    """A fast model's next call comes before the desktop was idle long enough for the timer: the request reads the
    address first (the timer's read is not made), and the next ones within a second do not read it again."""
    made, devtools = browser(needs=0.0)
    for _ in range(3):
        made.remember_later()
        made.hold()  # the next call, at once
    time.sleep(REMEMBER_AFTER * 3)
    assert made.url == PAGE and devtools.waits == [0.3]
