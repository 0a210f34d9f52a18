"""Prometheus metrics of both doors, served by the HTTP door's ``/metrics`` (the store's own are in
``store/metrics.py``, the dropped-tools counter in ``engine/tools/tools.py``).

Cost rule: nothing here is called once per upstream chunk. A request resolves the label children it needs once
(most are resolved here, at import, for the fixed label values), and records a handful of values when it starts
and ends; the per-chunk path only tests a local flag for the time to the first event. ext_proc messages are
timed one observation each (a message is already a gRPC round trip).

Labels are bounded: ``door`` is ``http`` or ``extproc``; ``route`` is the route's pattern
(``POST /v1/responses/{response_id}``), never the raw path; ``upstream`` is the configured upstream's name (``default``
for the lone ``--upstream``), whichever door or path called it (the sidecar's own calls through Envoy's listener
included), and ``mode`` how it was called (``translate``, ``native``, ``passthrough``); ``model`` is the model the
upstream names. An upstream's series appear with its first call: none stands empty for an upstream never used.
"""

from __future__ import annotations

import os
import weakref
from bisect import bisect_left
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.values import MutexValue

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_MESSAGE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

REQUESTS = Counter("responses_bridge_requests_total", "Requests answered, by door, route and status",
                   ["door", "route", "status"])
REQUEST_SECONDS = Histogram("responses_bridge_request_duration_seconds",
                            "Time from a request's arrival to the end of its answer (a stream's last byte)",
                            ["door", "route"], buckets=_LATENCY_BUCKETS)
FIRST_EVENT_SECONDS = Histogram(
    "responses_bridge_time_to_first_event_seconds",
    "Time from a streamed request's arrival to the first event after the stream's opening ones (the model's first "
    "output)", ["door"], buckets=_LATENCY_BUCKETS)
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
"""``serve --workers``: every worker writes its values into the supervisor's directory, and ``/metrics`` (answered
by whichever worker the scrape reaches) adds them up; gauges say how (``livesum``: the live workers' sum)."""

ACTIVE_STREAMS = Gauge("responses_bridge_active_streams", "Client event streams open now, by door", ["door"],
                       multiprocess_mode="livesum")
UPSTREAM_SECONDS = Histogram("responses_bridge_upstream_latency_seconds",
                             "Time from sending an upstream call to its response headers, by upstream and mode",
                             ["upstream", "mode"], buckets=_LATENCY_BUCKETS)
UPSTREAM_ERRORS = Counter("responses_bridge_upstream_errors_total",
                          "Upstream calls that failed (unreachable, timed out, cut, or a 5xx), by upstream, mode "
                          "and kind", ["upstream", "mode", "kind"])
TOKENS = Counter("responses_bridge_tokens_total", "Tokens of completed responses, by model and direction",
                 ["model", "direction"])
EXTPROC_STREAMS = Counter("responses_bridge_extproc_streams_total", "ext_proc gRPC streams Envoy opened")
EXTPROC_ACTIVE = Gauge("responses_bridge_extproc_streams_active", "ext_proc gRPC streams open now",
                       multiprocess_mode="livesum")
EXTPROC_MESSAGE_SECONDS = Histogram("responses_bridge_extproc_message_seconds",
                                    "Time to handle one ext_proc message and write its replies, by phase",
                                    ["phase"], buckets=_MESSAGE_BUCKETS)
TOOL_CALLS = Counter("responses_bridge_tool_calls_total", "Server-side tool calls run, by tool and outcome",
                     ["tool", "outcome"])
BACKGROUND_ACTIVE = Gauge("responses_bridge_background_queue_depth",
                          "Background responses queued or running in this process", multiprocess_mode="livesum")

def observer(child: Any) -> Callable[[float], None]:
    """``child.observe`` (a histogram's labelled child) for the per-message and per-request paths: the bucket found
    by bisection over its bounds, where prometheus_client's own ``observe`` checks the child's labels and walks the
    bounds one by one in Python (~60 bytecodes an observation; an ext_proc request makes seven). The same counts:
    the first bound at or above the amount, and the sum. A client without these attributes keeps its own."""
    try:
        bounds, buckets, total = tuple(child._upper_bounds), child._buckets, child._sum
    except AttributeError:
        return child.observe
    if len(bounds) != len(buckets):
        return child.observe

    def observe(amount: float) -> None:
        total.inc(amount)
        buckets[bisect_left(bounds, amount)].inc(1)

    return observe


