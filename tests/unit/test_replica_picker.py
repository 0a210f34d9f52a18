"""The replica picker on a fake clock: chain affinity, prefix scoring, the load threshold, health, DNS membership,
the bounds on memory, and the settings that configure replicas (replicas/, config/upstreams.py)."""

from __future__ import annotations

import math

import pytest

from responses_bridge.adapters.replicated_client import usage_of
from responses_bridge.config.settings import SettingsError, load_settings
from responses_bridge.config.upstreams import UpstreamSpec, upstream_flag
from responses_bridge.replicas import pick, register
from responses_bridge.replicas.affinity import ChainMap
from responses_bridge.replicas.picker import HOLD_MARGIN, HOT, SHARE_SLACK, ReplicaSet
from responses_bridge.replicas.prefix import BLOCK_BYTES, PrefixIndex, block_keys
from responses_bridge.replicas.registry import unregister
from responses_bridge.replicas.replica import CONNECT_FAILED, DOWN_FIRST, FAILED, endpoint_of
from responses_bridge.replicas.watch import metrics_url, read_metrics, with_address

URLS = ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1", "http://10.0.0.3:8000/v1", "http://10.0.0.4:8000/v1"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def replica_set(picking: str = "cache", urls: list[str] = URLS) -> tuple[ReplicaSet, Clock]:
    clock = Clock()
    return ReplicaSet("pool", urls, picking=picking, clock=clock), clock


def prompt(prefix: str, tail: str = "") -> bytes:
    return (b'{"model":"m","messages":[{"role":"system","content":"' + prefix.encode() * 400 + b'"},'
            + tail.encode() * 50 + b"]}")


def test_one_server_picks_nothing() -> None:
    assert pick("nobody-registered") is None


def test_registered_set_answers_pick() -> None:
    replicas, _ = replica_set()
    register(replicas)
    try:
        picked = pick("pool", ("resp_1",), prompt("a"))
        assert picked is not None and picked.url in URLS and picked.endpoint == endpoint_of(picked.url)
        assert picked.name == "pool"
        picked.done()
    finally:
        unregister("pool")


def test_a_chain_stays_on_its_replica() -> None:
    replicas, clock = replica_set()
    first = replicas.pick(("resp_1",), prompt("x", "1"))
    first.done()
    for turn in range(2, 30):  # each turn: its own id bound after the answer, the next turn names it
        clock.now += 1
        picked = replicas.pick((f"resp_{turn}", f"resp_{turn - 1}"), prompt("x", str(turn)))
        assert picked.replica is first.replica
        picked.done()


def test_chains_spread_and_each_keeps_its_replica() -> None:
    replicas, clock = replica_set()
    homes = {}
    for chain in range(40):
        picked = replicas.pick((f"c{chain}",), prompt("shared", str(chain)))
        homes[chain] = picked.replica
        picked.done()
    counts = [sum(1 for home in homes.values() if home is replica) for replica in replicas.replicas]
    assert max(counts) <= HOT * 10 + SHARE_SLACK and min(counts) >= 5  # the shared prefix draws no pile
    for chain in range(40):
        clock.now += 0.1
        picked = replicas.pick((f"c{chain}",), prompt("shared", str(chain)))
        assert picked.replica is homes[chain]
        picked.done()


def test_a_chain_moves_once_when_its_replica_fails_and_stays_moved() -> None:
    replicas, clock = replica_set()
    picked = replicas.pick(("conv_1",), prompt("p"))
    home = picked.replica
    picked.done()
    picked = replicas.pick(("conv_1",), prompt("p"))
    picked.done(CONNECT_FAILED, why="refused")
    assert home.down
    moved = replicas.pick(("conv_1",), prompt("p"), exclude=(home,))
    assert moved.replica is not home
    moved.done()
    clock.now += DOWN_FIRST * 10  # the old replica probed back in
    home.bring_back()
    for _ in range(5):
        again = replicas.pick(("conv_1",), prompt("p"))
        assert again.replica is moved.replica
        again.done()


def test_a_failed_replica_is_out_until_its_retry_then_one_call_probes_it() -> None:
    replicas, clock = replica_set(urls=URLS[:2])
    bad = replicas.replicas[0]
    bad.take_out(clock.now, "refused")
    for _ in range(6):
        picked = replicas.pick((), None)
        assert picked.replica is not bad
        picked.done()
    clock.now = bad.retry_at
    probes = [replicas.pick((), None) for _ in range(6)]
    assert sum(1 for picked in probes if picked.replica is bad) == 1  # one probe at a time, the rest elsewhere
    for picked in probes:
        picked.done()
    assert not bad.down  # its probe answered: back in


def test_failures_in_a_row_double_the_time_out() -> None:
    replicas, clock = replica_set(urls=URLS[:2])
    bad = replicas.replicas[0]
    bad.take_out(clock.now, "refused")
    first = bad.retry_at - clock.now
    bad.take_out(clock.now, "refused")
    assert bad.retry_at - clock.now == 2 * first


