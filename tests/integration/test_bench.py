"""``responses-bridge bench`` end to end, with tiny numbers: every target answers through its own processes, and
the report carries the floors, the added latencies and the ratios. No figure is checked against another: the
machine is shared and only one run's ratios mean anything, so these tests only see that each one is there."""

from __future__ import annotations

import subprocess
from typing import Any

import orjson
import pytest

from responses_bridge.devtools.checkout.bench_report import print_report
from tests.support.bridge import PYTHON
from tests.support.envoy import have_envoy

pytestmark = pytest.mark.store_free  # the bench's sidecar runs on its own SQLite file: one pass is enough

TINY = ("--requests", "3", "--throughput-requests", "20", "--chunks", "3", "--concurrency", "4",
        "--first-event-requests", "2", "--header-delay", "5")


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