def loop_observer(child: Any) -> Callable[[float], None]:
    """:func:`observer` for a histogram only the event loop's thread observes (the ext_proc door's per-message
    times, observed once a streamed chunk; every request's duration, its upstream's latency, its store calls'
    times): its counts added in place, without the mutex prometheus_client's value takes against other writing
    threads (there are none; the exposition reads each float whole) and without a method call per count. Its
    values of another kind (multiprocess mode) keep :func:`observer`."""
    try:
        bounds, buckets, total = tuple(child._upper_bounds), child._buckets, child._sum
    except AttributeError:
        return child.observe
    if len(bounds) != len(buckets) or any(type(value) is not MutexValue for value in (total, *buckets)):
        return observer(child)

    def observe(amount: float) -> None:
        total._value += amount
        buckets[bisect_left(bounds, amount)]._value += 1

    return observe


def adder(metric: Any) -> Callable[[float], None]:
    """``metric.inc`` of an unlabelled counter or gauge (or a labelled one's child) without the labels check each
    call makes (a gauge's ``dec`` is adding a negative amount): the per-request counts. Callers add what a counter
    may take (never a negative amount)."""
    value = getattr(metric, "_value", None)
    return value.inc if value is not None and hasattr(value, "inc") else metric.inc


def loop_adder(metric: Any) -> Callable[[float], None]:
    """:func:`adder` for a counter or gauge only the event loop's thread adds to (a request's counts: requests
    answered, tokens, ext_proc streams): added in place, without the value's mutex (as :func:`loop_observer`);
    its value of another kind (multiprocess mode) keeps :func:`adder`."""
    value = getattr(metric, "_value", None)
    if type(value) is not MutexValue:
        return adder(metric)

    def add(amount: float) -> None:
        value._value += amount

    return add


def setter(gauge: Any) -> Callable[[float], None]:
    """``gauge.set`` without its labels check, for a gauge set per request (the memory budget held): a
    ``MutexValue`` set by one assignment, which needs no mutex from whichever thread it is made."""
    value = getattr(gauge, "_value", None)
    if type(value) is MutexValue:
        def assign(amount: float) -> None:
            value._value = amount

        return assign
    return value.set if value is not None and hasattr(value, "set") else gauge.set


PHASES = ("request_headers", "request_body", "request_trailers", "response_headers", "response_body",
          "response_trailers")
EXTPROC_MESSAGE = {phase: EXTPROC_MESSAGE_SECONDS.labels(phase) for phase in PHASES}
"""The per-phase children, resolved once: timing a message costs one dict lookup and one observation."""
EXTPROC_OTHER = EXTPROC_MESSAGE_SECONDS.labels("other")
EXTPROC_MESSAGE_OBSERVE = {phase: loop_observer(child) for phase, child in EXTPROC_MESSAGE.items()}
EXTPROC_OTHER_OBSERVE = loop_observer(EXTPROC_OTHER)

FIRST_EVENT = {door: loop_observer(FIRST_EVENT_SECONDS.labels(door)) for door in ("http", "extproc")}
"""A streamed request's time to its first event, observed by the door (on the event loop's thread)."""
ACTIVE = {door: loop_adder(ACTIVE_STREAMS.labels(door)) for door in ("http", "extproc")}
"""The streams open by door: +1 as one opens, -1 as it ends."""


_REQUEST_CHILDREN: dict[tuple[str, str, int], tuple[Callable[[float], None], Callable[[float], None]]] = {}
"""Each (door, route, status)'s two children, looked up once: ``labels()`` takes a lock and builds a key every
call. Bounded as the series are: routes are the route table's templates and statuses a handful."""


