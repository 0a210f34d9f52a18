"""The ``agent-sandbox`` backend: each call runs in a pod claimed from the ``SandboxWarmPool`` of its container's
memory tier (``RESPONSES_BRIDGE_AGENT_SANDBOX_POOLS``), through the ``k8s-agent-sandbox`` client — a
``SandboxClaim`` made with a shutdown time (the call's time limit and a margin: a bridge that crashes mid-call
leaves nothing past it), watched until Ready within ``RESPONSES_BRIDGE_AGENT_SANDBOX_READY_TIMEOUT`` (else a clear
error and the ``not_ready`` metric, never a hang), the pod reached at its IP on the runtime's REST and gRPC ports,
and the claim deleted when the call ends, whatever way it ends.

A claim per call, not per container: the container's files live in the bridge's store and are laid out fresh in
each call (as on bubblewrap), so a pod never holds a tenant's files past its call, and a warm pool makes the claim
sub-second. What this backend cannot give it refuses before anything is made (:meth:`refusal`): a tier no pool
serves, a network policy where no egress door is configured (egress_door.py: each call's proxy, reached from its pod
with a credential of the call's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from k8s_agent_sandbox import AsyncSandboxClient
from k8s_agent_sandbox.commands._process_stubs import process_pb2_grpc
from k8s_agent_sandbox.exceptions import SandboxError, SandboxWarmPoolNotFoundError
from k8s_agent_sandbox.models import SandboxdInClusterConnectionConfig
from kubernetes_asyncio.client import ApiClient, ApiException, Configuration

from ...observability import metrics, timing, tracing
from ..backend import JobKind, Prepare, SandboxSession
from ..egress.origins import OriginGate
from ..egress.policy import NetworkPolicy
from ..egress.proxy import EgressProxy, EgressSettings
from ..limits import SandboxLimits
from ..result import SandboxBusy, SandboxResult, SandboxUnavailable
from ..slots import FairSlots, take_slot
from . import transfer
from .door_admission import DoorLimits
from .egress_door import EgressDoor
from .process import run_process
from .session import ClaimedPod, PodSession

if TYPE_CHECKING:
    from ..desktop.host import DesktopHost
    from .settings import AgentSandboxConfig

log = structlog.get_logger(__name__)
EXEC_BATCH = 200  # paths per chmod (or links per shell) of a call's read-only trees (within any argv limit)
MAKE_LINKS = 'while [ "$#" -gt 1 ]; do mkdir -p -- "${2%/*}" && ln -s -- "$1" "$2" || exit 1; shift 2; done'
"""Each (target, link) pair of its arguments made a symbolic link, its directory first (one holding links only
was not uploaded)."""
DEFAULT_TIER = "1g"
NO_EGRESS_DOOR = ("RESPONSES_BRIDGE_AGENT_SANDBOX_EGRESS_LISTEN is unset, so the sandbox pods have no way out: only "
                  "network_policy 'disabled' runs here")
NO_EGRESS = ("this deployment allows no network policy but 'disabled' (RESPONSES_BRIDGE_CODE_EGRESS_ALLOWLIST=false)")
POD_CA_BUNDLE = "/mnt/egress/ca.pem"
"""Where a call whose policy has domain secrets finds its proxy's authority in the pod (never collected back)."""


