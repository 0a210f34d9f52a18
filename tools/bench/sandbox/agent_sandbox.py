"""``scripts/bench agent-sandbox``: what running a call in an agent-sandbox pod costs against bubblewrap on this host,
on the same calls, in this process (the sandbox backends only: no doors, no store).

- ``bubblewrap``: the default backend (:class:`~responses_bridge.sandbox.Sandbox`), one namespace per call;
- ``pods, warm``: the ``agent-sandbox`` backend against the fake Kubernetes API with stand-in pods started ahead (a
  SandboxWarmPool with ready pods: the claim is bound at once);
- ``pods, cold``: the same with no pod started ahead (each claim waits for its stand-in pod to start).

Each call is ``print('ok')`` (``print``) or one that writes a 100 kB file the call then collects (``file``); runs
are interleaved one by one so a slow patch of the shared machine hits each alike. Reported per backend: the median
time from asking for a call to its first output (claim-to-first-output), and the median whole call (claim, run,
files back, claim deleted), with ratios to bubblewrap — the figures that carry between machines; the milliseconds
do not. The stand-in pod runs its processes in bubblewrap too, so the ratio is the price of the claim, the API
round trips and the file transfers, not of gVisor (which a real cluster adds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

from responses_bridge.config.settings import Settings
from responses_bridge.sandbox import Sandbox, SandboxLimits
from responses_bridge.sandbox.backend import SandboxBackend

from ...fakes.cluster import fake_cluster

CALLS = {"print": "print('ok')", "file": "open('out.txt', 'w').write('x' * 100_000)\nprint('ok')"}
CRDS = Path(__file__).resolve().parents[3] / "tests" / "deploy" / "crds" / "agent-sandbox-2fd412d.yaml"


async def _one(backend: SandboxBackend, code: str) -> tuple[float, float, float]:
    """(seconds to first output, seconds for the whole call, seconds of them the claim took) of one call."""
    asked = time.monotonic()
    async with backend.call() as call:
        result = await call.run(code)
        assert result.outcome == "ok" and result.stdout == "ok\n", result
        first = getattr(call, "first_output", None) or result.finished or time.monotonic()
        claimed = float(getattr(call, "claimed_in", 0.0))
    return first - asked, time.monotonic() - asked, claimed


@contextlib.asynccontextmanager
async def _pods(warm: int, limits: SandboxLimits) -> AsyncIterator[SandboxBackend]:
    """The agent-sandbox backend over a fake cluster of its own (``warm`` pods started ahead)."""
    from responses_bridge.sandbox.agent_sandbox.backend import AgentSandboxBackend

    async with fake_cluster(CRDS, warm=warm) as cluster:
        settings = Settings.model_validate({**{key.removeprefix("RESPONSES_BRIDGE_").lower(): value
                                               for key, value in cluster.settings.items()},
                                            "agent_sandbox_python": "python3"})
        backend = AgentSandboxBackend.from_settings(settings, limits)
        await backend.start()
        try:
            yield backend
        finally:
            await backend.close()


Medians = dict[str, dict[str, tuple[float, float, float]]]


async def measure(runs: int) -> Medians:
    limits = SandboxLimits(timeout=30, concurrency=1)
    bubblewrap = await asyncio.to_thread(Sandbox.detect, limits, prove=False)
    if bubblewrap.unavailable:
        raise SystemExit(f"bubblewrap cannot run here: {bubblewrap.unavailable}")
    found: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    async with _pods(2, limits) as warm, _pods(0, limits) as cold:
        backends: dict[str, SandboxBackend] = {"bubblewrap": bubblewrap, "pods, warm": warm, "pods, cold": cold}
        for name, code in CALLS.items():
            for backend in backends.values():  # one unmeasured call each: imports, connections, caches
                await _one(backend, code)
            for _ in range(runs):
                for label, backend in backends.items():
                    found.setdefault(name, {}).setdefault(label, []).append(await _one(backend, code))
    return {name: {label: (statistics.median(x[0] for x in samples), statistics.median(x[1] for x in samples),
                           statistics.median(x[2] for x in samples))
                   for label, samples in by_backend.items()} for name, by_backend in found.items()}


def report(results: Medians, runs: int) -> str:
    lines = [f"median of {runs} calls each, interleaved; ratios to bubblewrap on the same call", ""]
    for name, by_backend in results.items():
        base_first, base_whole, _ = by_backend["bubblewrap"]
        lines.append(f"{name}: {CALLS[name]!r}")
        for label, (first, whole, claim) in by_backend.items():
            lines.append(f"  {label:<11} to first output {first * 1000:7.1f} ms ({first / base_first:5.2f}x)   "
                         f"whole call {whole * 1000:7.1f} ms ({whole / base_whole:5.2f}x)"
                         + (f"   of which the claim {claim * 1000:6.1f} ms" if claim else ""))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="scripts/bench agent-sandbox", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args(argv)
    print(report(asyncio.run(measure(args.runs)), args.runs))


if __name__ == "__main__":
    main()