def record_request(door: str, route: str, status: int, seconds: float) -> None:
    """Once per request, at its end."""
    children = _REQUEST_CHILDREN.get((door, route, status))
    if children is None:
        children = _REQUEST_CHILDREN[door, route, status] = (
            loop_adder(REQUESTS.labels(door, route, str(status))),
            loop_observer(REQUEST_SECONDS.labels(door, route)))
    children[0](1)
    children[1](seconds)


class Upstream:
    """One upstream's children for one mode, resolved at its first call (a resolved child is a series, shown
    even while empty: resolving them up front showed upstreams never called)."""

    __slots__ = ("_latency", "mode", "name")

    def __init__(self, name: str, mode: str) -> None:
        self.name = name
        self.mode = mode
        self._latency: Any = None

    def answered(self, seconds: float) -> None:
        """An upstream call's response headers came ``seconds`` after it was sent."""
        if self._latency is None:
            self._latency = loop_observer(UPSTREAM_SECONDS.labels(self.name, self.mode))
        self._latency(seconds)

    def failed(self, kind: str) -> None:
        UPSTREAM_ERRORS.labels(self.name, self.mode, kind).inc()


_UPSTREAMS: dict[tuple[str, str], Upstream] = {}


def upstream(name: str, mode: str) -> Upstream:
    """The children of upstream ``name`` called in ``mode`` (one object per pair, made at its first use)."""
    found = _UPSTREAMS.get((name, mode))
    if found is None:
        found = _UPSTREAMS[(name, mode)] = Upstream(name, mode)
    return found


_TOKEN_CHILDREN: dict[str, tuple[Callable[[float], None], Callable[[float], None]]] = {}
"""Each model's two token children, looked up once per model rather than twice per response (``labels()`` takes a
lock and builds a key); the models an upstream names are few, and past :data:`_TOKEN_CHILDREN_KEPT` of them the
rest are looked up each time."""
_TOKEN_CHILDREN_KEPT = 256


def record_usage(response: Mapping[str, Any]) -> None:
    """The token counts of a finished response (its ``usage``), under the model the upstream named."""
    usage = response.get("usage")
    if not isinstance(usage, Mapping):
        return
    model = str(response.get("model") or "unknown")
    children = _TOKEN_CHILDREN.get(model)
    if children is None:
        children = (loop_adder(TOKENS.labels(model, "input")), loop_adder(TOKENS.labels(model, "output")))
        if len(_TOKEN_CHILDREN) < _TOKEN_CHILDREN_KEPT:
            _TOKEN_CHILDREN[model] = children
    input_tokens, output_tokens = usage.get("input_tokens"), usage.get("output_tokens")
    if isinstance(input_tokens, int) and input_tokens > 0:
        children[0](input_tokens)
    if isinstance(output_tokens, int) and output_tokens > 0:
        children[1](output_tokens)


def tool_call(tool: str, outcome: str) -> None:
    TOOL_CALLS.labels(tool, outcome).inc()


class _Background(Protocol):
    def queue_depth(self) -> int: ...


_BACKGROUND: weakref.WeakSet[_Background] = weakref.WeakSet()


def watch_background(service: _Background) -> None:
    """Report the service's queued or running responses in the gauge while it lives (read when ``/metrics`` is
    scraped, not pushed on every change)."""
    _BACKGROUND.add(service)


_PULLED: list[tuple[Gauge, Callable[[], float]]] = []


def pulled(gauge: Gauge, read: Callable[[], float]) -> None:
    """``gauge`` shows ``read()``: read when ``/metrics`` is scraped in one process; with several workers (whose
    values only the files carry) written by :func:`refresh_pulled` every second instead."""
    _PULLED.append((gauge, read))
    if not MULTIPROCESS:
        gauge.set_function(read)


def refresh_pulled() -> None:
    for gauge, read in _PULLED:
        gauge.set(read())


def scrape() -> bytes:
    """The Prometheus text of this process, or of every worker (``MULTIPROCESS``)."""
    from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

    if not MULTIPROCESS:
        return generate_latest(REGISTRY)
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


