"""The sandbox of this process: what it can give on this machine (its mode), and each call in it within the
limits, fairly shared among tenants.

    sandbox = Sandbox.detect(limits)              # never None: an unusable machine gives a sandbox that refuses
    async with sandbox.call(tenant=...) as call:  # a slot, then the call's own sandbox (see call.py)
        ... lay files out in call.data ...
        result = await call.run(code)
        ... read call.data back ...

One budget per call, whatever the host, in one of two modes:

- ``cgroup``: a memory cgroup per call (v2 ``memory.max`` or v1 ``memory.limit_in_bytes``, swap off; ``pids.max``
  where a pids controller is writable) bounds everything the call starts and writes, together;
- ``single-process``: where no memory cgroup can be made, the code may start no other process (its seccomp filter
  refuses it) and its one address space gets the call's memory less the in-memory ``/tmp`` and ``/dev/shm``, so the
  call as a whole still stays within the limit. The cost: no subprocesses (``doctor`` says so).
  ``RESPONSES_BRIDGE_CODE_REQUIRE_CGROUP=true`` refuses the tool instead.

At most ``limits.slots`` calls run at once; a call waits for a slot at most its own timeout (then it is
``refused``), and a tenant holds at most its share (slots.py). A desktop's long-lived call takes no slot
(``call(slot=False)``): the desktops' own pool bounds them, and its own cgroup what each holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import structlog

from ..observability import metrics, timing, tracing
from .call import JobKind, SandboxCall
from .cgroups.per_call import CgroupParent, call_name
from .command import SHM_BYTES, TMP_BYTES, EgressBinding
from .egress.origins import OriginGate
from .egress.policy import NetworkPolicy
from .egress.proxy import EgressProxy, EgressSettings
from .identity import SandboxIdentity
from .limits import SandboxLimits
from .result import SandboxBusy, SandboxResult, SandboxUnavailable
from .seccomp import SeccompUnavailable, compiled_filter
from .slots import FairSlots, take_slot

log = structlog.get_logger(__name__)
SHELL_NEEDS_PROCESSES = (
    "shell commands need processes of their own, and this host gives the sandbox no memory cgroup per call, so it "
    "runs in the single-process mode, where no process may start another")
"""Why the hosted shell is refused in the single-process mode (also what the demo's banner says then); the
refusal adds which cgroup and which grant (sandbox/cgroups/grants.py)."""

SHELL_OFF_BY_SETTING = (
    "shell commands need processes of their own, and RESPONSES_BRIDGE_CODE_CGROUP=false runs every call in the "
    "single-process mode, where no process may start another (set it to true where the host delegates a cgroup)")
"""Why the hosted shell is refused when the deployment chose the single-process mode (not the host's doing)."""

SINGLE_PROCESS_NOTE = (
    "This sandbox runs your code as one process: subprocess, os.system, os.fork, os.exec*, multiprocessing and "
    "shell commands are refused (PermissionError: Operation not permitted); do everything in Python itself.")
"""The code interpreter's description in the single-process mode, and the note after a refused fork or exec."""
NO_PROC_NOTE = "There is no /proc (psutil and reading /proc/self fail)."

Mode = Literal["cgroup", "single-process"]
Prepare = Callable[[], contextlib.AbstractAsyncContextManager[Sequence[tuple[Path, str]]]]
"""Trees to bind read-only, made once a call is admitted (``Sandbox.call(prepare=...)``)."""


@dataclass(frozen=True, slots=True)
class OwnLimits:
    """A call's own limits, in the cgroup mode only (its cgroup bounds the memory and processes of all it starts):
    ``limits`` for the call itself (time, memory, processes), ``address_space`` each process's ``RLIMIT_AS`` (0:
    none — a browser reserves far more address space than it ever uses, so the cgroup alone bounds it)."""

    limits: SandboxLimits
    address_space: int = 0
    user_namespaces: bool = False
    """The call may make user namespaces of its own (no ``--disable-userns``, the seccomp filter's namespace
    refusals lifted): the desktop's browser runs its own sandbox in them, so that a web page that takes a renderer
    over is held by Chromium's sandbox before the call's. Every other bound of the call stands."""


_CALLS = itertools.count(1)
"""Numbers the calls' cgroups across every sandbox of the process: a cgroup whose removal is still under way never
has its name taken by the next call of another sandbox."""


class Sandbox:
    """Runs code in bubblewrap; one per process. ``unavailable``: why code cannot run here (then :meth:`call`
    raises :class:`SandboxUnavailable`, and nothing is ever run unsandboxed)."""

    def __init__(self, limits: SandboxLimits, bwrap: str | None, *, unavailable: str | None = None,
                 cgroups: CgroupParent | None = None, share: Callable[[str], int] | None = None,
                 egress: EgressSettings | None = None, identity: SandboxIdentity | None = None,
                 proc_refused: str | None = None, cgroup_off: bool = False) -> None:
        self.limits = limits
        self.egress = egress
        self.identity = identity or SandboxIdentity()
        self.proc_refused = proc_refused
        self.cgroup_off = cgroup_off  # the single-process mode chosen by the setting, not forced by the host
        self.cgroup_failed: str | None = None
        self._no_cgroup: str | None = None
        """Why calls in a cgroup failed where one could be made (the start-up proof fell back): None otherwise."""
        """Why the sandbox has no ``/proc`` of its own here (None: it has one): the host's masks (host.py)."""
        self.bwrap = bwrap
        self.cgroups = cgroups
        self.unavailable = unavailable
        self.mode: Mode = "cgroup" if cgroups is not None else "single-process"
        self.seccomp = b""
        if unavailable is None:
            try:
                self.seccomp = compiled_filter(single_process=cgroups is None)
            except SeccompUnavailable as missing:
                self.unavailable = f"no seccomp filter can be made: {missing}"
        self.slots = FairSlots(limits.slots, share or (lambda tenant: limits.slots), what="sandbox slots")

    @property
    def address_space(self) -> int:
        """Each process's ``RLIMIT_AS``: the call's memory; in the single-process mode, less the in-memory
        ``/tmp`` and ``/dev/shm``, which no address space counts."""
        if self.mode == "cgroup":
            return self.limits.memory_bytes
        return max(self.limits.memory_bytes - TMP_BYTES - SHM_BYTES, 32 << 20)

    @property
    def shell_unavailable(self) -> str | None:
        """Why shell commands cannot run here (None: they can). A shell forks for each command and each pipeline;
        the single-process mode's filter refuses every fork, and is never loosened for it."""
        if self.unavailable is not None:
            return self.unavailable
        if self.mode == "single-process":
            return SHELL_OFF_BY_SETTING if self.cgroup_off else f"{SHELL_NEEDS_PROCESSES}: {self.no_cgroup}"
        return None

    @property
    def model_note(self) -> str:
        """What the code interpreter's description tells the model of this sandbox's limits (empty: none worth
        saying), so that it does not keep trying what the sandbox refuses."""
        if self.mode == "cgroup" and self.proc_refused is None:
            return ""
        said = [SINGLE_PROCESS_NOTE] if self.mode == "single-process" else []
        if self.proc_refused is not None:
            said.append(NO_PROC_NOTE)
        return " ".join(said)

    @property
    def no_cgroup(self) -> str:
        """Why calls get no cgroup here: the cgroup and the grant that fits (sandbox/cgroups/grants.py), or why calls in
        one failed; read once."""
        if self._no_cgroup is None:
            from .cgroups.grants import cgroup_problem

            self._no_cgroup = (f"calls in a cgroup failed here ({self.cgroup_failed})" if self.cgroup_failed
                               else cgroup_problem())
        return self._no_cgroup

    @classmethod
    def detect(cls, limits: SandboxLimits, *, bwrap: str | None = None, use_cgroup: bool = True,
               require_cgroup: bool = False, share: Callable[[str], int] | None = None,
               egress: EgressSettings | None = None, identity: SandboxIdentity | None = None,
               prove: bool = True) -> Sandbox:
        """The sandbox this machine can give: bubblewrap found on PATH (or ``bwrap``) and able to make its
        namespaces under the sandbox's host uid (``identity``: this process's default, never root), the runtime
        reachable by that uid, and a memory cgroup per call where one can be made (``use_cgroup``).
        ``require_cgroup``: refuse every call where none can. ``egress``: the deployment's rules for allowlist
        network policies (None: the deployment allows none).
        ``prove``: choose the mode by what a real call needs — a call with the real arguments of each mode it may
        use, best first (a cgroup and a ``/proc`` of its own with ``--disable-userns``; a cgroup without
        ``/proc``; then the single-process mode, with and without ``/proc``), keeping the first that printed:
        a host that mounts a fresh ``/proc`` but keeps ``/proc/sys`` read-only falls back instead of refusing
        the tool, and one that passes every check and still cannot run code is refused at start, not at each call.
        Without ``prove`` the ``/proc`` is chosen by bubblewrap alone (host.py)."""
        from .cgroups.grants import cgroup_problem
        from .host import check_bubblewrap, proc_refused  # these run commands: only when wanted

        identity = identity or SandboxIdentity.for_process()
        found, reason = check_bubblewrap(bwrap, identity)
        if reason is None:
            reason = _unreachable(identity)
        parent = CgroupParent.find() if reason is None and use_cgroup else None
        if parent is not None:
            swept = parent.sweep()
            if swept:
                log.info("sandbox_cgroups_swept", removed=swept)
        elif reason is None and require_cgroup:
            reason = (f"no memory cgroup can be made for each call and RESPONSES_BRIDGE_CODE_REQUIRE_CGROUP=true "
                      f"requires one: {cgroup_problem()}; or allow the single-process mode")

        def made(cgroups: CgroupParent | None, no_proc: str | None) -> Sandbox:
            return cls(limits, found, unavailable=reason, cgroups=cgroups, share=share, egress=egress,
                       identity=identity, proc_refused=no_proc, cgroup_off=not use_cgroup)

        if not prove or reason is not None or found is None:
            return made(parent, proc_refused(found, identity) if reason is None and found is not None else None)
        tried: list[str] = []
        no_proc: str | None = None
        cgroup_failed: str | None = None
        for cgroups in [parent, None] if parent is not None and not require_cgroup else [parent]:
            for proc in (True, False):
                sandbox = made(cgroups, None if proc else no_proc or "the call with a /proc of its own failed")
                if sandbox.unavailable is not None:
                    return sandbox  # no seccomp filter: nothing any mode could run
                failed = sandbox.prove()
                if failed is None:
                    sandbox.cgroup_failed = cgroup_failed
                    return sandbox
                tried.append(f"{sandbox.mode}{'' if proc else ' without /proc'}: {failed}")
                if proc:
                    no_proc = failed
            if cgroups is not None:
                cgroup_failed = tried[-1]
        sandbox = made(parent, no_proc)
        sandbox.unavailable = "; ".join(tried)
        return sandbox

    def prove(self) -> str | None:
        """One real call (``print`` in the sandbox's interpreter), run on a loop of its own in a thread of its own
        (callable from anywhere): None when it printed, else why not, in one line."""
        from concurrent.futures import ThreadPoolExecutor

        async def probe() -> SandboxResult:
            # a name no other bridge takes: pids repeat across PID namespaces (bridges run as PID 1 or 2 there)
            call = self._new_call(call_name("probe", secrets.token_hex(4)), (), None)
            try:
                await call.start()
                return await call.run("print('ok')")
            finally:
                await call.close(settle=True)  # its cgroup removed before this loop ends

        with ThreadPoolExecutor(1) as pool:  # not counted in the metrics, and not holding a slot: no call yet
            try:
                result = pool.submit(asyncio.run, probe()).result()
            except SandboxUnavailable as refused:
                return f"a first call in the sandbox failed: {refused}"
        if result.outcome == "ok" and result.stdout.strip() == "ok":
            return None
        said = (result.stderr or result.note or result.outcome).strip().splitlines()
        return f"a first call in the sandbox failed ({said[-1] if said else result.outcome})"

    @contextlib.asynccontextmanager
    async def call(self, *, tenant: str = "", job: JobKind = "python",
                   read_only: Sequence[tuple[Path, str]] = (),
                   network: NetworkPolicy | None = None,
                   prepare: Prepare | None = None, memory_limit: str | None = None,
                   own: OwnLimits | None = None,
                   origins: OriginGate | None = None, slot: bool = True) -> AsyncIterator[SandboxCall]:
        """A slot, then a started sandbox; ended (and its slot freed) on leaving. Raises
        :class:`SandboxUnavailable` when code cannot run here (or, for a ``shell`` job, in this mode),
        :class:`SandboxBusy` when no slot came in time.
        ``read_only``: (host directory, sandbox path) trees the call sees read-only (command.py).
        ``network``: an allowlist policy, served by an egress proxy of the call's own (None: no network).
        ``prepare``: more such trees, made only once the call holds its slot (a container's skills, unpacked on
        the host's disk: never for a call that waits, or is refused) and held until the call ends.
        ``memory_limit``: the container's tier; every call here gets the bridge's own limit (backend.py).
        ``own``: a long-lived call's limits of its own (the desktop: sandbox/desktop/), in place of the sandbox's
        for the call itself; it waits for its slot as any call does, and needs the cgroup mode.
        ``origins``: the call's egress proxy asks it before reaching an origin its ``network`` allows
        (sandbox/egress/origins.py: a desktop's client approves each one).
        ``slot``: False for a call bounded by a pool of its own instead of the code slots (a desktop: the desktops'
        pool, services/agents/computer/desktops.py, bounds how many run; its ``own`` limits bound what each holds),
        so that no code call ever waits behind a desktop."""
        refused = self.unavailable or (None if self.bwrap is not None else "bubblewrap (bwrap) was not found")
        if refused is None and job == "shell":
            refused = self.shell_unavailable
        if refused is None and own is not None and self.mode != "cgroup":
            refused = self.shell_unavailable or "a call with limits of its own needs the cgroup mode"
        if refused is None and network is not None and self.egress is None:
            refused = ("this deployment allows no network policy but 'disabled' "
                       "(RESPONSES_BRIDGE_CODE_EGRESS_ALLOWLIST=false)")
        if refused is None:
            try:
                self._check_reachable(read_only)
            except SandboxUnavailable as unreachable:
                refused = str(unreachable)
        if refused is not None or self.bwrap is None:
            metrics.sandbox_run("refused", None, job=job)
            raise SandboxUnavailable(refused or "bubblewrap (bwrap) was not found")
        if slot:
            await take_slot(self.slots, tenant, self.limits, job)
        try:
            name = call_name("run", str(next(_CALLS)))
            proxy = None if network is None or self.egress is None else EgressProxy(
                network, self.egress.rules, self.egress.limits, tenant=tenant, origins=origins)
            shown = {"responses_bridge.sandbox.timeout": self.limits.timeout,
                     "responses_bridge.sandbox.mode": self.mode,
                     "responses_bridge.sandbox.network": "allowlist" if proxy else "none"}
            with tracing.span("sandbox run", shown), timing.span("sandbox run", "sandbox", shown):
                call: SandboxCall | None = None
                async with contextlib.AsyncExitStack() as prepared:
                    try:
                        binds = [*read_only, *(await prepared.enter_async_context(prepare()) if prepare else [])]
                        self._check_reachable(binds)
                        if proxy is not None:
                            await proxy.start()  # first: its socket is bound into the sandbox
                        call = self._new_call(name, binds, proxy.binding() if proxy is not None else None, own)
                        await call.start()
                        yield call
                    finally:
                        if call is not None:
                            await call.close()
                        if proxy is not None:
                            await proxy.close()
        finally:
            if slot:
                metrics.SANDBOX_LIVE.dec()
                self.slots.release(tenant)

    def refusal(self, job: JobKind, *, memory_limit: str | None = None, network: bool = False,
                skills: bool = False) -> str | None:
        """Why a call with these needs cannot run here (backend.py): bubblewrap serves every tier with the bridge's
        own limit, and skills wherever it runs; a shell needs the cgroup mode, a network policy the egress proxy."""
        if job == "shell":
            return self.shell_unavailable
        return self.unavailable

    def _check_reachable(self, binds: Sequence[tuple[Path, str]]) -> None:
        """Raise :class:`SandboxUnavailable` naming the first directory the sandbox's uid cannot traverse on the
        way to a tree it binds (bubblewrap, started under that uid, would fail with a bare EACCES)."""
        for tree, target in binds:
            blocked = self.identity.unreachable(tree)
            if blocked is not None:
                raise SandboxUnavailable(f"the sandbox's host uid {self.identity.host_uid} cannot traverse "
                                         f"{blocked}, on the way to {tree} (bound read-only at {target})")

    def _new_call(self, name: str, read_only: Sequence[tuple[Path, str]], egress: EgressBinding | None,
                  own: OwnLimits | None = None) -> SandboxCall:
        assert self.bwrap is not None
        limits, address_space = (self.limits, self.address_space) if own is None else (own.limits, own.address_space)
        namespaces = own is not None and own.user_namespaces
        seccomp = compiled_filter(single_process=False, user_namespaces=True) if namespaces else self.seccomp
        return SandboxCall(self.bwrap, limits, seccomp=seccomp, address_space=address_space,
                           cgroup_parent=self.cgroups, name=name, read_only=read_only, egress=egress,
                           identity=self.identity, proc=self.proc_refused is None, user_namespaces=namespaces)

    async def run(self, code: str, *, tenant: str = "") -> SandboxResult:
        """Run ``code`` over an empty ``/mnt/data`` (what it writes there is gone with the call): the doctor's
        probes and the benchmark's calls, which keep no files."""
        try:
            async with self.call(tenant=tenant) as call:
                result = await call.run(code)
        except SandboxBusy as busy:
            return busy.result
        return result


def _unreachable(identity: SandboxIdentity) -> str | None:
    """Why the sandbox's uid cannot reach what every call binds (the interpreter, its environment, the launcher),
    naming the directory and the fix; None when it can. Never a reason to fall back to the host's root."""
    from .command import LAUNCHER_SOURCE, python_binds

    for source in [*(host for host, _ in python_binds()), str(LAUNCHER_SOURCE)]:
        blocked = identity.unreachable(source)
        if blocked is not None:
            return (f"the sandbox's host uid {identity.host_uid} cannot traverse {blocked}, on the way to {source} "
                    f"(the Python runtime, its environment or the launcher, bound into every call): run the bridge "
                    f"from a runtime that uid can read, or make the path traversable (chmod o+x {blocked}), or set "
                    "RESPONSES_BRIDGE_CODE_SANDBOX_UID to a uid that can read it (never 0)")
    return None
