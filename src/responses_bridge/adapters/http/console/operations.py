"""Operations, for an operator: what each shared pool holds and who waits for it, by tenant; the memory budget
beside the process's real memory; desktops live; background runs and their owners; the upstreams and each one's
replicas (replicas/: in flight, picked, the cache hit rate the bridge observed, in or taken out); the keys.

Everything here is read from the runtime's live objects as they are this instant (the pools' own per-tenant
counts, fairness/share.py), never kept: the page is a snapshot, reloaded to see it move. Keys are listed by id and
tenant only (store/keys.py keeps no key, only a salted hash).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from .... import replicas
from ....observability import metrics
from ....protocol.errors import APIError
from ....redact import mask_text
from ....runtime import Runtime
from ....services.tenancy.memory_watch import default_source
from ....store.base import ApiKeyStore
from .logs import when


@dataclass(slots=True)
class PoolView:
    name: str
    capacity: str
    held: str
    waiting: int
    tenants: list[tuple[str, str, int]]  # tenant, held, waiting
    bytes: bool = False


@dataclass(slots=True)
class ReplicaView:
    upstream: str
    replica: str  # host:port
    url: str
    state: str  # "in", or "taken out: why (probed again in N s)"
    in_flight: int
    picked: int
    hit_rate: str  # of the prompt tokens of answers that reported usage, those cached; "no usage reported"
    reported: str  # what its /metrics say (running, waiting, KV cache), or "no metrics"


@dataclass(slots=True)
class Snapshot:
    pools: list[PoolView] = field(default_factory=list)
    memory: list[tuple[str, str]] = field(default_factory=list)
    desktops: list[tuple[str, str]] = field(default_factory=list)
    runs: list[tuple[str, str]] = field(default_factory=list)  # response id, tenant
    upstreams: list[tuple[str, str, str, str]] = field(default_factory=list)  # name, url, mode, health
    replicas: list[ReplicaView] = field(default_factory=list)
    keys: list[dict[str, Any]] = field(default_factory=list)
    tenants: list[str] = field(default_factory=list)


def _pools(runtime: Runtime) -> list[tuple[str, Any, bool]]:
    """Every shared pool this process has (name, FairPool, counted in bytes)."""
    found: list[tuple[str, Any, bool]] = [("request memory", runtime.memory.pool, True),
                                          ("upstream connections", runtime.upstream_gate.slots.pool, False)]
    services = runtime.server_tools.services
    programs = getattr(getattr(services, "programs", None), "built", None)  # made by the first program only
    if programs is not None:
        found.append(("program slots", programs.slots.pool, False))
    sandbox = getattr(getattr(getattr(services, "shell", None), "runs", None), "sandbox", None)
    sandbox_slots = getattr(sandbox, "slots", None)
    if sandbox_slots is not None and hasattr(sandbox_slots, "pool"):
        found.append(("sandbox slots", sandbox_slots.pool, False))
    desktop_slots = getattr(runtime.desktops, "slots", None)
    if desktop_slots is not None and hasattr(desktop_slots, "pool"):
        found.append(("desktops", desktop_slots.pool, False))
    return found


def pool_view(name: str, pool: Any, in_bytes: bool) -> PoolView:
    tenants = sorted(((tenant, state.holds, state.waiting) for tenant, state in pool.tenants.items()
                      if state.holds or state.waiting), key=lambda row: (-row[1], row[0]))
    size = _bytes if in_bytes else str
    return PoolView(name, size(pool.capacity) if pool.capacity else "unbounded", size(pool.held), pool.waiting,
                    [(tenant, size(held), waiting) for tenant, held, waiting in tenants], in_bytes)


async def snapshot(runtime: Runtime) -> Snapshot:
    shown = Snapshot(pools=[pool_view(name, pool, in_bytes) for name, pool, in_bytes in _pools(runtime)])
    budget = runtime.memory
    real = default_source(runtime.settings.worker_count())()
    shown.memory = [("budget", _bytes(budget.total) if budget.total else "unbounded"),
                    ("held by requests in flight", _bytes(budget.held)),
                    ("real memory of the process", _bytes(real) if real else "unknown"),
                    ("backstop high watermark", _bytes(runtime.memory_watch.high) if runtime.memory_watch.high
                     else "off"),
                    ("refusing new work", "yes" if budget.refusing else "no")]
    running = getattr(runtime.desktops, "running", None)  # the sessions' desktop pool (by tenant: its pool above)
    shown.desktops = [("running", str(running()) if callable(running) else "none here")]
    unavailable = getattr(runtime.desktops, "unavailable", None)
    why = unavailable() if callable(unavailable) else None
    if why:
        shown.desktops.append(("why none can run", why))
    shown.runs = sorted((run_id, str(run.tenant)) for run_id, run in runtime.background.runs.items())
    health = upstream_health()
    for spec in runtime.router.upstreams.values():  # a URL's password masked (redact.py)
        shown.upstreams.append((spec.name, mask_text(spec.url), runtime.probed_modes.get(spec.name, str(spec.mode)),
                                health.get(spec.name, "no call yet")))
    shown.replicas = replica_views()
    if runtime.api_keys is not None:
        now = int(time.time())
        for key in await runtime.api_keys.list_keys():
            shown.keys.append({"id": key.id, "tenant": key.tenant, "operator": key.operator,
                               "created": when(key.created_at),
                               "expires": when(key.expires_at) if key.expires_at else "never",
                               "revoked": when(key.revoked_at) if key.revoked_at else "",
                               "usable": key.usable(now)})
    shown.tenants = await known_tenants(runtime)
    return shown


def replica_views() -> list[ReplicaView]:
    """Every replica of every replicated upstream of this process, as the picker sees it now."""
    views: list[ReplicaView] = []
    for replica_set in replicas.replica_sets():
        now = replica_set.clock()
        for replica in replica_set.replicas:
            state = "in" if not replica.down else (
                f"taken out: {replica.last_failure} (probed again in {max(0.0, replica.retry_at - now):.0f} s)")
            rate = replica.cache_hit_rate()
            said = (("running", replica.scraped_running), ("waiting", replica.scraped_waiting))
            reported = [f"{label} {value:g}" for label, value in said if value is not None]
            if replica.kv_usage is not None:
                reported.append(f"KV cache {100 * replica.kv_usage:.0f}%")
            views.append(ReplicaView(replica_set.name, replica.key, mask_text(replica.url), state, replica.in_flight,
                                     replica.picked, f"{100 * rate:.0f}%" if rate is not None else "no usage reported",
                                     ", ".join(reported) or "no metrics"))
    return views


def upstream_health() -> dict[str, str]:
    """Each upstream's calls as this process's metrics count them (observability/metrics.py): how many were
    answered, their mean time to response headers, and the failures by kind (unreachable, timed out, cut, 5xx)."""
    calls: dict[str, list[float]] = {}
    failures: dict[str, dict[str, float]] = {}
    for family in metrics.UPSTREAM_SECONDS.collect():
        for sample in family.samples:
            name = sample.labels.get("upstream", "")
            if sample.name.endswith("_count"):
                calls.setdefault(name, [0.0, 0.0])[0] += sample.value
            elif sample.name.endswith("_sum"):
                calls.setdefault(name, [0.0, 0.0])[1] += sample.value
    for family in metrics.UPSTREAM_ERRORS.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.value:
                kinds = failures.setdefault(sample.labels.get("upstream", ""), {})
                kind = sample.labels.get("kind", "")
                kinds[kind] = kinds.get(kind, 0.0) + sample.value
    said: dict[str, str] = {}
    for name in {*calls, *failures}:
        answered, seconds = calls.get(name, [0.0, 0.0])
        line = f"{answered:.0f} answered" + (f", {1000 * seconds / answered:.0f} ms to headers on average"
                                              if answered else "")
        failed = failures.get(name)
        said[name] = line + (", failed: " + ", ".join(f"{count:.0f} {kind}" for kind, count in sorted(failed.items()))
                             if failed else ", none failed")
    return said


async def check_revocable(keys: ApiKeyStore, key_id: str, signed_in: str | None) -> None:
    """Refuses (409) revoking the key the viewer is signed in with (the console would sign them out mid-page, and
    a hand-written post could do it unseen), and the last usable operator's key (nothing would open Operations
    again but ``responses-bridge keys`` on the database). ``keys revoke`` on the command line still can."""
    if signed_in is not None and key_id == signed_in:
        raise APIError(409, "That is the key you are signed in with: the console does not revoke it. Revoke it "
                       "from another operator's sign-in, or with `responses-bridge keys revoke`.",
                       code="key_signed_in")
    now = int(time.time())
    listed = await keys.list_keys()
    target = next((key for key in listed if key.id == key_id), None)
    if target is None or not (target.operator and target.usable(now)):
        return
    if not any(key.operator and key.usable(now) and key.id != key_id for key in listed):
        raise APIError(409, "That is the last usable operator's key: revoked, no one could open Operations from the "
                       "console again. Make another with `keys create --operator` first (or revoke it with "
                       "`responses-bridge keys revoke`).", code="last_operator_key")


async def known_tenants(runtime: Runtime) -> list[str]:
    """Every tenant with a stored response or a key (the store's loose index scan; the keys' list)."""
    tenants = set(await runtime.store.response_tenants())
    if runtime.api_keys is not None:
        tenants.update(key.tenant for key in await runtime.api_keys.list_keys())
    return sorted(tenants)


def _bytes(value: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024  # type: ignore[assignment]
    return str(value)
