"""The picking: which of an upstream's replicas serves one model call.

``cache`` (the default), in order:

1. **The chain's replica.** A chain key bound to a replica that is in and not hot for its chains (past the
   threshold *and* :data:`HOLD_MARGIN` calls above the mean): that replica (``affinity.py``).
2. **The warmest prefix.** Else (a chain's first turn, a request without a chain), of the replicas in, not hot and
   not past 1.5 times the mean of recent picks (and :data:`SHARE_SLACK`), the one holding the longest run of the
   request's first blocks (``prefix.py``) — among those picked less than the mean divided by 1.5 when there are
   any (a replica the shared prefix has not reached yet gets its share, then competes as an equal); a tie, or no
   match at all, goes to the least loaded (in flight, then recent picks). The share of recent picks bounds new
   work only: a shared prefix warm on one replica does not draw every new chain there while the set is idle, and
   a chain once placed is never moved for its replica's share, only for its load.
3. **The least loaded,** when every replica is hot.

**Hot** is the threshold affinity yields at, :data:`HOT`: a replica is hot for a call when taking it would put its
load above 1.5 times the mean load of the replicas in — load being the bridge's own calls in flight to it, or the
replica's own ``vllm:num_requests_running`` + ``vllm:num_requests_waiting`` when its ``/metrics`` say more (other
processes' calls, other clients') — or when its ``vllm:kv_cache_usage_perc`` is past :data:`KV_FULL`. A floor of
one call keeps the first call of an idle set from counting as hot. Load, not the share of recent picks: a lone
chain on an idle set is no burden to its replica, and moving it would only throw its cache away; under load, a hot
shared prefix (every session's same instructions and tools) fills its replica's calls past the threshold and the
next calls go to the others, which then hold it too, so the work evens out. Why 1.5: a warm prefix saves a
prefill, which on a long prompt costs about what a queue half again as long as the others' does; past that,
waiting costs more than the prefill saved. Below it, the picking would give up warm caches to even out a spread
that is normal for chains of unequal length. Among equals (the same prefix held, or none), the least loaded wins,
then the one picked least lately (picks counted with a half-life of
:data:`~responses_bridge.replicas.replica.RECENT_HALF_LIFE` seconds), so new chains spread evenly.

A replica that failed is out until its retry time; after it, one call at a time may probe it (a replica in its
probe window counts as in, the first answer brings it back). Every replica out: the one whose retry comes first is
tried anyway, so the call fails as an upstream failure always has (502 naming the upstream), or finds it back.

A chain whose replica is out moves: the call's keys are bound to the replica picked instead, once, and stay there
(the old replica back later does not take them back: its cache of them is gone or stale).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Sequence

from .affinity import ChainMap
from .persist import ChainPersistence
from .prefix import block_keys
from .replica import CONNECT_FAILED, FAILED, OK, Clock, Picked, Replica

HOT = 1.5
"""A replica past this many times the mean (recent picks, or load) is hot: affinity yields to it."""
SHARE_SLACK = 2.0
"""Recent picks a replica may have beyond :data:`HOT` times the mean before new work avoids it: a few requests
in a row with the same warm prefix stay together (at small counts any one pick is far above the mean)."""
HOLD_MARGIN = 8.0
"""Calls a chain's replica must have beyond the mean, besides being past :data:`HOT` times it, before the chain
moves: a move prefills the chain's whole history again on the new replica (thousands of tokens, a second or more,
and every call queued there waits behind it), while a turn on its own replica prefills only its new input (a few
hundred tokens) — so a queue a few calls longer costs less than the move. At small counts 1.5 times the mean is
one or two calls, a spread that chains of unequal turns make all the time: measured with ``scripts/bench routing``
(32 sessions on 4 replicas), the threshold alone moved 19-27 chains a run, each a whole-history miss, and doubled
the p95 time to first token (1.2-1.7 s against the oracle's 0.4-0.5 s); with the margin none moved, the hit rate
was the oracle's and no replica took over 1.25 times the mean share. Like SGLang's router's absolute threshold
beside its relative one (64 requests and 1.5x). Chainless calls (a chain's first turn) keep the threshold alone:
placing them costs no history."""
KV_FULL = 0.95
"""A replica whose reported KV-cache usage is past this is hot whatever its share (it is evicting)."""


class ReplicaSet:
    """The replicas of one upstream, the chains they serve, and the picking. Not thread-safe: used on one event
    loop (each worker process has its own)."""

    def __init__(self, name: str, urls: Sequence[str], *, picking: str = "cache", clock: Clock = time.monotonic,
                 chain_capacity: int | None = None) -> None:
        self.name = name
        self.picking = picking
        self.clock = clock
        self.replicas: list[Replica] = []
        self._by_key: dict[str, Replica] = {}
        self.chains = ChainMap() if chain_capacity is None else ChainMap(chain_capacity)
        self._turn = itertools.count()
        self.persist: ChainPersistence | None = None  # the store's copy of the chain map (persist.py), when set
        self.set_urls(urls)

    # --- membership -------------------------------------------------------------------------------------------
    def set_urls(self, urls: Iterable[str]) -> None:
        """The replicas are now ``urls`` (a DNS answer): kept ones keep their state, new ones start cold, gone
        ones are dropped with their chain keys (their chains move on their next turn)."""
        wanted = [Replica(url) for url in urls]
        kept: list[Replica] = []
        for fresh in wanted:
            old = self._by_key.get(fresh.key)
            kept.append(old if old is not None and old.url == fresh.url else fresh)
        for old in self.replicas:
            if all(old is not replica for replica in kept):
                self.chains.forget_replica(old.key)
                old.leave()
        for replica in kept:
            replica.join(self.name)
        self.replicas = kept
        self._by_key = {replica.key: replica for replica in kept}

    def replica(self, key: str) -> Replica | None:
        return self._by_key.get(key)

    # --- picking ------------------------------------------------------------------------------------------------
    def pick(self, chain: Sequence[str] = (), prompt: bytes | None = None,
             exclude: Iterable[Replica] = ()) -> Picked:
        """One call's replica (see the module's docstring); ``exclude``: replicas not to use (the one whose
        connection was just refused)."""
        now = self.clock()
        chain = tuple(key for key in chain if key)
        excluded = tuple(exclude)
        live = [replica for replica in self.replicas
                if all(replica is not out for out in excluded) and (not replica.down or replica.retry_at <= now)]
        if not live:
            choice = self._last_resort(excluded)
        elif self.picking == "round_robin":
            choice = live[next(self._turn) % len(live)]
        elif self.picking == "least_request":
            choice = min(live, key=lambda replica: (replica.in_flight, replica.recent(now)))
        else:
            choice = self._cached(live, chain, prompt, now)
        if choice.down:  # its probe: others wait for its answer rather than pile onto a replica that may be gone
            choice.retry_at = now + choice.down_for
        choice.count_pick(now)
        return Picked(self, choice, chain)

    def _last_resort(self, excluded: Sequence[Replica]) -> Replica:
        """Every replica out: the one whose retry comes first (one not excluded, where there is one)."""
        pool = [replica for replica in self.replicas if all(replica is not out for out in excluded)] or self.replicas
        return min(pool, key=lambda replica: replica.retry_at)

    def _cached(self, live: list[Replica], chain: tuple[str, ...], prompt: bytes | None, now: float) -> Replica:
        cool = self._cool(live)
        if chain:
            found = self.chains.find(chain)
            if found is not None:
                replica = self._by_key.get(found[1])
                if replica is not None and (replica in cool or self._holds(replica, live)):
                    if prompt:
                        replica.prefix.add(block_keys(prompt))
                    return replica
        candidates = self._starved(self._unshared(cool, now) or cool or live, now)
        keys = block_keys(prompt) if prompt else []
        if keys and len(candidates) > 1:
            choice = max(candidates, key=lambda replica: (replica.prefix.matched(keys), -replica.load(),
                                                          -replica.recent(now)))
        else:
            choice = min(candidates, key=lambda replica: (replica.load(), replica.recent(now)))
        choice.prefix.add(keys)
        return choice

    def _unshared(self, cool: list[Replica], now: float) -> list[Replica]:
        """Of ``cool``, those one more pick would not put above :data:`HOT` times the mean of recent picks: where a
        request without a chain (a new chain's first turn) may go, so that a shared prefix warm on one replica
        does not draw every new chain there while the set is idle (load alone would never call it hot)."""
        if len(cool) < 2:
            return cool
        room = HOT * (sum(replica.recent(now) for replica in cool) + 1) / len(cool) + SHARE_SLACK
        return [replica for replica in cool if replica.recent(now) + 1 <= room]

    def _starved(self, pool: list[Replica], now: float) -> list[Replica]:
        """Of ``pool``, those picked less than the mean of recent picks divided by :data:`HOT`, when there are
        any (else ``pool``): new work goes there first, so that a replica no prefix is warm on yet gets its share
        and, once warm, competes as an equal (without it, the replicas a shared prefix reached first would keep
        every new chain)."""
        if len(pool) < 2:
            return pool
        floor = (sum(replica.recent(now) for replica in pool) + 1) / len(pool) / HOT
        return [replica for replica in pool if replica.recent(now) < floor] or pool

    def _holds(self, replica: Replica, live: list[Replica]) -> bool:
        """A chain's replica past the threshold keeps its chain still, unless it is also :data:`HOLD_MARGIN` calls
        above the mean or evicting (``live``: the replicas in, which it must be one of)."""
        if all(replica is not other for other in live):
            return False
        if replica.kv_usage is not None and replica.kv_usage >= KV_FULL:
            return False
        mean = (sum(other.load() for other in live) + 1) / len(live)
        return replica.load() + 1 - mean <= HOLD_MARGIN

    def _cool(self, live: list[Replica]) -> list[Replica]:
        """The replicas one more call would not make hot (see :data:`HOT`)."""
        room = max(HOT * (sum(replica.load() for replica in live) + 1) / len(live), 1.0)
        return [replica for replica in live
                if replica.load() + 1 <= room and (replica.kv_usage is None or replica.kv_usage < KV_FULL)]

    # --- a call's end -------------------------------------------------------------------------------------------
    def ended(self, picked: Picked, outcome: str, why: str, prompt_tokens: int, cached_tokens: int) -> None:
        replica = picked.replica
        replica.count_end(prompt_tokens if outcome == OK else 0, cached_tokens)
        if outcome == OK:
            if replica.down:
                replica.bring_back()
            if picked.chain:
                self.chains.bind(picked.chain, replica.key)
                if self.persist is not None:
                    self.persist.bind(self.name, picked.chain, replica.key)
        elif outcome in (CONNECT_FAILED, FAILED):
            replica.failed(outcome)
            replica.take_out(self.clock(), why or outcome)

    def moved(self, picked: Picked, replica: Replica, why: str) -> Picked:
        """Envoy's retry carried ``picked``'s call to ``replica`` (the picked one refused it, before any of the call
        reached it): the picked one is taken out, and the call is ``replica``'s from now on — its usage counted
        there, and its chain bound there when it ends well, so the chain moves once and stays."""
        picked.done(CONNECT_FAILED, why=why)
        replica.count_pick(self.clock())
        return Picked(self, replica, picked.chain)

    def bind(self, chain: Iterable[str], replica: Replica) -> None:
        keys = [key for key in chain if key]
        self.chains.bind(keys, replica.key)
        if self.persist is not None:
            self.persist.bind(self.name, keys, replica.key)

    async def recall(self, chain: Sequence[str]) -> None:
        """A chain this process does not know: its binding from the store, when another process made one (a
        resumed run, a turn on another worker), taken into the map before the pick."""
        if self.persist is None or not chain or self.chains.find(chain) is not None:
            return
        found = await self.persist.find(self.name, chain)
        if found is not None and found in self._by_key:
            self.chains.bind(chain, found)
