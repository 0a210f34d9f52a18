"""``responses-bridge bench`` end to end, with tiny numbers: every target answers through its own processes, and
the report carries the floors, the added latencies and the ratios. No figure is checked against another: the
machine is shared and only one run's ratios mean anything, so these tests only see that each one is there."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from responses_bridge.devtools.checkout.bench_ab import print_ab
from responses_bridge.devtools.checkout.bench_report import print_report
from tests.support.bridge import PYTHON
from tests.support.envoy import have_envoy

pytestmark = pytest.mark.store_free  # the bench's sidecar runs on its own SQLite file: one pass is enough

TINY = ("--requests", "3", "--throughput-requests", "20", "--chunks", "3", "--concurrency", "4",
        "--first-event-requests", "2", "--header-delay", "5", "--cost-rounds", "2", "--cost-requests", "5",
        "--cost-streams", "2", "--pace", "1")
ROOT = Path(__file__).resolve().parents[2]


def _bench(*extra: str) -> dict[str, Any]:
    result = subprocess.run([PYTHON, "-m", "responses_bridge", "bench", "--json", *TINY, *extra],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return orjson.loads(result.stdout)


def _check(results: dict[str, Any], targets: list[str], ratios: list[str]) -> None:
    assert results["kinds"] == ["json", "stream"]
    assert list(results["latency"]) == targets
    for name in targets:
        for kind in ("json", "stream"):
            assert results["latency"][name][kind]["median_ms"] > 0
    assert list(results["requests_per_second"]) == targets
    assert all(rate > 0 for rate in results["requests_per_second"].values())
    assert list(results["ratios"]) == ratios
    assert all(set(by_kind) == {"json", "stream"} and all(r > 0 for r in by_kind.values())
               for by_kind in results["ratios"].values())
    assert list(results["throughput_ratios"]) == ratios
    first = results["first_event"]
    assert first["header_delay_ms"] == 5 and list(first["latency"]) == targets
    assert all(v["median_ms"] > 0 for v in first["latency"].values())
    assert results["sidecar_rss_mb"]["idle"] > 0 and results["sidecar_rss_mb"]["processes"] >= 1
    # the cost section: each door and its floor, CPU read (never negative), Envoy's apart behind Envoy
    doors = [name for name in targets if name not in ("direct", "envoy-direct")]
    assert list(results["cost"]) == doors and results["cost_rounds"] == 2
    for name in doors:
        figures = results["cost"][name]
        assert figures["cpu_ms_per_json"] >= 0
        assert ("envoy_cpu_ms_per_json" in figures) == name.startswith("envoy")
        if name.startswith("envoy"):  # the ext_proc filter's counters: at least a body each way per request
            assert figures["messages_per_json"] >= 2 and figures["messages_per_stream"] > figures["messages_per_json"]


def test_bench_http_door_against_its_floor(capsys: pytest.CaptureFixture[str]) -> None:
    results = _bench("--sidecar-arg=--log-level error")
    _check(results, ["direct", "http-floor", "http"], ["http/direct", "http/http-floor", "http-floor/direct"])
    assert list(results["added"]) == ["http over http-floor", "http over direct", "http-floor over direct"]
    assert results["sidecar_args"] == ["--log-level", "error"]
    print_report(results)
    report = capsys.readouterr().out
    assert "http/http-floor" in report and "first SSE event" in report


@pytest.mark.envoy
@pytest.mark.skipif(not have_envoy(), reason="no envoy binary")
def test_bench_both_doors_against_their_floors(capsys: pytest.CaptureFixture[str]) -> None:
    results = _bench("--envoy")
    _check(results, ["direct", "http-floor", "http", "envoy-direct", "envoy-floor", "envoy"],
           ["http/direct", "http/http-floor", "http-floor/direct", "envoy/envoy-direct", "envoy/envoy-floor",
            "envoy-floor/envoy-direct"])
    assert {"envoy over envoy-floor", "envoy over envoy-direct", "envoy over direct"} <= set(results["added"])
    print_report(results)
    assert "envoy/envoy-floor" in capsys.readouterr().out


@pytest.mark.envoy
@pytest.mark.skipif(not have_envoy(), reason="no envoy binary")
def test_bench_ab_runs_two_sidecars_and_a_control(capsys: pytest.CaptureFixture[str]) -> None:
    results = _bench("--envoy", "--ab-tree", str(ROOT), "--ab-env", "RESPONSES_BRIDGE_EVENT_LOOP=asyncio")
    ab = results["ab"]
    assert ab["tree"] == str(ROOT) and ab["env"] == ["RESPONSES_BRIDGE_EVENT_LOOP=asyncio"] and ab["rounds"] == 2
    assert list(ab["doors"]) == ["http", "envoy"]
    for figures in ab["doors"].values():
        assert {"cpu_ms_per_json", "cpu_us_per_chunk_paced", "json_p50_ms", "stream_p50_ms"} <= set(figures)
        assert figures["json_p50_ms"]["A"] > 0 and figures["json_p50_ms"]["B/A"] > 0
        assert figures["json_p50_ms"]["A'/A"] > 0
    messages = ab["doors"]["envoy"]["messages_per_json"]
    assert messages["A"] == messages["B"] >= 2  # the same tree renders the same processing modes
    print_ab(results)
    assert "A' = a second A" in capsys.readouterr().out
