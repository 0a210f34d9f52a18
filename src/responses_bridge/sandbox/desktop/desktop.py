"""One desktop: a long-lived sandbox call whose code is the desktop's own process (agent.py), driven over a Unix
socket in the call's ``/mnt/data`` (bubblewrap) or its stdin and stdout (a pod: host.py).

    desktop = Desktop(sandbox, tenant="t", network=policy)
    await desktop.start()                       # a slot, the call, Xvfb and Chromium: the screen shows the browser
    shot = await desktop.act(parse_actions([...], desktop.width, desktop.height))
    shot = await desktop.screenshot()
    await desktop.stop()                        # every process of the call gone, its slot freed

Origins and sign-in (docs/agents.md, "Desktop: origins and sign-in"): the browser's first request to an origin its
client has not approved is held by the call's egress proxy (origins.py) and listed in the action's result
(``Screenshot.pending_origins``) until :meth:`Desktop.allow_origin` or :meth:`Desktop.deny_origin`; a sign-in form
the page shows after an action is its ``Screenshot.sign_in`` (sign_in.py), which :meth:`Desktop.submit_sign_in`
fills and submits — to its ``credential_origin`` only, as the browser judges it (page.py), the values then masked
in every screenshot while a tab stands there (masking.py) — and :meth:`Desktop.cancel_sign_in` leaves.

On the agent-sandbox backend the same process runs in a pod of its own instead (host.py, and
agent_sandbox/desktop_host.py: driven over its stdin and stdout). On bubblewrap, the call is an ordinary one of the
backend (runner.py): it waits for a slot of the sandbox's fair-share
pool, runs as the sandbox's unprivileged uid in namespaces of its own with nothing of the host writable, reaches the
network only through its egress proxy (the browser's ``--proxy-server``), and is bounded by its cgroup — with
limits of its own (:class:`DesktopSettings`: a browser needs more processes and threads than a script, and no
per-process address-space limit, which Chromium's reservations would exceed at once). How long it lives is the
caller's business (an idle timeout later); ``lifetime`` is only its outer bound.

Chromium's own sandbox stays on: it puts each renderer (what runs a web page) in user, PID and network namespaces
of its own under its seccomp-bpf filter, so a page that takes a renderer over is held there before it reaches the
browser's profile, the desktop's socket or the call. It needs to make user namespaces (or a setuid helper, which
no_new_privs makes inert), which a code call may not (``--disable-userns`` and the call's seccomp filter refuse
it); a desktop's call may (runner.py's ``OwnLimits.user_namespaces``: its filter's namespace refusals lifted, every
other bound the same). Where the kernel still refuses nested user namespaces, Chromium says "No usable sandbox!",
and the desktop's process starts it again with ``--no-sandbox`` (:attr:`Desktop.browser_sandbox` says which):
the call's namespaces, filter and cgroup then hold the whole browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ...protocol.errors import APIError, invalid_request
from ..cgroups.per_call import MemoryUse
from ..egress.origins import parse_origin, url_origin
from ..egress.policy import NetworkPolicy
from ..egress.rates import EgressRates
from ..limits import GIB, MIB, SandboxLimits
from ..result import SandboxBusy, SandboxResult, SandboxUnavailable
from ..runner import Sandbox
from .actions import Action, batch_steps
from .egress_watch import DesktopEgress
from .host import BubblewrapHost, DesktopHost, DesktopLink, Sender
from .origins import OriginApprovals
from .requirements import DEFAULT_BROWSER
from .sign_in import SignInForm, check_values, parse_form

AGENT_SOURCE = Path(__file__).with_name("agent.py")
DEVTOOLS_SOURCE = Path(__file__).with_name("devtools.py")
PAGE_SOURCE = Path(__file__).with_name("page.py")
MASKING_SOURCE = Path(__file__).with_name("masking.py")
RELAY_SOURCE = Path(__file__).with_name("proxy_relay.py")
BROWSER_SOURCE = Path(__file__).with_name("browser.py")
SOURCES = (DEVTOOLS_SOURCE, PAGE_SOURCE, MASKING_SOURCE, RELAY_SOURCE, AGENT_SOURCE, BROWSER_SOURCE)
"""The desktop process's code, in this order: each file uses names of those before it (main() runs last)."""