def test_every_replica_out_tries_the_first_due_and_fails_there() -> None:
    replicas, clock = replica_set(urls=URLS[:3])
    for offset, replica in enumerate(replicas.replicas):
        replica.take_out(clock.now + offset, "refused")
    picked = replicas.pick(("resp_1",), prompt("z"))
    assert picked.replica is replicas.replicas[0]
    picked.done(FAILED, why="refused")
    assert all(replica.down for replica in replicas.replicas)


@pytest.mark.parametrize("concurrent", [4, 8, 16])
def test_a_hot_shared_prefix_keeps_every_replica_under_the_threshold(concurrent: int) -> None:
    replicas, clock = replica_set()
    shares = {replica.key: 0 for replica in replicas.replicas}
    in_flight = []
    for request in range(400):  # every request the same long instructions; `concurrent` in flight at once
        clock.now += 0.01
        picked = replicas.pick((), prompt("instructions", str(request)))
        shares[picked.endpoint] += 1
        in_flight.append(picked)
        busiest = max(replica.in_flight for replica in replicas.replicas)
        mean = sum(replica.in_flight for replica in replicas.replicas) / len(replicas.replicas)
        assert busiest <= max(HOT * mean, math.ceil(mean)) + 1e-9  # whole calls: 5 over 4 is 2 somewhere
        if len(in_flight) >= concurrent:
            in_flight.pop(0).done()
    mean = sum(shares.values()) / len(shares)
    assert max(shares.values()) <= HOT * mean, shares


def test_affinity_yields_to_a_replica_over_the_threshold() -> None:
    replicas, _ = replica_set(urls=URLS[:2])
    picked = replicas.pick(("conv_hot",), prompt("q"))
    home = picked.replica
    picked.done()
    held = [replicas.pick((f"other{n}",), None) for n in range(4)]  # load spread: 2 and 2
    assert {p.replica.in_flight for p in held} == {2}
    home.scraped_waiting = 6.0  # its own /metrics say it is queueing others' requests: past 1.5x the mean ...
    stayed = replicas.pick(("conv_hot",), prompt("q"))
    assert stayed.replica is home  # ... but within HOLD_MARGIN calls of it: the chain's history is worth more
    stayed.done()
    home.scraped_waiting = 6.0 + 2 * HOLD_MARGIN  # past both
    moved = replicas.pick(("conv_hot",), prompt("q"))
    assert moved.replica is not home
    home.scraped_waiting = None
    home.kv_usage = 0.99  # evicting: hot whatever its share
    moved.done()
    assert replicas.pick(("conv_hot",), prompt("q")).replica is moved.replica


def test_a_chainless_request_goes_where_its_prefix_is_warm() -> None:
    replicas, _ = replica_set()
    warm = {}
    for n in range(4):  # four tenants, four long prefixes: each lands on a replica of its own
        picked = replicas.pick((), prompt(f"tenant{n}"))
        warm[n] = picked.replica
        picked.done()
    assert len({id(replica) for replica in warm.values()}) == 4
    for question in range(5):  # their next requests, interleaved (the shares stay even): each where it is warm
        for n in range(4):
            picked = replicas.pick((), prompt(f"tenant{n}", f"question {question}"))
            assert picked.replica is warm[n]
            picked.done()


def test_one_hot_prefix_alone_spreads_while_idle() -> None:
    replicas, clock = replica_set()
    shares = {replica.key: 0 for replica in replicas.replicas}
    for request in range(200):  # one after another, never two in flight: the share of recent picks spreads them
        clock.now += 0.05
        picked = replicas.pick((), prompt("hot", str(request)))
        shares[picked.endpoint] += 1
        picked.done()
    assert max(shares.values()) <= HOT * 50, shares


def test_round_robin_and_least_request() -> None:
    replicas, _ = replica_set("round_robin")
    order = [replicas.pick(("c",), prompt("a")).replica for _ in range(8)]
    assert order[:4] == replicas.replicas and order[4:] == replicas.replicas
    replicas, _ = replica_set("least_request")
    held = [replicas.pick(("c",), prompt("a")) for _ in range(8)]
    assert all(replica.in_flight == 2 for replica in replicas.replicas)
    held[0].done()
    assert replicas.pick((), None).replica is held[0].replica


def test_usage_counts_the_observed_cache_hit_rate() -> None:
    replicas, _ = replica_set(urls=URLS[:1])
    picked = replicas.pick((), None)
    picked.done(prompt_tokens=1000, cached_tokens=900)
    picked.done(prompt_tokens=1000, cached_tokens=0)  # once only
    assert replicas.replicas[0].cache_hit_rate() == pytest.approx(0.9)
    tail = (b'data: {"choices":[],"usage":{"prompt_tokens":120,"completion_tokens":3,'
            b'"prompt_tokens_details":{"cached_tokens":96}}}\n\ndata: [DONE]\n\n')
    assert usage_of(tail) == (120, 96)
    assert usage_of(b'{"usage":{"prompt_tokens":5}}') == (5, 0)
    assert usage_of(b"data: [DONE]") == (0, 0)


