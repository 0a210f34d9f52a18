"""The figures of ``responses-bridge bench`` (bench.py) and its text report.

Absolute numbers from a shared machine drift from run to run; within one run the targets were measured
interleaved, so the report leads with what compares them: each door's added latency over its floor and over the
upstream, and the ratios of medians and of requests/s. A pair whose targets did not run (no ``--envoy``) is left
out.
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass, field
from typing import Any

ADDED = (("http", "http-floor"), ("http", "direct"), ("http-floor", "direct"),
         ("envoy", "envoy-floor"), ("envoy", "envoy-direct"), ("envoy", "direct"), ("envoy-floor", "envoy-direct"))
"""(target, baseline): the door over its floor, over the upstream; the floor itself over the upstream."""

RATIOS = (("http", "direct"), ("http", "http-floor"), ("http-floor", "direct"),
          ("envoy", "envoy-direct"), ("envoy", "envoy-floor"), ("envoy-floor", "envoy-direct"))
"""(target, baseline): median latency of the target / the baseline's, and requests/s likewise."""

FIRST_EVENT_ADDED = (("http", "direct"), ("http", "http-floor"), ("envoy", "envoy-direct"), ("envoy", "envoy-floor"))


@dataclass
class RssPeak:
    """The sidecar's resident memory: at rest (``idle``, by pid) and the highest seen under load, summed over its
    processes (``peak_sum``) and per process (``peak``). One process unless it runs workers."""

    idle: dict[int, float]
    peak: dict[int, float] = field(default_factory=dict)
    peak_sum: float = 0.0

    def __post_init__(self) -> None:
        self.peak = dict(self.idle)
        self.peak_sum = sum(self.idle.values())

    def probe(self, now: dict[int, float]) -> None:
        """Takes one reading (process_memory.tree_rss_mb's, by pid) into the peaks."""
        self.peak_sum = max(self.peak_sum, sum(now.values()))
        for pid, mb in now.items():
            self.peak[pid] = max(self.peak.get(pid, 0.0), mb)

    def summary(self) -> dict[str, Any]:
        return {"idle": sum(self.idle.values()), "under_load": self.peak_sum, "processes": len(self.peak),
                "per_process": {str(pid): {"idle": self.idle.get(pid, 0.0), "under_load": mb}
                                for pid, mb in self.peak.items()}}


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _figures(samples: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(samples), "p99_ms": _percentile(samples, 0.99)}


def _difference(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {"median_ms": a["median_ms"] - b["median_ms"], "p99_ms": a["p99_ms"] - b["p99_ms"]}


def summarise(args: argparse.Namespace, samples: dict[str, dict[str, list[float]]], kinds: list[str],
              throughput: dict[str, float], first_event: dict[str, list[float]], rss: RssPeak,
              sidecar_args: list[str]) -> dict[str, Any]:
    """``samples``: per target (in the order measured), per kind, the sequential latencies in ms."""
    latency = {name: {kind: _figures(s) for kind, s in by_kind.items()} for name, by_kind in samples.items()}
    added = {f"{a} over {b}": {kind: _difference(latency[a][kind], latency[b][kind]) for kind in kinds}
             for a, b in ADDED if a in latency and b in latency}
    ratios = {f"{a}/{b}": {kind: latency[a][kind]["median_ms"] / latency[b][kind]["median_ms"] for kind in kinds}
              for a, b in RATIOS if a in latency and b in latency}
    throughput_ratios = {f"{a}/{b}": throughput[a] / throughput[b]
                         for a, b in RATIOS if a in throughput and b in throughput}
    first: dict[str, Any] | None = None
    if first_event:
        figures = {name: _figures(s) for name, s in first_event.items()}
        first = {"header_delay_ms": args.header_delay, "requests": args.first_event_requests, "latency": figures,
                 "added": {f"{a} over {b}": _difference(figures[a], figures[b])
                           for a, b in FIRST_EVENT_ADDED if a in figures and b in figures}}
    return {"requests": args.requests, "chunks": args.chunks, "concurrency": args.concurrency,
            "replay": args.replay, "sidecar_args": sidecar_args, "kinds": kinds, "latency": latency,
            "added": added, "ratios": ratios, "requests_per_second": throughput,
            "throughput_ratios": throughput_ratios, "first_event": first, "sidecar_rss_mb": rss.summary()}


def print_report(results: dict[str, Any]) -> None:
    kinds = results["kinds"]
    what = f"replaying {results['replay']}" if results["replay"] else f"streams of {results['chunks']} chunks"
    sidecar = f"; sidecar: serve {' '.join(results['sidecar_args'])}" if results["sidecar_args"] else ""
    print(f"{results['requests']} sequential requests per target and kind; {what}{sidecar}")
    header = "".join(f"{kind + ' p50':>13}{kind + ' p99':>13}" for kind in kinds)
    rps = f"req/s@{results['concurrency']}" if results["requests_per_second"] else ""
    print(f"{'target':<14}{header}{rps:>12}")
    for name, by_kind in results["latency"].items():
        cells = "".join(f"{by_kind[k]['median_ms']:>13.2f}{by_kind[k]['p99_ms']:>13.2f}" for k in kinds)
        rate = results["requests_per_second"].get(name)
        print(f"{name:<14}{cells}{'' if rate is None else f'{rate:>12.0f}'}")
    print(f"\n{'added, ms: p50 (p99)':<28}" + "".join(f"{kind:>22}" for kind in kinds))
    for label, by_kind in results["added"].items():
        print(f"{label:<28}" + "".join(f"{v['median_ms']:>+12.2f} ({v['p99_ms']:>+7.2f})" for v in by_kind.values()))
    print(f"\n{'ratios (p50, req/s)':<28}" + "".join(f"{kind:>10}" for kind in kinds)
          + (f"{rps:>12}" if results["throughput_ratios"] else ""))
    for label, by_kind in results["ratios"].items():
        rate_ratio = results["throughput_ratios"].get(label)
        print(f"{label:<28}" + "".join(f"{'x' + format(r, '.2f'):>10}" for r in by_kind.values())
              + ("" if rate_ratio is None else f"{'x' + format(rate_ratio, '.2f'):>12}"))
    first = results["first_event"]
    if first:
        print(f"\nfirst SSE event of a stream whose upstream holds its headers {first['header_delay_ms']} ms "
              f"({first['requests']} per target), ms:")
        print(f"{'target':<14}{'p50':>10}{'p99':>10}")
        for name, v in first["latency"].items():
            print(f"{name:<14}{v['median_ms']:>10.2f}{v['p99_ms']:>10.2f}")
        for label, v in first["added"].items():
            print(f"added, {label}: {v['median_ms']:+.2f} (p99 {v['p99_ms']:+.2f})")
    rss = results["sidecar_rss_mb"]
    line = f"\nsidecar RSS: idle {rss['idle']:.1f} MB, under load {rss['under_load']:.1f} MB"
    if rss["processes"] > 1:
        each = ", ".join(f"{pid}: {v['idle']:.1f}/{v['under_load']:.1f}" for pid, v in rss["per_process"].items())
        line += f" (sum of {rss['processes']} processes; idle/under load per pid: {each})"
    print(line)
    if results.get("cost"):
        from .cost import print_costs

        print_costs(results["cost"], rounds=results["cost_rounds"], pace_ms=results["pace_ms"])