class DesktopUnavailable(SandboxUnavailable):
    """No desktop can run here, or this one failed to start or died: why, naming what is missing."""


@dataclass(frozen=True, slots=True)
class DesktopSettings:
    """``width``×``height``: the screen (OpenAI's guide: 1280×800 to 1600×900 work well); ``memory_bytes``,
    ``processes`` (threads count) and ``cpus`` (cores: as much as the one slot it holds): the call's cgroup, the
    CPU bound where a cpu controller is writable; ``lifetime``: the call's outer time bound;
    ``start_timeout``: display and browser up; ``quality``: the JPEG's; ``settle``: at most this long waiting for
    the screen to settle after actions, ``quiet``: unchanged this long counts as settled; ``wait``: what the
    ``wait`` action waits before settling; ``url``: the browser's first page (its origin approved);
    ``approve_origins``: each other origin waits for its client's approval (origins.py; False: every origin the
    network policy allows is reached), ``origin_hold``: how long the browser's request for one is held."""

    width: int = 1280
    height: int = 800
    memory_bytes: int = GIB
    processes: int = 512
    cpus: float = 1.0
    lifetime: float = 4 * 3600.0
    start_timeout: float = 30.0
    quality: int = 70
    settle: float = 1.5
    quiet: float = 0.1
    wait: float = 1.0
    url: str = "about:blank"
    browser: str = DEFAULT_BROWSER
    browser_flags: tuple[str, ...] = ()
    browser_sandbox: bool = True
    """Chromium's own sandbox (this module's docstring); False: ``--no-sandbox``, and the call may make no user
    namespace, as a code call."""
    approve_origins: bool = True
    origin_hold: float = 300.0
    egress: EgressRates = field(default_factory=EgressRates)
    """The browser's bounds on its egress proxy (sandbox/egress/rates.py): connections open at once, new ones and
    bytes a second, in place of a code call's lifetime counts."""

    def limits(self) -> SandboxLimits:
        return SandboxLimits(timeout=self.lifetime, memory_bytes=self.memory_bytes, processes=self.processes,
                             file_bytes=64 * MIB, container_bytes=16 * MIB, output_bytes=64 * 1024, cpus=self.cpus)


@dataclass(frozen=True, slots=True)
class Screenshot:
    """The screen as a JPEG; ``settled``: it had stopped changing when taken (False: the bound came first);
    ``error``: an action that failed (the screenshot is the screen after it)."""

    jpeg: bytes
    width: int
    height: int
    settled: bool = True
    error: str | None = None
    seconds: tuple[float, ...] = ()
    """Where the desktop's time went: the actions, waiting for the screen to settle, the JPEG, the sign-in form's
    detection."""
    pending_origins: tuple[str, ...] = ()
    """Origins the browser waits for, to be approved or denied (:meth:`Desktop.allow_origin`)."""
    sign_in: SignInForm | None = None
    """The sign-in form the page shows after the actions (:meth:`Desktop.submit_sign_in`), if any."""
    withheld: str | None = None
    """Why the screen is not shown (``jpeg`` is a grey image of its size): a page of a sign-in's origin shows what
    was submitted and it could not be masked (masking.py)."""
    refused: tuple[str, ...] = ()
    """What the egress proxy refused since the model's last call, one line each (egress_watch.py)."""
    browser: str | None = None
    """What became of the browser, when it had gone (the last tab closed, a crash, a kill) and was started again
    at its last address (agent.py's :class:`Browser`)."""


