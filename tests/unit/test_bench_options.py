"""How ``responses-bridge bench`` reads its options (the sidecar's extra arguments, its Unix socket), where it
takes a stream's first event to begin, and how it adds up a sidecar of several processes."""

from __future__ import annotations

import argparse
import functools

import pytest

from responses_bridge.envoy_config import render_bootstrap
from tools.bench.latency import bench
from tools.bench.latency.report import RssPeak


def _options(*sidecar_arg: str, extproc_uds: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(sidecar_arg=list(sidecar_arg), extproc_uds=extproc_uds)


def test_sidecar_args_split_like_a_shell_line_and_name_the_socket_once() -> None:
    assert bench.sidecar_args(_options("--workers 2", "--log-level=error")) == ["--workers", "2", "--log-level=error"]
    assert bench.sidecar_args(_options(extproc_uds="/run/x.sock")) == ["--extproc-uds", "/run/x.sock"]
    given = _options("--extproc-uds=/run/x.sock", extproc_uds="/run/x.sock")
    assert bench.sidecar_args(given) == ["--extproc-uds=/run/x.sock"]
    assert bench.extproc_uds(["--workers", "2", "--extproc-uds", "/a"]) == "/a"
    assert bench.extproc_uds(["--workers", "2"]) is None
    with pytest.raises(SystemExit, match="two sockets"):
        bench.sidecar_args(_options("--extproc-uds /a", extproc_uds="/b"))


def test_the_bootstrap_follows_the_sidecars_socket_and_workers() -> None:
    plain = bench.bootstrap_renderer([])
    assert isinstance(plain, functools.partial) and plain.func is render_bootstrap
    # chat_store off: envoy-direct (the listener's chat route) has no processor on its path
    assert plain.keywords == {"extproc_uds": None, "workers": 1, "chat_store": False}
    both = bench.bootstrap_renderer(["--extproc-uds", "/run/x.sock", "--workers=2"])
    assert isinstance(both, functools.partial) and both.keywords == {"extproc_uds": "/run/x.sock", "workers": 2,
                                                                         "chat_store": False}


@pytest.mark.parametrize(("head", "started"), [
    (b"", False), (b"\n", False), (b": keepalive", False), (b": keepalive\n\n", False),
    (b": keepalive\n\ne", True), (b"event: response.created\n", True), (b"d", True), (b"\r\ndata: {}", True)])
def test_the_first_event_is_the_first_byte_that_is_not_a_comment(head: bytes, started: bool) -> None:
    assert bench.event_started(head) is started


def test_the_sidecar_rss_sums_its_processes_and_keeps_each_one() -> None:
    rss = RssPeak({100: 10.0})
    rss.probe({100: 12.0, 101: 5.0})  # a sidecar that started a worker after its idle reading
    assert rss.summary() == {"idle": 10.0, "under_load": 17.0, "processes": 2, "per_process": {
        "100": {"idle": 10.0, "under_load": 12.0}, "101": {"idle": 0.0, "under_load": 5.0}}}


def test_the_ab_report_keeps_each_rounds_pair_beside_the_medians() -> None:
    from tools.bench.latency.ab import _ratios

    rounds = [{"A": {"cpu_ms_per_json": 1.0}, "B": {"cpu_ms_per_json": 0.9}, "A'": {"cpu_ms_per_json": 1.1}},
              {"A": {"cpu_ms_per_json": 2.0}, "B": {"cpu_ms_per_json": 2.2}, "A'": {"cpu_ms_per_json": 2.0}},
              {"A": {"cpu_ms_per_json": 1.0}, "B": {"cpu_ms_per_json": 1.0}, "A'": {"cpu_ms_per_json": 0.9}}]
    figure = _ratios(rounds)["cpu_ms_per_json"]
    assert figure["rounds"] == [[0.9, 1.1], [1.1, 1.0], [1.0, 0.9]]
    assert figure["B/A"] == 1.0 and figure["A'/A"] == 1.0 and figure["A"] == 1.0 and figure["B"] == 1.0
    assert figure["B/mean(A,A')"] == pytest.approx(2 * 1.0 / 1.9)  # rounds: 0.857, 1.1, 1.053


def test_a_per_chunk_figure_whose_control_cancels_its_base_leaves_that_round_out() -> None:
    """A per-chunk figure is the difference of two streams' costs: in a tiny run it can be negative, and once A' was
    exactly -A (CPU is counted in ticks), which divided by zero and lost the whole report."""
    from tools.bench.latency.ab import _ratios

    rounds = [{"A": {"cpu_us_per_chunk_paced": 10.0}, "B": {"cpu_us_per_chunk_paced": 5.0},
               "A'": {"cpu_us_per_chunk_paced": -10.0}},
              {"A": {"cpu_us_per_chunk_paced": 10.0}, "B": {"cpu_us_per_chunk_paced": 12.0},
               "A'": {"cpu_us_per_chunk_paced": 10.0}}]
    figure = _ratios(rounds)["cpu_us_per_chunk_paced"]
    assert figure["B/mean(A,A')"] == pytest.approx(1.2) and figure["B/A"] == pytest.approx(0.85)
    only_cancelling = _ratios(rounds[:1])["cpu_us_per_chunk_paced"]
    assert only_cancelling["B/A"] == 0.5 and only_cancelling["B/mean(A,A')"] != only_cancelling["B/mean(A,A')"]