class AgentSandboxBackend:
    """Pods claimed per call from warm pools (one per memory tier)."""

    def __init__(self, limits: SandboxLimits, client: AsyncSandboxClient[Any], *, namespace: str,
                 pools: dict[str, str], ready_timeout: float, python: str,
                 share: Callable[[str], int] | None = None, egress: EgressSettings | None = None,
                 door: EgressDoor | None = None, runtime_root: str = "/mnt", shutdown_margin: int = 60,
                 desktop_pool: str | None = None) -> None:
        self.limits = limits
        self.client = client
        self.namespace = namespace
        self.pools = pools
        self.ready_timeout = ready_timeout
        self.python = python
        self.unavailable: str | None = None if pools else "RESPONSES_BRIDGE_AGENT_SANDBOX_POOLS names no warm pool"
        self.slots = FairSlots(limits.slots, share or (lambda tenant: limits.slots), what="sandbox slots")
        self.egress = egress
        self.door = door
        self.door_refused = NO_EGRESS_DOOR
        self.runtime_root = runtime_root
        self.shutdown_margin = shutdown_margin
        """Past the call's time limit and ready deadline, when the controller deletes a claim nobody deleted."""
        self.desktop_pool = desktop_pool
        """The warm pool of desktop pods (None: no desktop runs on this backend)."""

    @classmethod
    def from_settings(cls, settings: AgentSandboxConfig, limits: SandboxLimits, *,
                      share: Callable[[str], int] | None = None,
                      egress: EgressSettings | None = None) -> AgentSandboxBackend:
        from .settings import parse_pools

        api_client = None
        if settings.agent_sandbox_api_url:
            api_client = ApiClient(Configuration(host=settings.agent_sandbox_api_url))
        connection = SandboxdInClusterConnectionConfig(mode="in-cluster-pod-ip",
                                                       rest_port=settings.agent_sandbox_rest_port,
                                                       grpc_port=settings.agent_sandbox_grpc_port)
        client: AsyncSandboxClient[Any] = AsyncSandboxClient(connection_config=connection, api_client=api_client,
                                                             cleanup=False)
        door = None
        if settings.agent_sandbox_egress_listen:
            host, _, port = settings.agent_sandbox_egress_listen.rpartition(":")
            bounds = DoorLimits(head_seconds=settings.agent_sandbox_egress_head_seconds,
                                per_source=settings.agent_sandbox_egress_pending_per_source,
                                pending=settings.agent_sandbox_egress_pending_connections,
                                connections=settings.agent_sandbox_egress_max_connections)
            door = EgressDoor(host.strip("[]"), int(port), settings.agent_sandbox_egress_url
                              or f"http://{settings.agent_sandbox_egress_listen}", bounds)
        return cls(limits, client, namespace=settings.agent_sandbox_namespace,
                   pools=parse_pools(settings.agent_sandbox_pools), ready_timeout=settings.agent_sandbox_ready_timeout,
                   python=settings.agent_sandbox_python, share=share, egress=egress, door=door,
                   runtime_root=settings.agent_sandbox_runtime_root,
                   shutdown_margin=settings.agent_sandbox_shutdown_margin,
                   desktop_pool=settings.agent_sandbox_desktop_pool)

    async def start(self) -> None:
        """Open the pods' egress door (when one is configured)."""
        if self.door is not None:
            try:
                await self.door.start()
            except OSError as error:  # said at start and in every 400 that needs it; calls without a policy run
                self.door_refused = (f"the sandbox pods' egress door could not listen on {self.door.host}:"
                                     f"{self.door.port} ({error.strerror or error})")
                log.warning("sandbox_egress_door_failed", reason=self.door_refused)
                self.door = None

    @property
    def shell_unavailable(self) -> str | None:
        return self.unavailable

    @property
    def model_note(self) -> str:
        """Nothing to warn the model of: a pod runs processes and has its own ``/proc``."""
        return ""

    def refusal(self, job: JobKind, *, memory_limit: str | None = None, network: bool = False,
                skills: bool = False) -> str | None:
        if self.unavailable is not None:
            return self.unavailable
        tier = memory_limit or DEFAULT_TIER
        if tier not in self.pools:
            return (f"no SandboxWarmPool serves memory_limit {tier} on this server (RESPONSES_BRIDGE_AGENT_SANDBOX_"
                    f"POOLS serves {', '.join(sorted(self.pools))})")
        return self.network_refusal() if network else None

    def network_refusal(self) -> str | None:
        """Why no call with a network policy runs here (no egress allowed, or no door for the pods), or None."""
        if self.egress is None:
            return NO_EGRESS
        if self.door is None:
            return self.door_refused
        return None

    @contextlib.asynccontextmanager
    async def call(self, *, tenant: str = "", job: JobKind = "python", read_only: Sequence[tuple[Path, str]] = (),
                   network: NetworkPolicy | None = None, prepare: Prepare | None = None,
                   memory_limit: str | None = None) -> AsyncIterator[SandboxSession]:
        refused = self.refusal(job, memory_limit=memory_limit, network=network is not None)
        if refused is not None:
            metrics.sandbox_run("refused", None, job=job)
            raise SandboxUnavailable(refused)
        pool = self.pools[memory_limit or DEFAULT_TIER]
        async with self._slot(tenant, job, pool), contextlib.AsyncExitStack() as stack:
            binds = [*read_only, *(await stack.enter_async_context(prepare()) if prepare else [])]
            staging = Path(tempfile.mkdtemp(prefix="rb-pod-call-"))
            stack.callback(shutil.rmtree, staging, True)
            pod = await stack.enter_async_context(self._claimed(pool, tenant, network, self.limits.timeout))
            if binds:
                await self._lay_out_read_only(pod.sandbox, pod.stub, binds)
            yield PodSession(pod.sandbox, pod.stub, self.limits, staging, python=self.python,
                             claimed_in=pod.claimed_in, environment=pod.environment, runtime_root=self.runtime_root)

    @contextlib.asynccontextmanager
    async def pod(self, pool: str, *, tenant: str, network: NetworkPolicy | None, seconds: float,
                  origins: OriginGate | None = None) -> AsyncIterator[ClaimedPod]:
        """A Ready pod of ``pool`` for at most ``seconds`` (its claim's shutdown time past that) with its egress
        (``origins``: asked for each origin): a desktop's (desktop_host.py). It takes none of the code slots: the
        desktops' own pool bounds how many run (services/agents/computer/desktops.py), the desktop pool's pod
        template what each holds, so a code call never waits behind a desktop. The claim is deleted on the way out,
        whatever way it goes."""
        async with self._claimed(pool, tenant, network, seconds, origins) as claimed:
            yield claimed

    @contextlib.asynccontextmanager
    async def _slot(self, tenant: str, job: JobKind, pool: str) -> AsyncIterator[None]:
        """One of the tenant's sandbox slots (fair-share: slots.py), or :class:`SandboxBusy` saying why not."""
        await take_slot(self.slots, tenant, self.limits, job)
        try:
            shown = {"responses_bridge.sandbox.backend": "agent-sandbox", "responses_bridge.sandbox.pool": pool}
            with tracing.span("sandbox run", shown), timing.span("sandbox run", "sandbox", shown):
                yield
        finally:
            metrics.SANDBOX_LIVE.dec()
            self.slots.release(tenant)

    @contextlib.asynccontextmanager
    async def _claimed(self, pool: str, tenant: str, network: NetworkPolicy | None, seconds: float,
                       origins: OriginGate | None = None) -> AsyncIterator[ClaimedPod]:
        async with contextlib.AsyncExitStack() as stack:
            started = time.monotonic()
            sandbox = await self._claim(pool, seconds)
            stack.push_async_callback(self._end, sandbox)
            stub = process_pb2_grpc.ProcessServiceStub(await sandbox.connector.grpc_channel())
            environment = {} if network is None else await self._egress(network, tenant, sandbox, stack, origins)
            yield ClaimedPod(sandbox, stub, environment, time.monotonic() - started)

    def desktop_host(self) -> DesktopHost:
        """Desktops in pods of the desktop pool (``RESPONSES_BRIDGE_AGENT_SANDBOX_DESKTOP_POOL``), one per desktop
        for its life (desktop_host.py)."""
        from .desktop_host import PodDesktopHost

        return PodDesktopHost(self, self.desktop_pool)

    async def _egress(self, network: NetworkPolicy, tenant: str, sandbox: Any, stack: contextlib.AsyncExitStack,
                      origins: OriginGate | None = None) -> dict[str, str]:
        """The call's own egress proxy (its policy, secrets and bounds: sandbox/egress/proxy.py) behind the door, with a
        credential that dies with the call; what the pod's processes get in their environment."""
        assert self.egress is not None and self.door is not None
        proxy = EgressProxy(network, self.egress.rules, self.egress.limits, tenant=tenant, origins=origins)
        await proxy.start()
        stack.push_async_callback(proxy.close)
        token, url = self.door.admit(proxy.socket_path)
        stack.push_async_callback(self.door.revoke, token)  # first, on the way out: no connection outlives it
        environment = proxy.environment()
        environment.update(dict.fromkeys(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"), url))
        for host_path, inside in proxy.binding().files.items():  # the call's authority, for its secrets' hosts
            await sandbox.files.write(transfer.pod_path(POD_CA_BUNDLE, self.runtime_root),
                                      await asyncio.to_thread(Path(host_path).read_bytes), allow_unsafe_paths=True)
            environment.update({name: POD_CA_BUNDLE for name, value in environment.items() if value == inside})
        return environment

    async def _lay_out_read_only(self, sandbox: Any, stub: Any, binds: Sequence[tuple[Path, str]]) -> None:
        """The call's read-only trees (a container's skills at ``/mnt/skills/<name>``, an agent environment's
        packages at ``/mnt/packages``) written into the pod beside ``/mnt/data`` — never collected back — with
        their executables' x bits and their inner links made again (the file API carries neither), and their
        write permissions taken away. The runtime and the code
        share the pod's uid, so the code could give them back: what it then changes there lives only as long as
        its call, and never reaches the skill (the store keeps it; the next call gets a fresh copy)."""
        executables: list[str] = []
        links: list[str] = []
        for tree, target in binds:
            await transfer.upload_tree(sandbox.files, tree, transfer.pod_path(target, self.runtime_root))
            executables += [f"{target}/{path}" for path in await asyncio.to_thread(transfer.executable_files, tree)]
            for path, points_to in await asyncio.to_thread(transfer.inner_links, tree):
                links += [points_to, f"{target}/{path}"]
        for start in range(0, len(links), 2 * EXEC_BATCH):  # nor links: made again (an npm package's .bin)
            ran = await run_process(stub, ["/bin/sh", "-c", MAKE_LINKS, "sh", *links[start:start + 2 * EXEC_BATCH]],
                                    cwd="", env={}, seconds=self.limits.timeout, keep=4096)
            if ran.exit_code != 0:
                raise SandboxUnavailable(f"the call's read-only trees' links could not be made in the pod "
                                         f"({ran.err.text().strip()[:200] or ran.exit_code})")
        for start in range(0, len(executables), EXEC_BATCH):  # the file API writes no mode: a script's x bit again
            ran = await run_process(stub, ["chmod", "a+x", "--", *executables[start:start + EXEC_BATCH]], cwd="",
                                    env={}, seconds=self.limits.timeout, keep=4096)
            if ran.exit_code != 0:
                raise SandboxUnavailable(f"the call's read-only trees' scripts could not be made executable in the "
                                         f"pod ({ran.err.text().strip()[:200] or ran.exit_code})")
        # each tree and the directory holding them (/mnt/skills: no new entry there either), never /mnt itself
        roots = sorted({target if str(Path(target).parent) in ("/", "/mnt") else str(Path(target).parent)
                        for _, target in binds})
        ran = await run_process(stub, ["chmod", "-R", "a-w", "--", *roots], cwd="", env={},
                                seconds=self.limits.timeout, keep=4096)
        if ran.exit_code != 0:
            raise SandboxUnavailable(f"the call's read-only trees could not be made read-only in the pod "
                                     f"({ran.err.text().strip()[:200] or ran.exit_code})")

    async def _claim(self, pool: str, seconds: float) -> Any:
        """A Ready pod of ``pool`` for ``seconds``; raises :class:`SandboxUnavailable` naming why not (the claim
        rolled back)."""
        started = time.monotonic()
        try:
            sandbox = await self.client.create_sandbox(
                pool, namespace=self.namespace, sandbox_ready_timeout=max(1, round(self.ready_timeout)),
                shutdown_after_seconds=int(seconds + self.ready_timeout) + self.shutdown_margin,
                labels={"app.kubernetes.io/managed-by": "responses-bridge"})
        except TimeoutError:
            metrics.sandbox_claim(pool, "not_ready")
            raise SandboxUnavailable(
                f"no sandbox of the warm pool {pool} became ready within {self.ready_timeout:g} s (does the pool "
                "have ready pods? `responses-bridge doctor` checks it)") from None
        except SandboxWarmPoolNotFoundError:
            metrics.sandbox_claim(pool, "pool_missing")
            raise SandboxUnavailable(f"the SandboxWarmPool {pool} does not exist in namespace "
                                     f"{self.namespace}") from None
        except ApiException as error:
            metrics.sandbox_claim(pool, "refused")
            raise SandboxUnavailable(f"the Kubernetes API refused the SandboxClaim ({error.status} "
                                     f"{error.reason})") from None
        except (SandboxError, aiohttp.ClientError, OSError, ValueError) as error:  # the client's, a connection
            metrics.sandbox_claim(pool, "failed")
            log.warning("sandbox_claim_failed", pool=pool, error=str(error)[:300])
            raise SandboxUnavailable(f"no sandbox could be claimed from the warm pool {pool} "
                                     f"({type(error).__name__})") from None
        metrics.sandbox_claim(pool, "ready", time.monotonic() - started)
        return sandbox

    async def _end(self, sandbox: Any) -> None:
        """Delete the call's claim (its pod and files with it); a failure is logged by the client, and the claim's
        shutdown time is the backstop."""
        await self.client.delete_sandbox(sandbox.claim_name, namespace=self.namespace)  # logs its own failure

    async def run(self, code: str, *, tenant: str = "") -> SandboxResult:
        try:
            async with self.call(tenant=tenant) as call:
                return await call.run(code)
        except SandboxBusy as busy:
            return busy.result

    async def close(self) -> None:
        """Close the door, the client and the Kubernetes API connection given to it."""
        if self.door is not None:
            await self.door.close()
        await self.client.close()
        injected = self.client.k8s_helper.injected_api_client
        if injected is not None:
            await injected.close()
