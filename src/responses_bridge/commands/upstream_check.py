"""The upstreams a deployment serves, as an operator sees them, and the check of each one at start.

One description of every configured upstream (name, URL, mode, profile, and where it was configured) feeds the
``serving`` log line, ``config show`` and the start check, so none of them names an upstream that is not used
(the ``--upstream`` default beside an ``upstreams:`` list) or a setting the operator never touched.

The start check is one ``GET {url}/models`` per upstream, in the background: a dead upstream, or one answering
404 there (a base URL without ``/v1``, or one ending in ``/chat/completions``), is reported now in the log,
naming the upstream, where it was configured and the likely fix, instead of by every client's 502 or 404 later.
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import dataclass
from typing import Any

import structlog

from ..config.settings import Settings, env_names
from ..config.upstreams import unrouted
from ..net.errors import connection_error

log = structlog.get_logger("responses_bridge.serve")

PROBE_TIMEOUT_SECONDS = 5.0
COMPLETIONS_PATH = "/chat/completions"


@dataclass(frozen=True, slots=True)
class UpstreamEntry:
    """One upstream as the operator configured it. ``configured``: where to change it (a flag, a variable, a
    key of the configuration file); ``api_key``: the key the check sends (None: none configured)."""

    name: str
    url: str
    mode: str
    profile: str
    configured: str
    api_key: str | None = None

    def described(self) -> dict[str, str]:
        """The fields the log line and ``config show`` print (never the key)."""
        return {"name": self.name, "url": self.url, "mode": self.mode, "profile": self.profile}


def configured_upstreams(settings: Settings, *, config_path: str | None = None,
                         flag_given: bool = False) -> list[UpstreamEntry]:
    """Every upstream the settings serve: the ``upstreams`` list when there is one, else the lone ``upstream``
    (named ``default``). ``config_path``: the configuration file in effect; ``flag_given``: ``--upstream`` was
    on the command line. Raises ValueError as :meth:`Settings.router` does (an unset ``api_key_env``)."""
    router = settings.router()
    if router.single:
        spec = next(iter(router.upstreams.values()))
        return [UpstreamEntry(spec.name, spec.url, spec.mode, settings.profile,
                              _origin("upstream", "--upstream", config_path, flag_given), settings.api_key)]
    where = _origin("upstreams", None, config_path, False)
    entries = []
    for index, spec in enumerate(settings.upstreams):
        authorization = router.authorization(spec, None)
        entries.append(UpstreamEntry(spec.name, spec.url, spec.mode, spec.profile, f"upstreams[{index}] in {where}",
                                     authorization.removeprefix("Bearer ") if authorization else None))
    return entries


@dataclass(frozen=True, slots=True)
class Routing:
    """What the ``models`` routes leave out. ``unreached``: the upstreams no request can reach; ``error``: the line
    that stops the start when that is every one of them (every request would be a 404), else None."""

    unreached: list[str]
    error: str | None


def check_routing(settings: Settings, *, config_path: str | None = None) -> Routing:
    """Upstreams configured with no route to them: without ``models`` naming them or a ``default_upstream``, the
    bridge would start cleanly and answer every request with a 404 about the model, not the routing."""
    if not settings.upstreams:
        return Routing([], None)
    unreached = unrouted(settings.upstreams, settings.models, settings.default_upstream)
    if len(unreached) < len(settings.upstreams):
        return Routing(unreached, None)
    origin = _origin("upstreams", None, config_path, False)
    first = unreached[0]
    if origin.startswith("the configuration file "):
        where = origin.removeprefix("the configuration file ")
        fix = f"set default_upstream: {first}, or add models entries ({{match: '*', upstream: {first}}})"
    else:
        where = origin
        fix = (f"set default_upstream (RESPONSES_BRIDGE_DEFAULT_UPSTREAM={first}), or add models entries "
               f"(RESPONSES_BRIDGE_MODELS='{json.dumps([{'match': '*', 'upstream': first}])}')")
    several = len(unreached) > 1
    return Routing(unreached, f"{where}: no model is routed to the upstream{'s' if several else ''} "
                   f"{', '.join(map(repr, unreached))}, so every request would be a 404 model_not_found: {fix}")


def _origin(field: str, flag: str | None, config_path: str | None, flag_given: bool) -> str:
    """Where ``field``'s value came from, by the settings' own precedence: flag > environment > file > default."""
    if flag is not None and flag_given:
        return flag
    for name in env_names(field):
        if os.environ.get(name):
            return name
    if config_path and _file_sets(config_path, field):
        return f"the configuration file {config_path}"
    names = " / ".join([*([flag] if flag else []), *env_names(field)])
    return f"the default (set it with {names})"


def _file_sets(path: str, field: str) -> bool:
    import yaml

    try:
        with open(path, encoding="utf-8") as file:
            data = yaml.safe_load(file)
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and field in data


def wrong_path_hint(url: str) -> str:
    """The likely fix for an upstream that answers 404 where the models list should be."""
    if url.endswith(COMPLETIONS_PATH):
        return (f"the upstream URL is a base URL, not an endpoint: drop {COMPLETIONS_PATH} "
                f"({url.removesuffix(COMPLETIONS_PATH)})")
    if not url.endswith("/v1"):
        return f"does the URL end in /v1? (most servers want {url}/v1)"
    return "does the URL end in /v1? the server has no models list at this base URL"


async def check_upstreams(entries: list[UpstreamEntry], timeout: float = PROBE_TIMEOUT_SECONDS) -> dict[str, str]:
    """Check every upstream together; by name, what was found: ``reachable``, ``not_found`` or ``unreachable``."""
    results = await asyncio.gather(*(check_upstream(entry, timeout) for entry in entries))
    return {entry.name: result for entry, result in zip(entries, results, strict=True)}


async def check_upstream(entry: UpstreamEntry, timeout: float = PROBE_TIMEOUT_SECONDS) -> str:
    """``GET {url}/models`` once. Any HTTP answer but 404 (even 401) means the upstream is there; a 404 means
    requests will get the upstream's 404 too, and is an error naming the fix."""
    import aiohttp

    url = f"{entry.url}/models"
    headers = {"Authorization": f"Bearer {entry.api_key}"} if entry.api_key else {}
    context: dict[str, Any] = {"upstream": entry.name, "url": url, "mode": entry.mode}
    try:
        async with (aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
                    session.get(url, headers=headers) as response):
            status = response.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        log.warning("upstream_unreachable", **context, error=connection_error(exc),
                    hint=f"check {entry.configured}; requests to it will fail with 502 until it answers")
        return "unreachable"
    if status == 404:
        log.error("upstream_not_found", **context, status=status,
                  hint=f"{wrong_path_hint(entry.url)}; set in {entry.configured}; requests to it will fail with the "
                       "upstream's 404 until it is fixed")
        return "not_found"
    log.info("upstream_reachable", **context, status=status)
    return "reachable"