class Desktop:
    """A desktop in one sandbox call, for one tenant's session. Not safe to drive from two tasks at once: requests
    are taken one at a time (a lock), as a model's actions are."""

    def __init__(self, sandbox: Sandbox | DesktopHost, *, tenant: str = "", network: NetworkPolicy | None = None,
                 settings: DesktopSettings | None = None, origins: Iterable[str] = (),
                 on_origin: Callable[[str], None] | None = None) -> None:
        """``sandbox``: the bubblewrap sandbox, or another host of desktops (host.py: an agent-sandbox pod);
        ``origins``: approved from the start (the first page's is); ``on_origin``: called with each origin the
        browser begins to wait for, whenever it does (a page's own request after an action returned, too)."""
        self.settings = settings or DesktopSettings()
        approved = [_origin(text, "origins") for text in [*origins]]
        first = url_origin(self.settings.url)
        self._approvals = OriginApprovals([*approved, *([first] if first else [])], hold=self.settings.origin_hold,
                                          on_pending=self._origin_waits)
        self._acted = False  # a model's request was sent (what the proxy refused before it is not told)
        self._egress = DesktopEgress(self._approvals, self.settings.egress, approve=self.settings.approve_origins)
        self._settling = False
        self._on_origin = on_origin
        self._sign_in: SignInForm | None = None
        self._answered: list[str] = []  # the documents whose form was submitted or cancelled: not reported again
        self._host: DesktopHost = BubblewrapHost(sandbox) if isinstance(sandbox, Sandbox) else sandbox
        self._tenant = tenant
        self._network = network
        self._stack: contextlib.AsyncExitStack | None = None
        self._run: asyncio.Task[SandboxResult] | None = None
        self._said = bytearray()
        self._heard = asyncio.Event()
        self._reader: asyncio.StreamReader | None = None
        self._writer: Sender | None = None
        self._lock = asyncio.Lock()
        self._init_pid: int | None = None
        self._call: DesktopLink | None = None
        self._browser_sandbox = False

    @property
    def width(self) -> int:
        return self.settings.width

    @property
    def height(self) -> int:
        return self.settings.height

    @property
    def browser_sandbox(self) -> bool:
        """Whether Chromium's own sandbox runs (its renderers in namespaces of their own): known once started."""
        return self._browser_sandbox

    @property
    def uid(self) -> int | None:
        """The host uid every process of the desktop runs as: the sandbox's, never root (identity.py); None in a
        pod (not this machine's)."""
        return self._host.uid

    async def start(self) -> None:
        """The call (no code slot: the desktops' pool bounds them), the display and the browser, returning once the
        browser's window is drawn (its first page may still be loading: a screenshot shows what there is). Raises
        :class:`DesktopUnavailable`: a package, Pillow or the cgroup mode missing, no pod claimed, or the desktop failed
        to start — saying why."""
        if self._stack is not None:
            raise RuntimeError("the desktop has started already")
        refused = self._host.unavailable(self.settings.browser)
        if refused is not None:
            raise DesktopUnavailable(refused)
        self._stack = contextlib.AsyncExitStack()
        try:
            try:
                call = await self._stack.enter_async_context(self._host.open(
                    tenant=self._tenant, network=self._network, limits=self.settings.limits(),
                    user_namespaces=self.settings.browser_sandbox,
                    origins=self._egress))
            except (SandboxBusy, SandboxUnavailable) as refused:  # refused by the host, a pod not claimed: why
                if isinstance(refused, DesktopUnavailable):
                    raise
                raise DesktopUnavailable(str(refused)) from None
            self._init_pid = call.init_pid
            self._call = call
            settings = self.settings
            config = {"width": settings.width, "height": settings.height, "quality": settings.quality,
                      "url": settings.url, "browser": settings.browser, "browser_flags": list(settings.browser_flags),
                      "start_timeout": settings.start_timeout, "no_sandbox": not settings.browser_sandbox,
                      "channel": call.channel}
            code = ("\n".join(source.read_text() for source in SOURCES) + "\n"
                    f"main({json.dumps(json.dumps(config))})\n")
            self._run = asyncio.ensure_future(call.run(code, self._hear))
            first = await self._first_word()
            if "error" in first or not first.get("ready"):
                raise DesktopUnavailable(f"the desktop did not start: {first.get('error') or first}")
            self._browser_sandbox = bool(first.get("browser_sandbox"))
            self._reader, self._writer = await call.connect()
        except BaseException:
            await self.stop()
            raise

    def _hear(self, piece: bytes) -> None:
        self._said += piece
        if b"\n" in self._said:
            self._heard.set()

    async def _first_word(self) -> dict[str, object]:
        """The agent's first line (ready, or why not), or why the call ended before it."""
        assert self._run is not None
        heard = asyncio.ensure_future(self._heard.wait())
        try:
            await asyncio.wait({heard, self._run}, timeout=self.settings.start_timeout + 5.0,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            heard.cancel()
        if self._heard.is_set():
            line = bytes(self._said).split(b"\n", 1)[0]
            try:
                found = json.loads(line)
            except ValueError:
                found = None
            if isinstance(found, dict):
                return found
            return {"error": f"unexpected word from the desktop: {line[:200]!r}"}
        if self._run.done() and not self._run.cancelled():
            result = self._run.result()
            said = (result.stderr or result.note or result.outcome).strip().splitlines()
            return {"error": f"the desktop's process ended ({result.outcome}): {said[-1] if said else ''}"}
        return {"error": f"no word from the desktop within {self.settings.start_timeout + 5.0:g} s"}

    async def act(self, actions: Sequence[Action]) -> Screenshot:
        """Perform ``actions`` (parsed: actions.py) in order, then the screen once it has settled."""
        steps = batch_steps(actions)
        wait = self.settings.wait * sum(action.type == "wait" for action in actions)
        return await self._request({"steps": steps, "wait": wait, "settle": self.settings.settle,
                                    "quiet": self.settings.quiet, "detect": True})

    async def screenshot(self) -> Screenshot:
        """The screen as it is now: one grab, no waiting (a ``screenshot`` action in :meth:`act` waits for the
        screen to settle, as every batch does)."""
        return await self._request({"steps": [], "settle": 0.0, "quiet": 0.0})

    async def _request(self, request: dict[str, object]) -> Screenshot:
        if self._reader is None or self._writer is None:
            raise DesktopUnavailable("the desktop is not running")
        detect = bool(request.get("detect"))
        async with self._lock:
            if detect and not self._acted:
                # refused before the model's first call: the browser's own requests as it starts (Chromium
                # reaches for www.google.com then, whatever its flags), not the model's doing: logged, not told
                self._acted = True
                self._egress.report()
            try:
                self._writer.write(json.dumps(request).encode() + b"\n")
                del request  # a sign-in's values: sent, and kept nowhere
                self._settling = True
                await self._writer.drain()
                head = json.loads(await self._reader.readuntil(b"\n"))
                data = await self._reader.readexactly(int(head["bytes"]))
            except (OSError, ValueError, KeyError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
                raise DesktopUnavailable(f"the desktop stopped answering ({self._ended() or error})") from None
            finally:
                self._settling = False
            self._egress.relayed(head.get("egress_refused"))  # told with the model's next call (egress_watch.py)
            if detect:  # a plain screenshot (a watcher's) leaves the form reported last as it is
                form = parse_form(head.get("sign_in"))
                self._sign_in = form if form is not None and form.key not in self._answered else None
        browser = head.get("browser")
        return Screenshot(data, int(head["width"]), int(head["height"]), bool(head.get("settled")),
                          head.get("error"), tuple(head.get("seconds", ())), self._approvals.pending(),
                          self._sign_in, str(head["withheld"])[:300] if head.get("withheld") else None,
                          self._egress.report() if detect else (), str(browser)[:500] if browser else None)

    def _origin_waits(self, origin: str) -> None:
        """The browser waits for ``origin``'s approval: a request settling now is answered at once (its screen
        would wait for a page that cannot come before the client decides)."""
        if self._settling and self._writer is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self._writer.write(b'{"cut": true}\n')
        if self._on_origin is not None:
            self._on_origin(origin)

    def pending_origins(self) -> tuple[str, ...]:
        """The origins the browser waits for now, oldest first: each to be allowed or denied."""
        return self._approvals.pending()

    def allow_origin(self, origin: str) -> None:
        """Approve ``origin`` (``scheme://host[:port]``): the requests held for it go on, and later ones pass —
        within the network policy still, which the proxy checks before it asks (an origin it refuses stays
        refused). A 400 for what is not an origin."""
        self._decided(self._approvals.allow, origin)

    def deny_origin(self, origin: str) -> None:
        """Deny ``origin``: the requests held for it and every later one get a 403; it is never connected to."""
        self._decided(self._approvals.deny, origin)

    def dismiss_origin(self, origin: str) -> None:
        """Refuse the requests held for ``origin`` now, deciding nothing (OpenAI's ``cancel``): asked again on the
        browser's next request for it."""
        self._approvals.dismiss(_origin(origin, "origin"))

    def _decided(self, decide: Callable[[str], None], origin: str) -> None:
        try:
            decide(_origin(origin, "origin"))
        except OverflowError as full:
            raise invalid_request(str(full), param="origin", code="invalid_value") from None

    @property
    def sign_in(self) -> SignInForm | None:
        """The sign-in form awaiting its client's values (the last action's report), if any."""
        return self._sign_in

    async def submit_sign_in(self, values: Mapping[str, str], selected_option: str | None = None) -> Screenshot:
        """Fill ``values`` (field id to value) into the reported form, submit it, and return the screen once
        settled — the fields' text masked and transparent before it is filled, and the values masked wherever the
        page shows them, so no screenshot shows them. The values go to the desktop's process once, for that document
        only, and are submitted to the form's ``credential_origin`` only: the result's ``error`` says why they were
        not (the document gone or moved elsewhere, the form posting elsewhere, its submission sent elsewhere —
        page.py). Nothing keeps, logs or returns them. A 400 naming the field for values that do not fit the form,
        a 409 when no form awaits them."""
        form = self._sign_in
        if form is None:
            raise APIError(409, "no sign-in form awaits values", param="fields", code="no_sign_in_pending")
        checked = check_values(form, values, selected_option)
        self._answered_with(form)
        try:
            return await self._request({"fill": {"key": form.key, "origin": form.credential_origin,
                                                 "values": checked}, "steps": [],
                                        "settle": self.settings.settle, "quiet": self.settings.quiet,
                                        "detect": True})
        finally:
            checked.clear()

    def cancel_sign_in(self) -> None:
        """Leave the reported form as it is: not reported again for the same page (a new page's form is)."""
        if self._sign_in is not None:
            self._answered_with(self._sign_in)

    def _answered_with(self, form: SignInForm) -> None:
        """``form``'s document is not reported again (its form is still shown while the submission is under
        way, or after a cancel): a new page's form is."""
        self._answered = [*self._answered[-99:], form.key]
        self._sign_in = None

    def _ended(self) -> str | None:
        if self._run is None or not self._run.done() or self._run.cancelled():
            return None
        result = self._run.result()
        return result.note or f"its process ended: {result.outcome}"

    def memory(self) -> MemoryUse | None:
        """What the desktop's call's memory cgroup holds (every process of it, its in-memory ``/tmp`` where the
        browser's profile is): the figure ``DesktopSettings.memory_bytes`` bounds and ``scripts/bench desktop``
        reports per desktop. None before it started, after it stopped, or without a cgroup."""
        return self._call.memory() if self._call is not None and self._init_pid is not None else None

    def processes(self) -> list[int]:
        """The host pids of the call's processes now: its init and every process under it (the browser's
        renderers, in PID namespaces of their own, too): what :meth:`stop` ends."""
        if self._init_pid is None:
            return []
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{entry}/stat") as stat:
                    parent = int(stat.read().rsplit(")", 1)[1].split()[1])
                    children.setdefault(parent, []).append(int(entry))
        found, waiting = [], [self._init_pid] if os.path.exists(f"/proc/{self._init_pid}") else []
        while waiting:
            pid = waiting.pop()
            found.append(pid)
            waiting += children.get(pid, [])
        return found

    async def stop(self) -> None:
        """End the desktop: the agent asked to quit (it ends the browser and the display), the call ended (the
        init kills whatever is left; its cgroup removed) and its slot freed. Never raises but for cancellation."""
        if self._writer is not None:
            with contextlib.suppress(OSError, RuntimeError):
                self._writer.write(b'{"quit": true}\n')
                await self._writer.drain()
            self._writer.close()
            self._writer = self._reader = None
        if self._run is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._run), 2.0)
            if not self._run.done():
                self._run.cancel()  # the call's init ends every process of it (call.py)
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._run
        stack, self._stack = self._stack, None
        self._call = None
        if stack is not None:
            await stack.aclose()


def _origin(text: object, param: str) -> str:
    found = parse_origin(text) if isinstance(text, str) else None
    if found is None:
        raise invalid_request(f"Invalid value for '{param}': expected an origin, scheme://host[:port] (http or "
                              "https).", param=param, code="invalid_value")
    return found
