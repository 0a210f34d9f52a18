"""``mode: auto`` upstreams, probed once when the sidecar starts (before either door opens).

Each ``auto`` upstream is asked what it supports (checks.py: a handful of tiny requests, each with a short
timeout, the whole probe bounded too); the result picks the mode it is served in (``native`` when it answers
``/v1/responses`` itself, else ``translate``) and the switches its answers call for, which apply as overrides
under its configured profile (Runtime.route_options). Every result is written to the probe cache
(cache.py), which ``config show`` prints. A probe that fails (nothing answers, or too slow) is a
warning, and that upstream is translated: Chat Completions is what every backend the bridge knows serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import structlog

from ..config.upstreams import ModelRoute, Router, UpstreamSpec
from . import cache as probe_cache
from .checks import ProbeError, ProbeReport, probe_upstream

log = structlog.get_logger("responses_bridge.probe")

REQUEST_TIMEOUT = 3.0  # seconds, one probe request
TOTAL_TIMEOUT = 20.0  # seconds, one upstream's whole probe


async def probe_auto_upstreams(router: Router, cache: Path | None) -> dict[str, ProbeReport | None]:
    """The probe of every ``auto`` upstream of ``router``, by name, run together; None for a failed one. Each
    result is kept in ``cache`` (the deployment's, cache.py; None: kept nowhere)."""
    auto = [spec for spec in router.upstreams.values() if spec.mode == "auto"]
    results = await asyncio.gather(*(_probe_one(spec, router, cache) for spec in auto))
    return {spec.name: report for spec, report in zip(auto, results, strict=True)}


async def _probe_one(spec: UpstreamSpec, router: Router, cache: Path | None) -> ProbeReport | None:
    authorization = router.authorization(spec, None)  # its configured key; a forwarding one probes without
    api_key = authorization.removeprefix("Bearer ") if authorization else None
    try:
        report = await asyncio.wait_for(
            probe_upstream(spec.url, model=probe_model(spec.name, router.models), api_key=api_key,
                           timeout=REQUEST_TIMEOUT), TOTAL_TIMEOUT)
    except (ProbeError, TimeoutError) as exc:
        log.warning("upstream_probe_failed", upstream=spec.name, url=spec.url, mode="translate",
                    error=str(exc) or type(exc).__name__)
        return None
    try:
        probe_cache.save(cache, report)
    except OSError as exc:  # a cache: the result still applies
        log.warning("probe_cache_not_written", path=str(cache), error=str(exc))
    log.info("upstream_probed", upstream=spec.name, url=spec.url, mode=report.mode, switches=dict(report.switches))
    return report


def probe_model(name: str, models: Sequence[ModelRoute]) -> str | None:
    """A model the upstream named ``name`` serves: the first route to it with an ``upstream_model``, or an exact
    ``match``; None (the first that the upstream lists) when its routes are all globs."""
    for route in models:
        if route.upstream == name and (route.upstream_model or not any(c in route.match for c in "*?[")):
            return route.upstream_model or route.match
    return None
