"""The multi-agent beta's request side: ``multi_agent: {enabled, max_concurrent_subagents}``.

OpenAI takes the field only on its beta surface — ``POST /v1/responses?beta=true`` with the header
``openai-beta: responses_multi_agent=v1`` (what ``client.beta.responses.create(betas=[…])`` sends). Anywhere else
the field stays a 400 ``unknown_parameter`` that says which of the two is missing, never a silent drop. The doors
say how a request came (:func:`beta_surface`); :func:`take_multi_agent` judges the field and
removes it from the raw body before the fields OpenAI's non-beta request defines are walked.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import invalid_request

FIELD = "multi_agent"
BETA_HEADER = "openai-beta"
BETA_VALUE = "responses_multi_agent=v1"
OPEN_RESPONSES_VERSION_HEADER = "openresponses-version"
"""Sent by Open Responses clients (any value): their streams name events as the spec does (engine/event_frames.py)."""
DEFAULT_MAX_CONCURRENT = 6
MAX_CONCURRENT_LIMIT = 64
"""The most subagents one response may run at once, whatever the request asks: each holds upstream calls."""


@dataclass(frozen=True, slots=True)
class MultiAgentConfig:
    """A request's multi-agent set-up, checked: ``enabled`` and its concurrency bound."""

    enabled: bool
    max_concurrent_subagents: int = DEFAULT_MAX_CONCURRENT


@dataclass(frozen=True, slots=True)
class BetaSurface:
    """How a request came: with ``?beta=true`` (``query``), with ``openai-beta`` naming the multi-agent beta
    (``header``). Only both together are the beta surface. ``open_responses``: the request named an Open Responses
    spec version (its stream's events then get the spec's names where they differ from the SDK's)."""

    query: bool = False
    header: bool = False
    open_responses: bool = False

    @property
    def on(self) -> bool:
        return self.query and self.header

    def missing(self) -> str:
        """What the request lacks, for its 400."""
        lacking = [what for what, there in (("the query '?beta=true'", self.query),
                                            (f"the header '{BETA_HEADER}: {BETA_VALUE}'", self.header)) if not there]
        return " and ".join(lacking)


NOT_BETA = BetaSurface()


def beta_surface(query: Mapping[str, str], headers: Mapping[str, str]) -> BetaSurface:
    """The request's :class:`BetaSurface`: ``?beta=true`` and ``openai-beta`` naming ``responses_multi_agent=v1``
    (the header may list several betas, comma-separated). A request naming none of the three (nearly every one)
    gets the shared :data:`NOT_BETA`, nothing made for it."""
    named = headers.get(BETA_HEADER) or ""
    if not named and not query and not headers.get(OPEN_RESPONSES_VERSION_HEADER):
        return NOT_BETA
    return BetaSurface(query=str(query.get("beta", "")).lower() == "true",
                       header=BETA_VALUE in (part.strip() for part in named.split(",")),
                       open_responses=bool(headers.get(OPEN_RESPONSES_VERSION_HEADER)))


def query_of(path: str) -> dict[str, str]:
    """The query parameters of a request path (``/v1/responses?beta=true``), the last of a repeated name."""
    _, _, query = path.partition("?")
    found: dict[str, str] = {}
    if not query:
        return found
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if name:
            found[name] = value
    return found


def take_multi_agent(raw: dict[str, Any], *, beta: BetaSurface) -> MultiAgentConfig | None:
    """Remove ``multi_agent`` from ``raw`` and return it checked (None when absent or null). Raises the 400 for
    the field off the beta surface or of a wrong shape."""
    if FIELD not in raw:
        return None
    value = raw.pop(FIELD)
    if not beta.on:
        raise invalid_request(
            "Unknown parameter: 'multi_agent'. Multi-agent is a beta: send it to POST /v1/responses?beta=true "
            f"with the header '{BETA_HEADER}: {BETA_VALUE}' (this request lacks {beta.missing()}).",
            param=FIELD, code="unknown_parameter")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_request("Invalid type for 'multi_agent': expected an object.", param=FIELD,
                              code="invalid_type")
    for key in value:
        if key not in ("enabled", "max_concurrent_subagents"):
            raise invalid_request(f"Unknown parameter: 'multi_agent.{str(key)[:100]}'.",
                                  param=f"multi_agent.{str(key)[:100]}", code="unknown_parameter")
    enabled = value.get("enabled")
    if not isinstance(enabled, bool):
        raise invalid_request("Missing or invalid 'multi_agent.enabled': expected a boolean.",
                              param="multi_agent.enabled", code="invalid_type")
    limit = value.get("max_concurrent_subagents")
    if limit is None:
        limit = DEFAULT_MAX_CONCURRENT
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_CONCURRENT_LIMIT:
        raise invalid_request(
            f"Invalid 'multi_agent.max_concurrent_subagents': expected an integer from 1 to {MAX_CONCURRENT_LIMIT}.",
            param="multi_agent.max_concurrent_subagents", code="invalid_value")
    return MultiAgentConfig(enabled=enabled, max_concurrent_subagents=limit)
