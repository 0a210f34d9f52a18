"""``responses-bridge bench`` end to end, with tiny numbers: every target answers through its own processes, and
the report carries the floors, the added latencies and the ratios. No figure is checked against another: the
machine is shared and only one run's ratios mean anything, so these tests only see that each one is there."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.support.bridge import PYTHON
from tests.support.envoy import have_envoy
from tools.bench.latency import memory as bench_memory
from tools.bench.latency import soak as bench_soak
from tools.bench.latency.ab import print_ab
from tools.bench.latency.report import print_report

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


@pytest.mark.envoy
@pytest.mark.skipif(not have_envoy(), reason="no envoy binary")
def test_bench_both_doors_against_their_floors(capsys: pytest.CaptureFixture[str]) -> None:
    """The HTTP door's targets and figures are the first half of both doors' (one run for both: the suite's time)."""
    results = _bench("--envoy", "--sidecar-arg=--log-level error")
    _check(results, ["direct", "http-floor", "http", "envoy-direct", "envoy-floor", "envoy"],
           ["http/direct", "http/http-floor", "http-floor/direct", "envoy/envoy-direct", "envoy/envoy-floor",
            "envoy-floor/envoy-direct"])
    assert list(results["added"])[:3] == ["http over http-floor", "http over direct", "http-floor over direct"]
    assert {"envoy over envoy-floor", "envoy over envoy-direct", "envoy over direct"} <= set(results["added"])
    assert results["sidecar_args"] == ["--log-level", "error"]
    print_report(results)
    report = capsys.readouterr().out
    assert "envoy/envoy-floor" in report and "http/http-floor" in report and "first SSE event" in report


@pytest.mark.envoy
@pytest.mark.skipif(not have_envoy(), reason="no envoy binary")
def test_bench_ab_runs_two_sidecars_and_a_control(capsys: pytest.CaptureFixture[str]) -> None:
    results = _bench("--envoy", "--ab-tree", str(ROOT), "--ab-env", "RESPONSES_BRIDGE_EVENT_LOOP=asyncio")
    ab = results["ab"]
    assert ab["tree"] == str(ROOT) and ab["env"] == ["RESPONSES_BRIDGE_EVENT_LOOP=asyncio"] and ab["rounds"] == 2
    assert list(ab["doors"]) == ["http", "envoy"]
    for figures in ab["doors"].values():
        assert {"cpu_ms_per_json", "cpu_us_per_chunk_paced", "json_p50_ms", "stream_p50_ms",
                "json_per_s"} <= set(figures)
        for figure in ("json_p50_ms", "json_per_s"):
            assert figures[figure]["A"] > 0 and figures[figure]["B/A"] > 0 and figures[figure]["A'/A"] > 0
    messages = ab["doors"]["envoy"]["messages_per_json"]
    assert messages["A"] == messages["B"] >= 2  # the same tree renders the same processing modes
    print_ab(results)
    report = capsys.readouterr().out
    assert "A' = a second A" in report and "json_per_s" in report


def _bench_only(*extra: str) -> dict[str, Any]:
    result = subprocess.run([PYTHON, "-m", "responses_bridge", "bench", "--json", "--sidecar-arg=--log-level error",
                             *extra], capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return orjson.loads(result.stdout)


@pytest.mark.envoy
@pytest.mark.skipif(not have_envoy(), reason="no envoy binary")
def test_bench_memory_reports_every_case_through_both_doors(capsys: pytest.CaptureFixture[str]) -> None:
    results = _bench_only("--memory", "--envoy", "--memory-items", "2000", "--memory-settle", "0.2",
                          "--memory-parallel", "2", "--memory-queued", "2")
    cases = {case["case"]: case for case in results["memory"]}
    assert list(cases) == ["http store=true", "http store=false", "http 2 at once", "envoy store=true",
                           "envoy store=false", "envoy 2 at once", "websocket 2 queued"]
    for name, case in cases.items():
        assert case["statuses"] == [200] * (2 if " 2 " in name else 1), (name, case)
        assert case["body_mib"] > 0 and case["rest_mib"] > 0 and case["peak_bound_mib"] > 64
        assert case["peak_above_rest_mib"] >= case["after_above_rest_mib"] - 1  # the peak includes the after
    bench_memory.print_memory(results)
    assert "websocket 2 queued" in capsys.readouterr().out


@pytest.mark.envoy
@pytest.mark.skipif(not have_envoy(), reason="no envoy binary")
def test_bench_soak_runs_the_mix_through_both_doors_without_failures(capsys: pytest.CaptureFixture[str]) -> None:
    results = _bench_only("--soak", "4", "--envoy", "--concurrency", "2")
    soak = results["soak"]
    assert soak["doors"] == ["http", "envoy"] and soak["failures"] == {}, soak["failure_examples"]
    assert set(soak["requests"]) == {"json", "stream", "chain", "large_input", "misspelled", "websocket"}
    assert all(count > 0 for count in soak["requests"].values())
    assert soak["rss_mib"]["max"] >= soak["rss_mib"]["start"] > 0 and soak["descriptors"]["start"] > 0
    bench_soak.print_soak(results)
    assert "slope" in capsys.readouterr().out


def test_bench_modes_are_separate_runs() -> None:
    result = subprocess.run([PYTHON, "-m", "responses_bridge", "bench", "--memory", "--soak", "5"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0 and "choose one" in result.stderr
