"""The desktop's own process inside the sandbox call: it starts the display (Xvfb) and the browser (Chromium), then
performs what the bridge asks over a Unix socket in ``/mnt/data`` (bubblewrap) or on its stdin, answering on its
stdout (``"channel": "stdio"``: a pod, reached through the runtime's process API), and answers each request with a
JPEG of the screen once it has settled.

It runs as the call's code (the launcher's child, under the call's seccomp filter, cgroup and uid), so it is sent
as source, not imported: the standard library and Pillow only (the bridge's environment is bound read-only at
``/opt/venv``), no import of the bridge. It never decides what to do: the bridge parses the model's actions
strictly (actions.py) and sends each as xdotool's arguments; this process runs ``xdotool`` with them and nothing
else.

The exchange (one JSON line each way, then the JPEG's bytes):

- on stdout, once: ``{"ready": true, ...}`` when the screen shows the browser, or ``{"error": "..."}``;
- on the socket (or stdin), a request ``{"steps": [["mousemove", "10", "20"], ...], "wait": S, "settle": S}`` (``steps``
  may be empty: a screenshot) is answered ``{"ok": true, "bytes": N, "width": W, "height": H, "settled": B}`` and
  N bytes, or ``{"error": "..."}``; ``{"quit": true}`` ends the desktop;
- ``"detect": true``: the answer's ``sign_in`` is the visible page's sign-in form once the screen settled
  (page.py: its shape, never a value), or null;
- ``{"fill": {"key": K, "origin": O, "values": {...}}, ...}`` fills the values into the form ``K`` names and
  submits it to ``O`` only (page.py), then answers as a request does; ``error`` says why it was not (the form gone,
  or refused: its document or its submission elsewhere). From then on, while a tab stands at ``O``, every answer's
  screen has the values masked (masking.py), or is a grey image and ``withheld`` says why. The values are used once and
  never written anywhere: not to stdout, stderr, a file or an answer;
- ``{"cut": true}``, sent while a request is settling, ends its settling there (its screenshot is the screen now:
  the bridge knows the browser waits for something that will not come soon, an origin's approval); one that comes
  after its request was answered is ignored.

Settling: no fixed sleep after an action. The screen is grabbed every :data:`GRAB_EVERY` seconds until it stayed
the same for ``quiet`` seconds, bounded by ``settle`` (then the last grab is sent, ``settled: false``).
"""

import contextlib
import ctypes
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # in the call, devtools.py's, page.py's, masking.py's and proxy_relay.py's sources come first,
    # browser.py's after this file's (desktop.py's SOURCES)
    from .browser import BROWSER_ENDING, Browser
    from .devtools import DevTools, browser_pipes, piped
    from .masking import Masking
    from .page import Pages
    from .proxy_relay import authority_key_hash, relayed_proxy, take_refused

DISPLAY = ":1"
GRAB_EVERY = 0.02
SOCKET_NAME = "desktop.sock"
INPUT_SHOWS, INPUT_QUIET, INPUT_SETTLE = 0.5, 0.05, 1.0
"""After a key press that more input follows: the seconds within which its effect shows on the screen, the quiet that
counts as drawn, and the bound of the whole wait."""
IDLE_TRIM = 1.0
"""Seconds without a request after which this process gives its free heap back (:class:`IdleTrim`)."""
XVFB_MEMORY = ("-extension", "GLX")
"""No GLX: the browser draws with --disable-gpu (software, through X's core and MIT-SHM requests), so nothing uses
it, and loading it maps Mesa's software GL and LLVM into Xvfb: 71 -> 23 MiB of its PSS (docs/agents.md)."""


def _say(found: dict) -> None:
    sys.stdout.write(json.dumps(found) + "\n")
    sys.stdout.flush()


