"""The ext_proc door's part in picking a replica (replicas/): the sidecar picks, Envoy connects.

For a request it sends to an upstream with several replicas, the processor asks the picker for one — by the
request's chain (``previous_response_id``, its conversation: the keys the HTTP door's driver uses,
``run.drive.chain_keys``, so a chain keeps its replica whichever door serves its turns), else by the prefix of the
Chat Completions body it made — and names it to Envoy under ``x-gateway-destination-endpoint`` in the dynamic
metadata the upstream's cluster reads (envoy_config/replica_cluster.py: ``override_host``). From the response phase
it ends the pick: how the call went (a 503 Envoy made itself because the replica refused the connection, a 5xx of
the replica's: taken out; anything else: ok), the usage the answer reported (the prompt tokens the replica had
cached), and the response id it produced, which now names the replica for the chain's next turn.

For an upstream with one server nothing here runs but :func:`replicated`, one dict lookup per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ...config.upstreams import SINGLE_UPSTREAM
from ...envoy_config.names import DESTINATION_ENDPOINT_HEADER, UPSTREAM_HEADERS_NAMESPACE
from ...envoy_config.replica_cluster import UPSTREAM_ADDRESS
from ...replicas import Picked, replica_set
from ...replicas.address import envoy_address
from ...replicas.registry import pick_recalled
from ...replicas.replica import CONNECT_FAILED, FAILED, OK
from . import messages as m
from ._pb.ext_proc_pb2 import ProcessingRequest, ProcessingResponse

ENVOY_UPSTREAM_TIME = "x-envoy-upstream-service-time"
"""Envoy's router adds it to every answer that came from an upstream, never to a reply it made itself: a 5xx without
it is Envoy's own (the replica refused the connection, or reset it before answering)."""


def replicated(upstream: str | None) -> bool:
    """Does the upstream (None: the lone ``--upstream``) have replicas to pick from?"""
    return replica_set(upstream or SINGLE_UPSTREAM) is not None


async def pick_replica(upstream: str | None, chain: Sequence[str], body: bytes) -> Picked | None:
    """The replica this call goes to (None: the upstream has one server). A chain this process has not seen is
    looked up in the store first: Envoy spreads a chain's turns over the workers of ``serve --workers``, and a
    turn may follow one another bridge on the same database served."""
    return await pick_recalled(upstream or SINGLE_UPSTREAM, chain, body)


async def name_replica(reply: ProcessingResponse, picked: Picked) -> None:
    """Tells Envoy where the request goes (``reply``: the request body's): the picked replica's address, then the
    other replicas in (where Envoy's one retry of a call that reached no replica goes: envoy_config's
    ``RETRY_BEFORE_SENDING``), in the metadata the bootstrap's cluster reads, beside the other headers the processor
    leaves there (the upstream's key, the trace context), and in the header itself, which Envoy Gateway's and
    Istio's clusters read (they send the processor the request headers, so a header mutation of the body phase
    applies there; the bootstrap skips them, and Envoy drops it)."""
    found = replica_set(picked.name)
    others = [replica.key for replica in found.replicas if replica is not picked.replica and not replica.down] \
        if found is not None else []
    address = ",".join([await envoy_address(key) for key in (picked.endpoint, *others)])
    reply.dynamic_metadata.get_or_create_struct(UPSTREAM_HEADERS_NAMESPACE)[DESTINATION_ENDPOINT_HEADER] = address
    m.mutate(reply.request_body.response.header_mutation, ((DESTINATION_ENDPOINT_HEADER, address),))


def answered_by(request: ProcessingRequest) -> str:
    """The replica Envoy's call reached (``ip:port``; the route asks for the ``upstream.address`` attribute), or
    "" when Envoy does not say."""
    for values in request.attributes.values():
        value = values.fields.get(UPSTREAM_ADDRESS)
        if value is not None and value.string_value:
            return value.string_value
    return ""


TAKES_OUT = frozenset((502, 503, 504))
"""The statuses that say the replica, not the request, failed (a 500 is the request's own: llama.cpp's answer to some
request shapes), as the HTTP door's calls judge them (replicas/)."""


def outcome(status: int, headers: Mapping[str, str]) -> tuple[str, str]:
    """How the call went, from its answer's status and headers: (outcome, why)."""
    if status not in TAKES_OUT:
        return OK, ""
    if ENVOY_UPSTREAM_TIME not in headers:
        return CONNECT_FAILED, f"Envoy answered {status}: the replica refused or reset the connection"
    return FAILED, f"the replica answered {status}"


def usage_tokens(response: Mapping[str, Any] | None) -> tuple[int, int]:
    """(prompt tokens, cached prompt tokens) of a finished Response's usage; zeros without one."""
    usage = response.get("usage") if response else None
    if not isinstance(usage, dict):
        return 0, 0
    details = usage.get("input_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else 0
    prompt = usage.get("input_tokens")
    return (prompt if isinstance(prompt, int) else 0), (cached if isinstance(cached, int) else 0)


def settle(picked: Picked, status: int, headers: Mapping[str, str] | None, answered: str,
           response: Mapping[str, Any] | None, response_id: str | None) -> None:
    """Ends the pick once: no answer at all (the client went away first) ends it as ok; a produced response id is
    bound to the replica for the chain's next turn. ``answered``: the replica Envoy says answered; another of the
    upstream's than the picked one means the picked one refused the call and Envoy retried it there: the picked
    one is taken out, and the chain is the other's now."""
    result, why = outcome(status, headers or {}) if headers is not None else (OK, "")
    prompt, cached = usage_tokens(response)
    found = replica_set(picked.name) if answered and answered != picked.endpoint else None
    other = found.replica(answered) if found is not None else None
    if found is not None and other is not None and other is not picked.replica:
        picked.done(CONNECT_FAILED, why=f"refused; Envoy retried the call on {answered}")
        if result == OK:
            found.bind((*picked.chain, *((response_id,) if response_id else ())), other)
        return
    if result == OK and response_id:
        picked.bind(response_id)
    picked.done(result, why=why, prompt_tokens=prompt, cached_tokens=cached)
