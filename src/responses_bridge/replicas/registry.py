"""The process's replica sets, by upstream name, and the one function the doors and the run ask: :func:`pick`.

An upstream with one server has no set: :func:`pick` answers None after one dict lookup, and nothing else is done
for its calls (a plain single-upstream request costs nothing more). The composition root registers a set for each
upstream with several replicas (:func:`register`) before the doors open.

The sidecar's own calls find their chain in the run's upstream scope (``run/upstream_scope.py``: the keys the
driver puts there for a run on a replicated upstream); the ext_proc door gives the keys of the request it reads.
"""

from __future__ import annotations

from collections.abc import Sequence

from .picker import ReplicaSet
from .replica import Picked

ENDPOINT_HEADER = "x-gateway-destination-endpoint"
"""The request header naming the picked replica: the Gateway API Inference Extension's name, read by the
``override_host`` load balancer of the cluster ``envoy-config`` renders for an upstream with replicas
(envoy_config/replica_cluster.py), which matches it against its resolved hosts: ``ip:port``, or a comma-separated
list of them, the picked one first (``address.py``)."""

_SETS: dict[str, ReplicaSet] = {}


def register(replica_set: ReplicaSet) -> None:
    """``replica_set`` serves its upstream's calls in this process from now on (a set of the same name replaced)."""
    _SETS[replica_set.name] = replica_set


def unregister(name: str) -> None:
    _SETS.pop(name, None)


def replica_set(name: str) -> ReplicaSet | None:
    """The replicas of upstream ``name``, or None when it has one server."""
    return _SETS.get(name)


def replica_sets() -> list[ReplicaSet]:
    """Every replicated upstream of this process, by name (the console and ``/metrics`` list them)."""
    return [_SETS[name] for name in sorted(_SETS)]


def pick(upstream_name: str, chain: Sequence[str] = (), prompt: bytes | None = None) -> Picked | None:
    """The replica of upstream ``upstream_name`` one model call goes to: None when the upstream has one server.
    ``chain``: the call's chain keys, the most specific first (the response's own id, ``previous_response_id``,
    the conversation's id); ``prompt``: the rendered request body, for the prefix its replicas hold."""
    found = _SETS.get(upstream_name)
    if found is None:
        return None
    return found.pick(chain, prompt)


async def pick_recalled(upstream_name: str, chain: Sequence[str] = (),
                        prompt: bytes | None = None) -> Picked | None:
    """:func:`pick`, after looking in the store for a chain this process does not know (another worker's, a
    resumed run's: persist.py); a door that can await asks this one."""
    found = _SETS.get(upstream_name)
    if found is None:
        return None
    await found.recall(tuple(key for key in chain if key))
    return found.pick(chain, prompt)