class Screen:
    """Grabs from the display (Pillow's XCB grab: no process per screenshot) and JPEG encoding."""

    def __init__(self, quality: int) -> None:
        from PIL import ImageGrab

        self._grab = ImageGrab.grab
        self.quality = quality

    def grab(self) -> Any:  # Pillow's Image (Pillow is imported inside the call only)
        return self._grab(xdisplay=DISPLAY)

    def settled(self, quiet: float, bound: float, cut: Any = None) -> tuple[Any, bool]:
        """The screen once it has not changed for ``quiet`` seconds, at most ``bound`` seconds from now, or as
        soon as ``cut()`` is true."""
        start = time.monotonic()
        image = self.grab()
        pixels = image.tobytes()
        same_since = time.monotonic()
        while True:
            now = time.monotonic()
            if now - same_since >= quiet:
                return image, True
            if now - start >= bound or (cut is not None and cut()):
                return image, False
            time.sleep(GRAB_EVERY)
            image = self.grab()
            current = image.tobytes()
            if current != pixels:
                pixels = current
                same_since = time.monotonic()

    def after_input(self, shows: float, quiet: float, bound: float) -> None:
        """Once the screen changed (at most ``shows`` seconds from now), until it settled (``quiet``), ``bound``
        seconds at most in all: a key's effect drawn before the next input is sent."""
        start = time.monotonic()
        before = self.grab().tobytes()
        while time.monotonic() - start < shows:
            time.sleep(GRAB_EVERY)
            if self.grab().tobytes() != before:
                break
        self.settled(quiet, max(bound - (time.monotonic() - start), 0.0))

    def withheld(self, image: Any) -> Any:
        """What is sent instead of a screen that may not be shown: a plain grey image of its size."""
        from PIL import Image

        return Image.new("RGB", image.size, (128, 128, 128))

    def jpeg(self, image: Any) -> bytes:
        import io

        out = io.BytesIO()
        image.save(out, "JPEG", quality=self.quality)
        return out.getvalue()


def _wait_for_display(xvfb: subprocess.Popen, until: float) -> str | None:
    while time.monotonic() < until:
        if xvfb.poll() is not None:
            return f"Xvfb exited with status {xvfb.returncode}"
        if os.path.exists(f"/tmp/.X11-unix/X{DISPLAY[1:]}"):
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(f"/tmp/.X11-unix/X{DISPLAY[1:]}")
                return None
            except OSError:
                pass
            finally:
                probe.close()
        time.sleep(0.01)
    return "Xvfb did not open its display in time"


def _wait_for_browser(screen: Screen, browser: subprocess.Popen, until: float) -> str | None:
    """The browser has drawn its window: the screen is no longer the empty display, and has settled."""
    empty = screen.grab().tobytes()
    while time.monotonic() < until:
        if browser.poll() is not None:
            return f"the browser exited with status {browser.returncode}"
        if screen.grab().tobytes() != empty:
            screen.settled(0.15, max(until - time.monotonic(), 0.0))
            return None
        time.sleep(GRAB_EVERY)
    return "the browser drew no window in time"


PREFERENCES = {"search": {"suggest_enabled": False}, "alternate_error_pages": {"enabled": False},
               "safebrowsing": {"enabled": False}, "translate": {"enabled": False},
               "autofill": {"enabled": False, "profile_enabled": False, "credit_card_enabled": False},
               "credentials_enable_service": False, "credentials_enable_autosignin": False,
               "profile": {"password_manager_enabled": False},
               "net": {"network_prediction_options": 2}}
"""The profile's first preferences: what is typed in the address bar is not sent to a search engine for
suggestions as it is typed (a model types addresses, sometimes what it should not), nor a failed address to a
service for alternatives; the proxy would refuse them unless allowed, and they are no part of the session's work.
No autofill, form history or password manager: a value the client submitted into a sign-in form is never offered
back in a drop-down, nor shown in a "save password?" bubble, where a screenshot would show it to the model. No
network prediction: typing in the address bar does not preconnect to the search engine (a request of the browser's
own, which the proxy would refuse and the model be told of)."""


def _start_browser(config: dict, sandboxed: bool) -> tuple[subprocess.Popen, "Pages"]:
    """The browser, and its DevTools over a pipe of its own (page.py, sent before this file)."""
    profile = "/tmp/browser/Default"
    if not os.path.exists(f"{profile}/Preferences"):
        os.makedirs(profile, exist_ok=True)
        with open(f"{profile}/Preferences", "w") as preferences:
            json.dump(PREFERENCES, preferences)
    theirs, ours = browser_pipes()
    try:
        browser = subprocess.Popen(piped(_browser_command(config, sandboxed), theirs),
                                   env={**os.environ, "DISPLAY": DISPLAY}, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, start_new_session=True, pass_fds=theirs)
    finally:
        for end in theirs:
            os.close(end)
    return browser, Pages(DevTools(*ours))


