"""The sidecar's own calls to an upstream with replicas: each call sent to the replica picked for it.

A :class:`ReplicatedClient` stands where an upstream's :class:`AiohttpUpstreamClient` stood (the runtime, the
run, compaction see one client per upstream, as always) and wraps it: for each call it asks the upstream's
:class:`~responses_bridge.replicas.picker.ReplicaSet` for a replica — with the chain keys the driver put in scope
(``run/upstream_scope.py``) and the rendered body as the prompt — and makes the call there: at the replica's URL, or
through Envoy's listener (``upstream_via``) naming it in ``x-gateway-destination-endpoint``. The call's end is
told to the picker: answered (its usage's ``cached_tokens`` counted), refused, or failed.

A connection refused before any byte was sent is retried once on another replica (none of the call was made: a
retry makes nothing twice); the refusing replica is taken out. A failure after the request went out is the run's,
as with one server. Every replica refusing: the 502 ``upstream_unreachable`` of one server, naming the upstream.

Through Envoy a refused connection never reaches this client as one: Envoy answers it itself. So the call names
the picked replica and then the other replicas in (``replicas/address.py``, as the processor names them), and the
route's one retry moves a call that reached no replica to the next; the answer says which replica answered
(``x-responses-bridge-replica``, envoy_config/replica_cluster.py): another than the picked one, and the picked one
is taken out and the call — its chain with it — is the other's. Envoy's own 503 (no
``x-envoy-upstream-service-time``: the replicas it tried refused) is a refused connection of the picked one: taken
out, the call retried once here on another, as a refused connection is without Envoy.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from types import TracebackType
from typing import Any, cast

import aiohttp

from ..config.settings import Settings
from ..config.upstreams import Router
from ..engine.wire import UpstreamRequest
from ..envoy_config.names import REPLICA_ANSWERED_HEADER
from ..protocol.errors import APIError
from ..replicas import Picked, Replica, register
from ..replicas.address import listed
from ..replicas.persist import ChainPersistence, ChainStore
from ..replicas.picker import ReplicaSet
from ..replicas.replica import CONNECT_FAILED, FAILED, OK
from ..replicas.watch import Watch
from ..run.upstream import UpstreamAnswer, UpstreamClient, UpstreamFailure, UpstreamResponse
from ..run.upstream_scope import current_chain
from .upstream_client import AiohttpUpstreamClient

UNREACHABLE = "upstream_unreachable"
ENVOY_UPSTREAM_TIME = "x-envoy-upstream-service-time"
"""Envoy's router adds it to every answer that came from an upstream, never to a reply it made itself."""
_USAGE_TAIL = 4096
"""Bytes of an answer's end kept to read its usage from (a stream's usage chunk is its last but ``[DONE]``)."""
_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_CACHED = re.compile(rb'"cached_tokens"\s*:\s*(\d+)')


SERVER_DOWN = frozenset({502, 503, 504})
"""Statuses that say the server (or the proxy before it) cannot serve, which take a replica out; any other answer,
a 500 included, is the request's own failure (llama.cpp answers 500 to some request shapes): the replica stays."""


def outcome_of(status: int) -> str:
    return FAILED if status in SERVER_DOWN else OK


def usage_of(tail: bytes) -> tuple[int, int]:
    """``(prompt_tokens, cached_tokens)`` of the last usage in an answer's end; zeros where it says none."""
    prompts = _PROMPT.findall(tail)
    if not prompts:
        return 0, 0
    cached = _CACHED.findall(tail)
    return int(prompts[-1]), int(cached[-1]) if cached else 0


