"""The replicas' Prometheus series, on the HTTP door's ``/metrics`` beside the upstreams' own: per upstream and
replica (``replica`` is its ``host:port``), resolved once when the replica joins its set and removed when it
leaves (a DNS answer that no longer lists it), so the series stay as many as the replicas.

* ``responses_bridge_replica_in_flight`` — this process's calls to it now (the load the picker counts);
* ``responses_bridge_replica_picked_total`` — calls sent to it;
* ``responses_bridge_replica_prompt_tokens_total`` / ``…_cached_tokens_total`` — of answers whose usage said,
  the prompt tokens and those the backend said it had cached (``prompt_tokens_details.cached_tokens``): their
  ratio is the cache hit rate the bridge observed;
* ``responses_bridge_replica_up`` — 1 in, 0 taken out;
* ``responses_bridge_replica_failures_total`` — calls that failed there, by kind (``connect_failed``, ``failed``).

With ``serve --workers`` every worker counts its own calls and ``/metrics`` adds them up (in flight: the live
workers' sum; up: their minimum, 0 when any worker has it out).
"""

from __future__ import annotations

import contextlib
from typing import Any

from prometheus_client import Counter, Gauge

IN_FLIGHT = Gauge("responses_bridge_replica_in_flight", "Calls to an upstream's replica in flight now, this process's",
                  ["upstream", "replica"], multiprocess_mode="livesum")
PICKED = Counter("responses_bridge_replica_picked_total", "Calls sent to an upstream's replica",
                 ["upstream", "replica"])
PROMPT_TOKENS = Counter("responses_bridge_replica_prompt_tokens_total",
                        "Prompt tokens of a replica's answers that reported usage", ["upstream", "replica"])
CACHED_TOKENS = Counter("responses_bridge_replica_cached_tokens_total",
                        "Of those, the tokens the replica said it had cached (prompt_tokens_details.cached_tokens)",
                        ["upstream", "replica"])
UP = Gauge("responses_bridge_replica_up", "1: the replica is in the picking; 0: taken out after a failure",
           ["upstream", "replica"], multiprocess_mode="livemin")
FAILURES = Counter("responses_bridge_replica_failures_total", "Calls to a replica that failed, by kind",
                   ["upstream", "replica", "kind"])
_ALL: tuple[Any, ...] = (IN_FLIGHT, PICKED, PROMPT_TOKENS, CACHED_TOKENS, UP)


class Series:
    """One replica's children, resolved once."""

    __slots__ = ("_labels", "cached", "in_flight", "picked", "prompt", "up")

    def __init__(self, upstream: str, replica: str) -> None:
        self._labels = (upstream, replica)
        self.in_flight = IN_FLIGHT.labels(upstream, replica)
        self.picked = PICKED.labels(upstream, replica)
        self.prompt = PROMPT_TOKENS.labels(upstream, replica)
        self.cached = CACHED_TOKENS.labels(upstream, replica)
        self.up = UP.labels(upstream, replica)
        self.up.set(1)

    def failed(self, kind: str) -> None:
        FAILURES.labels(*self._labels, kind).inc()

    def remove(self) -> None:
        """The replica left its set: its series go with it."""
        for metric in _ALL:
            with contextlib.suppress(KeyError):
                metric.remove(*self._labels)
        for kind in ("connect_failed", "failed"):
            with contextlib.suppress(KeyError):
                FAILURES.remove(*self._labels, kind)