def _browser_command(config: dict, sandboxed: bool) -> list[str]:
    width, height = config["width"], config["height"]
    proxy = config.get("proxy")
    return [
        config["browser"], *config["browser_flags"], *([] if sandboxed else ["--no-sandbox"]),
        "--user-data-dir=/tmp/browser", "--no-first-run", "--no-default-browser-check", "--disable-sync",
        "--disable-background-networking", "--disable-component-update", "--disable-breakpad",
        "--disable-crash-reporter", "--disable-gpu", "--disable-default-apps", "--disable-domain-reliability",
        "--no-pings", "--disable-client-side-phishing-detection", "--safebrowsing-disable-auto-update",
        "--disable-dev-shm-usage", "--password-store=basic",
        # a profile that keeps nothing: no history, top sites, visited links, cookies or session state written
        # (the profile's files hold no address, title or value a page showed); its preferences still apply
        "--incognito",
        "--disable-features=Translate,MediaRouter,OptimizationHints,DialMediaRouteProvider,AutofillServerCommunication,"
        "SpareRendererForSitePerProcess,"
        # the browser's own requests, none of the session's: the network time's (clients2.google.com), and the AI
        # mode's eligibility asked of www.google.com as it starts — each one the proxy refuses is told to the model
        # (egress_watch.py)
        "NetworkTimeServiceQuerying,AimEligibilityService,AimServerEligibilityEnabled,AimServerRequestOnStartupEnabled,"
        "AimEnabled,"
        # the address bar's suggestions drawn by the browser itself (Views), not by a web page of its own that
        # Chromium preloads at start in a renderer of its own (chrome://omnibox-popup.top-chrome): 41 MiB less
        "WebUIOmniboxPopup,WebUIOmniboxAimPopup,WebUIOmniboxFullPopup",
        # the network service in the browser's process, not a process of its own (--service-sandbox-type=none: it
        # runs unsandboxed either way, so no sandbox is given up; a crash of it now ends the browser): 15 MiB less
        "--enable-features=NetworkServiceInProcess2",
        "--window-position=0,0", f"--window-size={width},{height}", "--force-device-scale-factor=1",
        "--test-type",  # no "unsupported flag" bar over the page (where --no-sandbox is)
        # every address through the call's proxy, loopback too: the sandbox's own loopback has nothing to reach
        f"--proxy-server={proxy}" if proxy else "--proxy-server=http://127.0.0.1:9",
        "--proxy-bypass-list=<-loopback>",
        "--remote-debugging-pipe",  # DevTools on fds 3 and 4 only (page.py): no port anything else could reach
        # the call's own authority, under a policy with domain secrets (proxy_relay.py): its key only
        *([f"--ignore-certificate-errors-spki-list={config['authority']}"] if config.get("authority") else []),
        config["url"],
    ]


class IdleTrim:
    """Gives the heap's free memory back to the kernel once the desktop has been idle :data:`IDLE_TRIM` seconds.

    Settling grabs the screen every 20 ms, each grab and its bytes megabytes (1280×800 is 3 MiB of pixels); glibc
    raises its mmap threshold once such a block is freed and then keeps the next ones in its heap, which it does not
    give back: this process stayed at ~35 MiB where it needs ~15 (a desktop's cgroup 20 MiB more). Trimming after
    every answer cost 15 CPU-ms an action (+16%: the next grabs fault the pages in again), a fixed mmap threshold
    (mallopt) 38 CPU-ms (+48%) and latency (each grab faulted in afresh); a desktop waits for its model most of the
    time, so the trim comes once it does, at no cost per action. glibc's malloc_trim takes the arenas' locks: safe
    from this timer's thread."""

    def __init__(self) -> None:
        self._timer: threading.Timer | None = None
        try:
            self._trim: Any = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):  # not glibc
            self._trim = None

    def answered(self) -> None:
        self.cancel()
        if self._trim is not None:
            self._timer = threading.Timer(IDLE_TRIM, self._trim, (0,))
            self._timer.daemon = True
            self._timer.start()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _pages(browser: "Browser") -> "Pages":
    """The running browser's pages (its DevTools): a new object each time it is started again."""
    pages = browser.pages
    assert pages is not None  # started before any request is answered
    return pages


