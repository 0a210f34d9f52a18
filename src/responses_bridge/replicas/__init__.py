"""Replicas of one backend, and the one question asked of them per model call: which replica serves it.

An upstream may name several servers of the same models (``urls``, ``--upstream`` given several times, or a name
resolved to all its addresses with ``discover: dns``). Each model call goes to one, picked where its prefix is
already cached: a chain's next turn to the replica that served the turn before (``affinity.py``), a chainless
request to the replica that served the longest prefix of its rendered prompt lately (``prefix.py``), yielding to
load past a threshold (``picker.py``); a failing replica is taken out and probed back in (``replica.py``,
``watch.py``, which also reads each replica's ``/metrics`` and re-resolves a DNS name off the request path). The
chain map is kept in the store too, for other processes (``persist.py``); each replica's series are on ``/metrics``
(``series.py``).

The doors and the run ask one function, :func:`pick` (``registry.py``): None for an upstream with one server —
its cost, one dict lookup — else a :class:`~responses_bridge.replicas.replica.Picked` naming the replica (its base
URL, its ``host:port``, which a call through Envoy names — as ``ip:port``, ``address.py`` — for the ``override_host``
load balancer of the cluster ``envoy-config`` renders) that records the call's end.

Imports observability, protocol's errors and the leaves only (never the settings: the composition root builds the
sets from them), so the run and both doors may use it.
"""

from .registry import ENDPOINT_HEADER, pick, pick_recalled, register, replica_set, replica_sets
from .replica import Picked, Replica

__all__ = ["ENDPOINT_HEADER", "Picked", "Replica", "pick", "pick_recalled", "register", "replica_set",
           "replica_sets"]