pulled(BACKGROUND_ACTIVE, lambda: float(sum(service.queue_depth() for service in list(_BACKGROUND))))

# Per-tenant limits (services/tenancy/limits.py): refusals, by limit (``concurrency``: 429, ``request_bytes``: 413). No
# tenant label: tenant names are unbounded and not the metrics' business.
LIMITED = Counter("responses_bridge_tenant_limited_total",
                  "Requests refused by a per-tenant limit (or the body size ceiling), by limit", ["limit"])
# The process's memory budget for requests in flight (services/tenancy/memory_budget.py): 503s, and what is held.
MEMORY_REFUSED = Counter("responses_bridge_memory_budget_refused_total",
                         "Requests answered 503 because the process held its memory budget of requests in flight")
MEMORY_HELD = Gauge("responses_bridge_memory_budget_held_bytes",
                    "Bytes of the memory budget the requests in flight hold (their bodies' estimated cost)",
                    multiprocess_mode="livesum")
MEMORY_PREEMPTED = Counter("responses_bridge_memory_budget_preempted_total",
                           "Requests ended to take their memory back, by reason (memory_high_watermark: the memory "
                           "backstop; the fair-share rule ends none)", ["reason"])
MEMORY_REAL = Gauge("responses_bridge_memory_real_bytes",
                    "The process's real memory as the memory backstop last read it (cgroup memory.current, else RSS)",
                    multiprocess_mode="liveall")
MEMORY_BACKSTOP = Gauge("responses_bridge_memory_backstop_active",
                        "1 while real memory is past the backstop's high watermark (new work refused, the largest "
                        "requests ended until it is under the low watermark)", multiprocess_mode="livemax")
POOL_PREEMPTED = Counter("responses_bridge_fair_share_preempted_total",
                         "Work ended to give a shared pool's room to a tenant under its fair share, by pool", ["pool"])
# Request bodies that arrived too slowly (services/tenancy/body_pace.py): answered 408 and their connections closed.
BODY_TIMEOUTS = Counter("responses_bridge_request_body_timeouts_total",
                        "Requests answered 408 because their body did not arrive within its deadline "
                        "(request_body_timeout, request_body_min_rate)")


SANDBOX_RUNS = Counter("responses_bridge_sandbox_runs_total",
                       "Sandbox runs, by job (python: the code interpreter, shell: the hosted shell) and outcome (ok, "
                       "error, timeout, memory, output_capped, disk, refused)", ["job", "outcome"])
SANDBOX_SECONDS = Histogram("responses_bridge_sandbox_duration_seconds",
                            "Time of one sandbox run, from its start to its last process's end, by job",
                            ["job"], buckets=_LATENCY_BUCKETS)
SANDBOX_LIVE = Gauge("responses_bridge_sandboxes_live", "Code interpreter sandboxes running now",
                     multiprocess_mode="livesum")
# Programs (programmatic tool calling, run/programs/host.py): those holding a slot now and those waiting for one —
# whether the slots (RESPONSES_BRIDGE_PROGRAM_SLOTS) are all busy, and how long the queue behind them is.
PROGRAMS_LIVE = Gauge("responses_bridge_programs_live", "Programs holding a program slot now (their worker running)",
                      multiprocess_mode="livesum")
PROGRAMS_WAITING = Gauge("responses_bridge_programs_waiting", "Programs waiting for a program slot now",
                         multiprocess_mode="livesum")
# The sessions' desktops (services/agents/computer/desktops.py): those holding one of the process's desktop units
# (running, starting or stopping) and the computer calls waiting for one — whether RESPONSES_BRIDGE_DESKTOPS_MAX is
# reached, and how long the fair queue behind it is.
DESKTOPS_LIVE = Gauge("responses_bridge_desktops_live",
                      "Sessions' desktops holding a desktop unit now (running, starting or stopping)",
                      multiprocess_mode="livesum")
DESKTOPS_WAITING = Gauge("responses_bridge_desktops_waiting", "Computer calls waiting for a desktop unit now",
                         multiprocess_mode="livesum")