def _serve_socket(listener: socket.socket, screen: Screen, browser: "Browser") -> None:
    """Requests on the call's Unix socket (bubblewrap: the bridge reaches ``/mnt/data``), one connection at a
    time, until one asks to quit."""
    idle, masking = IdleTrim(), Masking(_pages(browser))
    while True:
        connection, _ = listener.accept()
        with connection, connection.makefile("rb") as requests:
            if _answer(requests, connection.fileno(), connection.sendall, screen, browser, masking, idle):
                return


def _serve_stdio(screen: Screen, browser: "Browser") -> None:
    """Requests on stdin, answers on stdout (a pod: the runtime's process API carries both), until one asks to
    quit or stdin ends. Unbuffered, so that a cut waiting on stdin is seen by ``select`` while a request settles."""
    out = sys.stdout.buffer

    def send(data: bytes) -> None:
        out.write(data)
        out.flush()

    with open(0, "rb", buffering=0, closefd=False) as requests:
        _answer(requests, 0, send, screen, browser, Masking(_pages(browser)), IdleTrim())


def _fill(masking: "Masking", fill: dict) -> str | None:
    """Fill and submit the sign-in form ``fill`` names with its values (page.py), masked in every picture from
    before they are filled (masking.py); why it was not submitted, or None. The values are forgotten here."""
    key, origin, values = str(fill.get("key")), str(fill.get("origin")), fill.get("values") or {}
    session = masking.pages.form_session(key)
    if session is not None:
        masking.start(session, origin, values)
    outcome, why, filled = masking.pages.fill(key, origin, values, masking.install)
    if not filled:
        masking.end()
    values.clear()
    fill.clear()
    return None if outcome == "submitted" else why or "the form was not submitted"


def _masked(screen: Screen, masking: "Masking", image: Any) -> tuple[Any, str | None]:
    """``image``, or the screen again once the values a sign-in submitted were masked in it, or why it may not be
    shown (masking.py); only while a tab stands at that sign-in's origin."""
    masked, withheld = masking.check()
    if masked and withheld is None:  # masked just now: drawn so before the screen is taken
        image, _ = screen.settled(0.05, 0.5)
        masked, withheld = masking.check()
        if masked and withheld is None:
            withheld = "the page shows a value of the sign-in and keeps putting it back"
    return image, withheld


