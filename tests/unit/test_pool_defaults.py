"""The upstream pool's default, derived from what one stream costs (config/pools.py): the descriptor limit and
the memory budget each divided by a stream's share, the smaller, never under the old fixed 256; a number given
is kept."""

from __future__ import annotations

import resource

import pytest

from responses_bridge.config import pools as config_pools
from responses_bridge.config.pools import STREAM_MEMORY_BYTES, STREAMS_FLOOR, stream_capacity
from responses_bridge.config.settings import Settings


def _soft_limit(monkeypatch: pytest.MonkeyPatch, soft: int) -> None:
    monkeypatch.setattr(config_pools.resource, "getrlimit", lambda kind: (soft, resource.RLIM_INFINITY))


def test_descriptors_bound_the_pool_when_memory_is_plenty(monkeypatch: pytest.MonkeyPatch) -> None:
    _soft_limit(monkeypatch, 1 << 20)
    assert stream_capacity(4 << 30) == (4 << 30) // STREAM_MEMORY_BYTES == 65_536  # 4 GiB: memory binds
    _soft_limit(monkeypatch, 40_000)
    assert stream_capacity(4 << 30) == 10_000  # half the descriptors, two a stream


def test_never_under_the_floor_and_no_memory_budget_leaves_the_descriptors(monkeypatch: pytest.MonkeyPatch) -> None:
    _soft_limit(monkeypatch, 1024)
    assert stream_capacity(4 << 30) == STREAMS_FLOOR == 256
    _soft_limit(monkeypatch, 100_000)
    assert stream_capacity(0) == 25_000
    _soft_limit(monkeypatch, resource.RLIM_INFINITY)
    assert stream_capacity(0) == (1 << 20) // 4


def test_settings_derive_the_default_and_keep_a_given_number(monkeypatch: pytest.MonkeyPatch) -> None:
    _soft_limit(monkeypatch, 40_000)
    budget = 256 << 20
    assert Settings(memory_budget_bytes=budget).upstream_max_connections == budget // STREAM_MEMORY_BYTES == 4096
    assert Settings(memory_budget_bytes=8 << 30).upstream_max_connections == 10_000
    monkeypatch.setenv("RESPONSES_BRIDGE_UPSTREAM_MAX_CONNECTIONS", "300")
    assert Settings().upstream_max_connections == 300