class ReplicatedClient:
    """An upstream's client over its replicas (see the module's docstring)."""

    replicated = True  # the driver's one check: put the run's chain in scope for this client's calls

    def __init__(self, inner: AiohttpUpstreamClient, replicas: ReplicaSet, watch: Watch | None = None) -> None:
        self.inner = inner
        self.name = inner.name
        self.replicas = replicas
        self.max_answer_bytes = inner.max_answer_bytes
        self._watch = watch

    async def start(self) -> None:
        await self.inner.start()
        if self._watch is not None:
            self._watch.start()

    def remember_chains(self, store: ChainStore) -> None:
        """Keep the chain map in ``store`` too (the runtime's, once open): other processes find this one's
        chains, and this one theirs (replicas/persist.py)."""
        self.replicas.persist = ChainPersistence(store)
        self.replicas.persist.start()

    async def close(self) -> None:
        if self._watch is not None:
            await self._watch.stop()
        if self.replicas.persist is not None:
            await self.replicas.persist.stop()
        await self.inner.close()

    def chat(self, call: UpstreamRequest, authorization: str | None) -> _ReplicaChat:
        return _ReplicaChat(self, call, authorization)

    async def read_answer(self, response: UpstreamResponse) -> bytes:
        return await self.inner.read_answer(response)

    @asynccontextmanager
    async def post_json(self, path: str, body: bytes, authorization: str | None, *,
                        timeout: float | None = None) -> AsyncIterator[UpstreamResponse]:
        """Compaction's summary, a tokenizer's count: to the chain's replica (its prefix is there), else where the
        body's prefix is."""
        chain = current_chain()
        await self.replicas.recall(chain)
        async with AsyncExitStack() as stack:
            yield await self._entered(stack, lambda picked: self.inner.post_json(
                path, body, authorization, timeout=timeout, replica=picked), self.replicas.pick(chain, body), body)

    @asynccontextmanager
    async def get(self, path: str, authorization: str | None) -> AsyncIterator[UpstreamResponse]:
        async with AsyncExitStack() as stack:
            yield await self._entered(stack, lambda picked: self.inner.get(path, authorization, replica=picked),
                                      self.replicas.pick(), None)

    async def _entered(self, stack: AsyncExitStack,
                       opening: Callable[[Picked], AbstractAsyncContextManager[aiohttp.ClientResponse]],
                       picked: Picked, prompt: bytes | None) -> aiohttp.ClientResponse:
        """A call of ``opening`` on ``picked``'s replica entered on ``stack`` (a refused connection retried once on
        another); its end told to the picker as soon as its status is known."""
        opened, response, picked = await self._opened(opening, picked, prompt)
        stack.push_async_exit(opened)
        picked.done(outcome_of(response.status), why=f"http_{response.status}")
        return cast(aiohttp.ClientResponse, response)

    async def _opened(self, opening: Callable[[Picked], AbstractAsyncContextManager[Any]], picked: Picked,
                      prompt: bytes | None) -> tuple[AbstractAsyncContextManager[Any], Any, Picked]:
        """``opening(picked)`` entered: the opened call, its answer and the replica it landed on. A refused
        connection (or, through Envoy, an answer that reached no replica it named) is retried once on another."""
        for attempt in (0, 1):
            named = await self._name(picked)
            opened = opening(picked)
            try:
                response = await opened.__aenter__()
            except UpstreamFailure as failure:
                picked = self._refused(picked, failure, attempt, prompt)
                continue
            except BaseException:
                picked.done("cancelled")
                raise
            if named:
                landed = self._landed(picked, response.status, response.headers, named)
                if landed is None:
                    await opened.__aexit__(None, None, None)
                    picked = self._refused(picked, self._envoy_refused(), attempt, prompt)
                    continue
                picked = landed
            return opened, response, picked
        raise AssertionError("unreachable: the second refusal is raised by _refused")

    async def _name(self, picked: Picked) -> dict[str, Replica]:
        """Through Envoy: the replicas the call names, by address (``picked``'s first), set as its endpoint
        header's value; straight to the replica: nothing."""
        if not self.inner.via:
            return {}
        named = await listed(picked, self.replicas.replicas)
        picked.listed = ",".join(named)
        return named

    def _landed(self, picked: Picked, status: int, headers: Mapping[str, str],
                named: Mapping[str, Replica]) -> Picked | None:
        """Through Envoy, where the call landed: ``picked``, or the call moved to the replica that answered when
        Envoy's retry took it there (the picked one refused: taken out); None when Envoy answered 503 itself (no
        replica it tried took the call: a refused connection)."""
        if status == 503 and ENVOY_UPSTREAM_TIME not in headers:
            return None
        answered = headers.get(REPLICA_ANSWERED_HEADER, "")
        other = named.get(answered)
        if other is None or other is picked.replica:
            return picked
        return self.replicas.moved(picked, other, f"refused; Envoy retried the call on {answered}")

    def _envoy_refused(self) -> UpstreamFailure:
        return UpstreamFailure(APIError(
            502, "Cannot connect to the upstream model server through Envoy: Envoy answered 503 itself (the replicas "
            "it tried refused the connection)", type="server_error", code=UNREACHABLE))

    def _refused(self, picked: Picked, failure: UpstreamFailure, attempt: int, prompt: bytes | None) -> Picked:
        """A call failed on entry: a refused connection takes its replica out and, the first time, gives the
        replica to try instead; anything else (or a second refusal) is raised, naming the upstream."""
        connect = failure.error.code == UNREACHABLE
        picked.done(CONNECT_FAILED if connect else FAILED, why=failure.error.code or "failed")
        if not connect or attempt or len(self.replicas.replicas) < 2:
            raise self._named(failure) from None
        return self.replicas.pick(picked.chain, prompt, exclude=(picked.replica,))

    def _named(self, failure: UpstreamFailure) -> UpstreamFailure:
        """The failure as the client gets it: one server's message, with the upstream and its replicas named."""
        error = failure.error
        if error.code != UNREACHABLE:
            return failure
        out = sum(1 for replica in self.replicas.replicas if replica.down)
        total = len(self.replicas.replicas)
        return UpstreamFailure(APIError(error.status, f"{error.message} (upstream {self.name!r}: {out} of its {total} "
                                        "replicas taken out)", type=error.type, code=error.code))


