"""The shared pools' settings that are not the sandbox's: the memory budget, the sidecar's own upstream calls and
the programs of programmatic tool calling. A group of settings.py's :class:`Settings` (which sets the sources and
the ``RESPONSES_BRIDGE_`` prefix), in a module of its own so settings.py stays within the house's module size;
each pool admits tenants by the one fair-share rule (fairness/share.py, stated in docs/operations.md).
"""

from __future__ import annotations

import resource

from pydantic import Field
from pydantic_settings import BaseSettings

from ..fairness.tenure import DEFAULT_QUANTUM

STREAM_MEMORY_BYTES = 64 * 1024
"""What one open stream is counted at when the upstream pool is sized from the memory budget: a little above what
one costs ``serve`` on the HTTP door (about 50 KiB of resident memory with 600 or 5,000 open: its client's and its
upstream call's connections and its run; about 17 KiB through Envoy; scripts/bench streams). The budget is half
the process's memory, so the other half is left for everything else."""
STREAM_DESCRIPTORS = 2
"""Descriptors one stream of the HTTP door holds: its client's connection and its upstream call's."""
STREAM_DESCRIPTOR_SHARE = 2
"""The part of the descriptor limit the streams may take (1/2): the rest is the store's, the listeners', the
logs' and the code sandbox's (its egress door and proxies size their caps from the same limit)."""
STREAMS_FLOOR = 256
"""Never fewer upstream places than this, whatever the limits say (the fixed default before it was derived)."""