def _answer(requests: Any, readable: int, send: Any, screen: Screen, browser: "Browser", masking: "Masking",
            idle: IdleTrim) -> bool:
    """Answer each request line of ``requests`` (``readable``: its descriptor, for a cut) with ``send``; True
    once one asked to quit."""
    environment = {**os.environ, "DISPLAY": DISPLAY}

    def cut() -> bool:
        return bool(select.select([readable], [], [], 0)[0])

    for line in requests:
        request = json.loads(line)
        if request.get("quit"):
            return True
        if request.get("cut"):
            continue  # its request was answered before it came
        idle.cancel()
        browser.hold()
        began = time.monotonic()
        # the model's request: a browser gone since (closed, crashed, killed) started again first (Browser)
        happened, failed = browser.revive() if request.get("detect") else (None, None)
        pages = _pages(browser)
        if masking.pages is not pages:  # started again: the masking goes on in the new browser's pages
            masking.moved(pages)
        steps = request.get("steps", [])
        fill = request.pop("fill", None)
        if fill is not None:  # the values are in this request only, and go to the page (and the masking) only
            # (a browser that could not be started again has no form: the values go nowhere)
            failed = _fill(masking, fill) if failed is None else failed
            fill, steps = None, []
        for step in steps if failed is None else []:
            if step == ["settle"]:  # the last key's effect on the screen before more input (actions.py's SETTLE)
                screen.after_input(INPUT_SHOWS, INPUT_QUIET, INPUT_SETTLE)
                continue
            done = subprocess.run(["xdotool", *[str(word) for word in step]], env=environment,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
            if done.returncode != 0:
                failed = f"xdotool {step[0]} failed: {done.stderr.decode(errors='replace').strip()}"
                break
        if failed is None and request.get("wait"):
            time.sleep(float(request["wait"]))
        acted = time.monotonic()
        image, settled = screen.settled(float(request.get("quiet", 0.1)), float(request.get("settle", 1.5)),
                                        cut)
        if request.get("detect") and failed is None and image.getbbox() is None:  # black: the browser gone?
            now, failed = browser.revive(BROWSER_ENDING)
            if now is not None:
                happened = now if happened is None else f"{happened} Then {now}"
                pages = _pages(browser)
                masking.moved(pages)
                image, settled = screen.settled(float(request.get("quiet", 0.1)),
                                                float(request.get("settle", 1.5)), cut)
        withheld = None
        if masking.active:
            image, withheld = _masked(screen, masking, image)
        grabbed = time.monotonic()
        # cut short: the page waits for an origin's approval, mid-navigation (its renderer answers late)
        sign_in = pages.sign_in() if request.get("detect") and not cut() else None
        detected = time.monotonic()
        data = screen.jpeg(screen.withheld(image) if withheld else image)
        head = {"ok": failed is None, "bytes": len(data), "width": image.width, "height": image.height,
                "settled": settled, "sign_in": sign_in, "withheld": withheld,
                "seconds": [round(acted - began, 4), round(grabbed - acted, 4),
                            round(time.monotonic() - detected, 4), round(detected - grabbed, 4)]}
        if failed is not None:
            head["error"] = failed
        if happened is not None:
            head["browser"] = happened
        refused = take_refused()  # heads the proxy relay refused as too large (proxy_relay.py): told by the bridge
        if refused:
            head["egress_refused"] = refused
        send(json.dumps(head).encode() + b"\n" + data)
        if request.get("detect"):
            browser.remember_later()
        idle.answered()
    return False


def main(config_text: str) -> None:
    config = json.loads(config_text)
    until = time.monotonic() + float(config["start_timeout"])
    try:
        screen = Screen(int(config["quality"]))
    except ImportError as missing:
        _say({"error": f"Pillow is missing in the sandbox ({missing}): pip install 'responses-bridge[desktop]'"})
        return
    started: list[subprocess.Popen] = []
    browser: Browser | None = None
    marks = {"agent": time.monotonic()}
    os.makedirs("/tmp/.X11-unix", mode=0o1777, exist_ok=True)  # Xvfb, not root here, would not make it
    # The display is the socket in this call's own /tmp only: Xvfb's other local listener, the abstract socket
    # ``@/tmp/.X11-unix/X1``, lives in the network namespace, which a call with network shares with the host (the
    # stand-in pod's ``--share-net``, a pod whose network is the node's), so a second desktop on the same display
    # number elsewhere failed to listen and Xvfb exited with status 1 (seen under a loaded test run). Clients (the
    # browser, xdotool) fall back to the path socket.
    try:
        xvfb = subprocess.Popen(["Xvfb", DISPLAY, "-screen", "0", f"{config['width']}x{config['height']}x24",
                                 "-nolisten", "tcp", "-nolisten", "local", "-noreset", "-dpi", "96", *XVFB_MEMORY],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        started.append(xvfb)
        error = _wait_for_display(xvfb, until)
        marks["display"] = time.monotonic()
        sandboxed = not config["no_sandbox"]
        config["proxy"] = relayed_proxy(os.environ.get("HTTP_PROXY"))
        config["authority"] = authority_key_hash(os.environ.get("SSL_CERT_FILE"))
        browser = Browser(config, screen, sandboxed, _start_browser, _wait_for_browser)
        if error is None:
            error = browser.start(until)
            marks["browser"] = time.monotonic()
        if error is not None:
            _say({"error": error})
            return
        if config.get("channel") == "stdio":
            _say({"ready": True, "marks": marks, "browser_sandbox": browser.sandboxed})
            _serve_stdio(screen, browser)
            return
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(f"/mnt/data/{SOCKET_NAME}")
        listener.listen(1)
        _say({"ready": True, "marks": marks, "browser_sandbox": browser.sandboxed})
        _serve_socket(listener, screen, browser)
    finally:
        # the browser's whole session (start_new_session), then the display (the init ends whatever is left once
        # this process exits)
        if browser is not None and browser.process is not None:
            with contextlib.suppress(OSError):
                os.killpg(browser.process.pid, signal.SIGTERM)
        for process in started:
            with contextlib.suppress(OSError):
                process.terminate()