class _ReplicaChat:
    """One chat call on a replica: picked on entry (a refused connection retried once on another), its end told
    to the picker on exit with the answer's usage."""

    __slots__ = ("_answer", "_authorization", "_call", "_client", "_inner", "_picked")

    def __init__(self, client: ReplicatedClient, call: UpstreamRequest, authorization: str | None) -> None:
        self._client = client
        self._call = call
        self._authorization = authorization
        self._picked: Picked | None = None
        self._inner: object = None
        self._answer: _ObservedAnswer | None = None

    async def __aenter__(self) -> _ObservedAnswer:
        client, call = self._client, self._call
        chain = current_chain()
        await client.replicas.recall(chain)
        picked = client.replicas.pick(chain, call.body)
        inner, answer, picked = await client._opened(
            lambda chosen: client.inner.chat(call, self._authorization, chosen), picked, call.body)
        self._picked, self._inner = picked, inner
        self._answer = _ObservedAnswer(answer, picked)
        return self._answer

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> bool | None:
        picked, inner, answer = self._picked, self._inner, self._answer
        self._picked = self._inner = self._answer = None
        try:
            return await inner.__aexit__(kind, error, trace)  # type: ignore[attr-defined]
        except UpstreamFailure as failure:
            if picked is not None:
                picked.done(FAILED, why=failure.error.code or "failed")
            raise
        finally:
            if picked is not None and answer is not None:
                answer.end(error)


class _ObservedAnswer:
    """An answer whose last bytes are kept (for its usage) and whose failure is told to the picker."""

    __slots__ = ("_answer", "_picked", "_tail", "content_type", "status")

    def __init__(self, answer: UpstreamAnswer, picked: Picked) -> None:
        self._answer = answer
        self._picked = picked
        self.status = answer.status
        self.content_type = answer.content_type
        self._tail = b""

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._answer.chunks():
                self._tail = (self._tail + chunk)[-_USAGE_TAIL:] if len(chunk) < _USAGE_TAIL else chunk[-_USAGE_TAIL:]
                yield chunk
        except UpstreamFailure as failure:
            self._picked.done(FAILED, why=failure.error.code or "failed")
            raise

    def end(self, error: BaseException | None) -> None:
        """The call is over: a 502, 503 or 504, or a failure, takes the replica out; an answer counts its usage."""
        if outcome_of(self.status) == FAILED:
            self._picked.done(FAILED, why=f"http_{self.status}")
        elif error is not None and not isinstance(error, (asyncio.CancelledError, GeneratorExit)):
            self._picked.done(FAILED if isinstance(error, UpstreamFailure) else "cancelled", why=type(error).__name__)
        elif error is not None:
            self._picked.done("cancelled")
        else:
            prompt, cached = usage_of(self._tail)
            self._picked.done(prompt_tokens=prompt, cached_tokens=cached)


def with_replicas(settings: Settings, router: Router,
                  clients: Mapping[str, AiohttpUpstreamClient]) -> dict[str, UpstreamClient]:
    """``clients`` with each replicated upstream's wrapped over its replicas (its set registered for the ext_proc
    door's picking, its watch started with the client); an upstream with one server keeps its client as it is."""
    out: dict[str, UpstreamClient] = dict(clients)
    for name, spec in router.upstreams.items():
        if not spec.replicated() or name not in clients:
            continue
        replicas = ReplicaSet(name, spec.replica_urls(), picking=spec.picking)
        watch = Watch(replicas, dns_url=spec.url if spec.discover == "dns" else None,
                      dns_refresh=spec.dns_refresh_seconds)
        register(replicas)
        out[name] = ReplicatedClient(clients[name], replicas, watch)
    return out