def stream_capacity(memory_budget: int) -> int:
    """How many streams one process holds: its descriptors (the soft ``RLIMIT_NOFILE``, which ``serve`` has
    raised to the hard one) and its ``memory_budget`` bytes, each divided by what one stream costs, the smaller;
    at least :data:`STREAMS_FLOOR`. The default of ``upstream_max_connections``."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    by_descriptors = (1 << 20 if soft == resource.RLIM_INFINITY else soft) // STREAM_DESCRIPTOR_SHARE \
        // STREAM_DESCRIPTORS
    by_memory = memory_budget // STREAM_MEMORY_BYTES if memory_budget else by_descriptors
    return max(STREAMS_FLOOR, min(by_descriptors, by_memory))


class PoolSettings(BaseSettings):
    """How large the memory budget, the upstream-call and the program pools are, and what one tenant or response
    may hold of them."""

    memory_budget_bytes: int | None = Field(default=None, ge=0, description=(
        "memory the requests in flight of the sidecar may hold together, estimated as 30 times each body's bytes "
        "(what a request costs parsed, translated and stored, at most); past it a tenant under its fair share takes "
        "room back from the one most above its own (docs/operations.md), others wait up to 2 s in a bounded "
        "queue, then get 503 `server_overloaded` with Retry-After; WebSocket turns count from when they are "
        "queued. Unset: half "
        "the container's memory limit (else the machine's); with several workers each takes its share; 0: no "
        "budget"))
    memory_budget_share: float = Field(default=0.5, gt=0, le=1, description=(
        "the part of the memory budget one tenant's requests in flight may hold together when it is alone (with "
        "`auth: none`, one caller's, told apart by its Authorization key; callers sending none share one); beside "
        "others an equal part, by the fair-share rule (docs/operations.md), so several tenants never take it all; "
        "past it that tenant's new requests wait up to 2 s, then get 503 `memory_share_exceeded` with Retry-After "
        "while the others are served; 1: no share alone, an equal part beside others"))
    memory_watch_interval: float = Field(default=1.0, ge=0, description=(
        "seconds between readings of the process's real memory (cgroup v2 `memory.current` with one worker in a "
        "cgroup with a limit, else its RSS) by the memory backstop: past `memory_high_watermark_bytes` new "
        "requests get 503 `server_overloaded` and the largest request held is ended (503 / `response.failed`, "
        "`preempted_for_fairness`), the next once what it held shows up as returned (at most 5 readings later), "
        "never one charged under 64 KiB, until it is under `memory_low_watermark_bytes`; 0: off"))
    memory_high_watermark_bytes: int = Field(default=0, ge=0, description=(
        "the real memory past which the memory backstop acts (see `memory_watch_interval`); 0: the process's use "
        "at start plus 64 MiB plus its memory budget"))
    memory_low_watermark_bytes: int = Field(default=0, ge=0, description=(
        "the real memory under which the memory backstop admits new requests again; 0: the process's use at "
        "start plus 64 MiB plus three quarters of its memory budget"))
    upstream_max_connections: int = Field(default=0, ge=0, description=(
        "the sidecar's own upstream model calls open at once in one process, every tenant's together (each "
        "upstream's connection pool is bounded by it too); a call that finds none within "
        "`upstream_connect_timeout` (or finds 4 calls per connection waiting) fails with 503 "
        "`upstream_connections_exceeded` (a background response's or a session turn's call waits on instead: the run "
        "resumes when one comes). Shared by the fair-share rule: a freed connection goes to the waiting tenant "
        "served least lately, and no call in flight is ended for another (see docs/operations.md). 0: what the "
        "process holds, derived at start from its descriptor limit (half of it, two per stream) and its memory "
        "budget (64 KiB per stream), the smaller, at least 256 "
        "(docs/operations.md, Sizing)"))
    upstream_tenant_connections: int = Field(default=0, ge=0, description=(
        "of `upstream_max_connections`, what one tenant's calls may hold when it is alone; beside other tenants "
        "an equal part, by the fair-share rule, so several tenants never take them all; 0: half where tenants are "
        "told apart "
        "(auth keys or header), all of them with auth none"))
    upstream_response_connections: int = Field(default=8, ge=1, description=(
        "upstream model calls one response may have open at once, its own turn and its subagents' together (the "
        "multi-agent beta): the rest of its subagents wait for its earlier calls to end"))
    fair_share_quantum: float = Field(default=DEFAULT_QUANTUM, ge=0, description=(
        "the unit of time of the shared pools' memory of use (upstream connections, program and sandbox slots, "
        "egress connections, the memory budget): each tenant's attained service in a pool (unit-seconds or "
        "byte-seconds held) decays with a time constant of 4 quanta, and a freed unit goes to the waiting tenant "
        "served least (docs/operations.md) — a tenant idle for a few time constants is a fresh tenant; an egress "
        "connection of a tenant holding none waits up to 2 quanta for a place; 0: service forgotten within about "
        "a second"))
    program_slots: int = Field(default=4, ge=1, description=(
        "programs of programmatic tool calling running at once in one process, each in a worker process of its "
        "own; shared among tenants by the fair-share rule (docs/operations.md), so one tenant's programs never "
        "hold a slot another tenant is waiting for longer than one program's time bound"))
    program_slot_wait: float = Field(default=30.0, gt=0, description=(
        "seconds a program waits for a slot (see `program_slots`); past it the program ends `incomplete` saying "
        "so, and the model reads why"))
    program_lower_priority_after: float = Field(default=0.1, ge=0, description=(
        "CPU seconds a program runs at normal priority; past them its worker process runs at nice 10, so that "
        "short programs (another tenant's among them) get the cores first while long ones share what is left "
        "(slots bound how many programs run, not how the cores are shared). A worker the bridge may not raise "
        "back (no CAP_SYS_NICE) is replaced by a fresh one when its program ends. 0: never lowered"))
    program_memory_bytes: int = Field(default=256 * 1024 * 1024, ge=64 * 1024 * 1024, description=(
        "memory one program may hold: its worker process's writable memory beyond V8's own fixed part (the heap, "
        "at most 128 MiB of it, and every ArrayBuffer and typed array), bounded by the kernel (RLIMIT_DATA), and "
        "reserved in the memory budget for the program's tenant while it runs; past it the allocation fails or "
        "the program ends `incomplete` naming the bound. Unset: this or half what one tenant may hold of the memory "
        "budget (`memory_budget_bytes` × `memory_budget_share`), whichever is less; set above what a tenant may "
        "hold (less the 2 MiB its request holds), the start stops naming both (docs/operations.md has the table)"))
    batch_concurrency: int = Field(default=8, ge=1, description=(
        "lines of batches (`/v1/batches`) one process runs at once when it is idle; they start only on idle "
        "capacity: while fewer interactive requests than `batch_interactive_reserve` are in flight, nobody waits "
        "in a shared pool and every pool has room above its headroom — a line started runs to its end, the next "
        "waits (docs/operations.md, Batches on idle capacity)"))
    batch_interactive_reserve: int = Field(default=1, ge=1, description=(
        "a batch line starts only while fewer interactive requests (either door's, every tenant's) than this are "
        "in flight in the process: 1, none at all; more lets batches go on beside light traffic, at the cost of "
        "the bridge's CPU those requests share with the lines (docs/operations.md)"))
