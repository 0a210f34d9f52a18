"""A cluster for the ``agent-sandbox`` backend without one (tools/fakes/cluster.py) over the vendored CRDs.

    async with fake_cluster() as cluster:      # cluster.api_url, cluster.kube, cluster.pods, cluster.settings
        ...
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from tools.fakes import cluster as clusters
from tools.fakes.cluster import NAMESPACE, FakeCluster

CRDS = Path(__file__).resolve().parents[1] / "deploy" / "crds" / "agent-sandbox-2fd412d.yaml"
__all__ = ["CRDS", "NAMESPACE", "FakeCluster", "fake_cluster"]


@contextlib.asynccontextmanager
async def fake_cluster(pools: tuple[str, ...] = ("bridge-1g", "bridge-4g"), *, network: bool = False,
                       warm: int = 0) -> AsyncIterator[FakeCluster]:
    async with clusters.fake_cluster(CRDS, pools, network=network, warm=warm) as cluster:
        yield cluster