def test_memory_is_bounded() -> None:
    chains = ChainMap(capacity=100)
    for n in range(10_000):
        chains.bind((f"resp_{n}",), "a:1")
    assert len(chains) == 100 and chains.find(("resp_9999",)) == ("resp_9999", "a:1")
    assert chains.find(("resp_0",)) is None
    index = PrefixIndex(capacity=64)
    for n in range(100):
        index.add(block_keys(prompt(f"p{n}")))
    assert len(index) == 64
    keys = block_keys(b"x" * (BLOCK_BYTES * 3 + 10))
    assert len(keys) == 3 and len(block_keys(b"x" * BLOCK_BYTES * 20, limit=5)) == 5


def test_prefix_keys_are_chained() -> None:
    a = block_keys(b"A" * BLOCK_BYTES + b"B" * BLOCK_BYTES)
    b = block_keys(b"C" * BLOCK_BYTES + b"B" * BLOCK_BYTES)
    assert a[1] != b[1]  # the same block after a different one is a different block
    index = PrefixIndex()
    index.add(a)
    assert index.matched(a) == 2 and index.matched(b) == 0


def test_dns_answers_change_the_members() -> None:
    replicas, _ = replica_set(urls=URLS[:2])
    kept = replicas.replicas[0]
    picked = replicas.pick(("c1",), None)
    picked.done()
    gone_key = replicas.replicas[1].key
    replicas.chains.bind(("c2",), gone_key)
    replicas.set_urls([URLS[0], URLS[2]])
    assert replicas.replicas[0] is kept and replicas.replica(gone_key) is None
    assert replicas.chains.find(("c2",)) is None
    assert with_address("http://pods.ns.svc:8000/v1", "10.1.2.3") == "http://10.1.2.3:8000/v1"
    assert with_address("http://pods:8000/v1", "fd00::1") == "http://[fd00::1]:8000/v1"
    assert endpoint_of("http://[fd00::1]:8000/v1") == "[fd00::1]:8000"
    assert endpoint_of("https://api.example") == "api.example:443"
    assert metrics_url("http://10.0.0.1:8000/v1") == "http://10.0.0.1:8000/metrics"


VLLM_METRICS = """# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen"} 3.0
vllm:num_requests_running{engine="1",model_name="qwen"} 2.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="qwen"} 7.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="qwen"} 0.42
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="qwen"} 1234.0
"""


def test_vllm_metrics_are_read() -> None:
    assert read_metrics(VLLM_METRICS) == (5.0, 7.0, 0.42)
    assert read_metrics("# nothing here\n") == (None, None, None)
    old = "vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5\n"
    assert read_metrics(old) == (None, None, 0.5)


def test_replica_settings_and_their_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = UpstreamSpec(name="r", urls=["http://a:1/v1/", "http://b:1/v1"])
    assert spec.url == "http://a:1/v1" and spec.replicated() and spec.replica_urls() == ["http://a:1/v1",
                                                                                          "http://b:1/v1"]
    assert not UpstreamSpec(name="one", url="http://a:1/v1").replicated()
    assert UpstreamSpec(name="d", url="http://pods:8000/v1", discover="dns").replicated()
    assert upstream_flag(None) == {} and upstream_flag(["http://a/v1"]) == {"upstream": "http://a/v1"}
    assert upstream_flag(["http://a/v1", "http://b/v1"]) == {"upstream": "http://a/v1",
                                                             "upstream_urls": ["http://a/v1", "http://b/v1"]}
    settings = load_settings(upstream="http://a/v1", upstream_urls=["http://a/v1", "http://b/v1"])
    assert settings.router().upstreams["default"].replica_urls() == ["http://a/v1", "http://b/v1"]
    problems = {
        '[{"name": "r"}]': "upstreams[0].url is missing (required: base URL ending in /v1)",
        '[{"name": "r", "urls": ["http://a/v1", "a:1"]}]': "urls[1]: must be an http:// or https:// URL",
        '[{"name": "r", "urls": ["http://a/v1", "http://a/v1/"]}]': "is listed twice",
        '[{"name": "r", "url": "http://c/v1", "urls": ["http://a/v1", "http://b/v1"]}]': "is not one of `urls`",
        '[{"name": "r", "urls": ["http://a/v1", "http://b/v1"], "discover": "dns"}]': "`discover: dns` finds",
        '[{"name": "r", "url": "http://a/v1", "picking": "random"}]': "picking",
    }
    for value, words in problems.items():
        monkeypatch.setenv("RESPONSES_BRIDGE_UPSTREAMS", value)
        monkeypatch.setenv("RESPONSES_BRIDGE_DEFAULT_UPSTREAM", "r")
        with pytest.raises(SettingsError, match="RESPONSES_BRIDGE_UPSTREAMS") as raised:
            load_settings()
        assert words in str(raised.value), str(raised.value)
    monkeypatch.setenv("RESPONSES_BRIDGE_UPSTREAMS", '[{"name": "r", "url": "http://a/v1"}]')
    with pytest.raises(SettingsError, match="upstream_urls"):
        load_settings(upstream_urls=["http://a/v1", "http://b/v1"])
