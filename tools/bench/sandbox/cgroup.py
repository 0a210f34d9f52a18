"""``scripts/bench cgroup``: what a call's cgroup costs. The same sandbox's calls (``print(1)``) with their cgroup
(made, joined, limits set, removed) and without one (the same bubblewrap command, no cgroup), interleaved in one
run so that the machine's load weighs on both alike; milliseconds per call (median) and the ratio."""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from responses_bridge.sandbox import Sandbox, SandboxLimits


async def _timed(sandbox: Sandbox) -> float:
    started = time.perf_counter()
    result = await sandbox.run("print(1)")
    if result.outcome != "ok":
        raise SystemExit(f"a call failed: {result.outcome} {result.stderr[-300:]}")
    return time.perf_counter() - started


async def _bench(runs: int) -> int:
    with_cgroup = Sandbox.detect(SandboxLimits(timeout=30.0))
    if with_cgroup.unavailable is not None or with_cgroup.cgroups is None:
        print(f"no cgroup per call here ({with_cgroup.unavailable or with_cgroup.no_cgroup}): nothing to compare")
        return 1
    without = Sandbox(with_cgroup.limits, with_cgroup.bwrap, identity=with_cgroup.identity,
                      proc_refused=with_cgroup.proc_refused)
    without.seccomp = with_cgroup.seccomp  # the same filter: the one difference is the cgroup
    without.mode = "cgroup"  # the same address-space limit too
    times: dict[str, list[float]] = {"cgroup": [], "none": []}
    for _ in range(3):  # warm both
        await _timed(with_cgroup)
        await _timed(without)
    for _ in range(runs):
        times["cgroup"].append(await _timed(with_cgroup))
        times["none"].append(await _timed(without))
    cgroup_ms, none_ms = (statistics.median(times[key]) * 1000 for key in ("cgroup", "none"))
    print(f"cgroups: {with_cgroup.cgroups.description}")
    print(f"print(1) per call, median of {runs}: with its cgroup {cgroup_ms:.1f} ms, without {none_ms:.1f} ms; "
          f"the cgroup costs {cgroup_ms - none_ms:.1f} ms a call (ratio {cgroup_ms / none_ms:.2f})")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench cgroup", description=__doc__)
    parser.add_argument("--runs", type=int, default=40)
    return asyncio.run(_bench(parser.parse_args().runs))


if __name__ == "__main__":
    raise SystemExit(main())