# Idle desktops (no turn of their session running) stopped for a session that needed one at its holder's or the
# process's bound (services/agents/computer/desktops.py): how often idle sessions lose their desktops to new ones.
DESKTOPS_YIELDED = Counter("responses_bridge_desktops_yielded_total",
                           "Idle sessions' desktops stopped for another session's computer call at a bound")


def sandbox_run(outcome: str, seconds: float | None, *, job: str = "python") -> None:
    """One sandbox run ended (``seconds`` None: it never started, a refusal); ``job``: ``python`` or ``shell``."""
    SANDBOX_RUNS.labels(job, outcome).inc()
    if seconds is not None:
        SANDBOX_SECONDS.labels(job).observe(seconds)


# The egress proxy of sandbox calls under an allowlist policy (sandbox/egress/proxy.py): each connection by the
# allowlist entry that let it through (``(none)`` when refused before one matched) and its outcome, and the bytes it
# carried. Entries come from requests, so at most EGRESS_DOMAIN_LABELS distinct ones are labelled; later ones are
# ``(other)``.
EGRESS_CONNECTIONS = Counter("responses_bridge_egress_connections_total",
                             "Sandbox egress proxy connections, by allowlist entry and outcome (ok, denied_domain, "
                             "denied_address, bad_request, connection_limit, tenant_connection_limit, "
                             "bridge_connection_limit, bytes_limit, timeout, unresolved, connect_failed, "
                             "unscannable_answer, expectation_failed, reset, call_ended)", ["domain", "outcome"])
EGRESS_BYTES = Counter("responses_bridge_egress_bytes_total",
                       "Bytes through the sandbox egress proxy, by allowlist entry and direction (sent, received)",
                       ["domain", "direction"])
EGRESS_OPEN = Gauge("responses_bridge_egress_connections_open", "Sandbox egress proxy connections served now, every "
                    "call's of this process together (what the bridge-wide cap and each tenant's share count)",
                    multiprocess_mode="livesum")
EGRESS_MASKED_BYTES = Counter("responses_bridge_egress_masked_bytes_total",
                              "Bytes of answers the egress proxy scanned for domain secrets to write over")
EGRESS_MASKING_SECONDS = Counter("responses_bridge_egress_masking_seconds_total",
                                 "Seconds spent writing domain secrets over in answers (large reads off the loop)")
EGRESS_DOMAIN_LABELS = 200
_egress_domains: set[str] = set()


def egress_connection(domain: str, outcome: str, sent: int, received: int, *, count: int = 1) -> None:
    """One egress connection ended (``count``: that many, refused alike as they were accepted)."""
    if domain not in _egress_domains:
        if len(_egress_domains) >= EGRESS_DOMAIN_LABELS:
            domain = "(other)"
        else:
            _egress_domains.add(domain)
    EGRESS_CONNECTIONS.labels(domain, outcome).inc(count)
    if sent:
        EGRESS_BYTES.labels(domain, "sent").inc(sent)
    if received:
        EGRESS_BYTES.labels(domain, "received").inc(received)


# The agent-sandbox backend (sandbox/agent_sandbox/): each claim of a pod by pool and outcome (ready, not_ready: its
# deadline passed, pool_missing, refused: the API said no, failed), and how long a ready one took.
SANDBOX_CLAIMS = Counter("responses_bridge_sandbox_claims_total",
                         "SandboxClaims made by the agent-sandbox backend, by warm pool and outcome (ready, not_ready, "
                         "pool_missing, refused, failed)", ["pool", "outcome"])
SANDBOX_CLAIM_SECONDS = Histogram("responses_bridge_sandbox_claim_seconds",
                                  "Time from a SandboxClaim's create to its Ready pod, by warm pool", ["pool"],
                                  buckets=_LATENCY_BUCKETS)


def sandbox_claim(pool: str, outcome: str, seconds: float | None = None) -> None:
    """One claim of a sandbox pod ended its wait (``seconds``: how long a ready one took)."""
    SANDBOX_CLAIMS.labels(pool, outcome).inc()
    if seconds is not None:
        SANDBOX_CLAIM_SECONDS.labels(pool).observe(seconds)
