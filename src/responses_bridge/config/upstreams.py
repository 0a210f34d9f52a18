"""Several upstreams and the models routed to them: the ``upstreams``, ``models`` and ``default_upstream`` keys.

A deployment names its backends (``upstreams``), says which model names go to which (``models``: an exact name or
a glob, in order), and may name one backend for every other model (``default_upstream``). Each request is routed
by its ``model``: the :class:`Router` picks the upstream, the model name to send it (``upstream_model``), and the
credentials (``api_key_env``, a literal ``api_key``, or ``api_key: forward`` for the client's own). Without any
``upstreams`` the single ``--upstream`` URL serves every model, exactly as before (:func:`single_upstream`).

These are settings (read once at start), so they are pydantic models; routing a request is a dict lookup and, for
globs, one ``fnmatchcase`` per pattern.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from fnmatch import fnmatchcase
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from ..engine.responses.profiles import GENERIC, SWITCHES, ProfileSwitches
from ..protocol.errors import APIError

Mode = Literal["translate", "native", "auto"]
Picking = Literal["cache", "round_robin", "least_request"]
"""How a request is sent to one of an upstream's replicas (replicas/picker.py): ``cache`` where its chain or its
prompt's prefix is warm, balanced by load; ``round_robin`` and ``least_request`` for comparison, or for operators
who want them."""
Discover = Literal["none", "dns"]
Profile = Literal["vllm", "ollama", "llamacpp", "openai", "generic"]
FORWARD = "forward"
"""``api_key: forward``: the client's own ``Authorization`` goes upstream."""

SINGLE_UPSTREAM = "default"
"""The name the lone ``--upstream`` gets when no ``upstreams`` are configured."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_LISTED = 8
"""Model names and patterns a 404 lists, at most."""


class UpstreamSpec(BaseModel):
    """One backend. ``mode``: ``translate`` (Chat Completions), ``native`` (it serves ``/v1/responses`` itself),
    ``auto`` (probed at start)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="referenced by models[].upstream; also names its Envoy cluster")
    url: str = Field(description="base URL ending in /v1")  # with `urls` alone: their first (_urls_alone)
    # Replicas of this backend (replicas/): several servers of the same models; each request goes to one of them.
    urls: list[str] = Field(default=[], description=(
        "several base URLs serving the same models (replicas): each request is sent to one, picked where its chain "
        "or prompt prefix is cached, balanced by load (`picking`); `url`, when given too, must be one of them"))
    picking: Picking = Field(default="cache", description=(
        "how a request picks one of the replicas: `cache` (its chain's replica, else the warmest prefix, yielding "
        "to load past 1.5x the mean), `round_robin`, `least_request`"))
    discover: Discover = Field(default="none", description=(
        "`dns`: the host of `url` is resolved to all its addresses (a Kubernetes headless Service), each one a "
        "replica, re-resolved every `dns_refresh_seconds` while running"))
    dns_refresh_seconds: float = Field(default=10.0, gt=0, description=(
        "with `discover: dns`, seconds between two resolutions of the replicas' name"))
    mode: Mode = "translate"
    profile: Profile = "generic"
    api_key_env: str | None = None
    api_key: str | None = Field(default=None, repr=False)  # "forward", or a literal key
    # Profile switches set one by one for this upstream (engine/responses/profiles.py), over its profile's table.
    switches: dict[str, Any] = Field(default={}, description="profile switches over the profile, e.g. "
                                     "`{tool_result_role: user}`")
    stream_via_sidecar: bool | None = Field(default=None, description=(
        "through Envoy, send this upstream's streamed requests to the sidecar's HTTP door (its model call still "
        "goes through Envoy's cluster with `upstream_via`), so the client gets `response.created` before the "
        "model's first byte; unset: the deployment's `stream_via_sidecar`"))

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be 1-63 letters, digits, '_', '.' or '-', starting with a letter or digit")
        return value

    @field_validator("switches")
    @classmethod
    def _check_switches(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(SWITCHES))
        if unknown:
            raise ValueError(f"not a profile switch: {', '.join(unknown)}; switches are: {', '.join(SWITCHES)}")
        if value.get("tool_call_content", "") is None:
            value = {**value, "tool_call_content": "null"}  # ``tool_call_content: null`` in YAML reads as None
        checked = TypeAdapter(ProfileSwitches).validate_python({**asdict(GENERIC), **value})  # values, too
        return {name: getattr(checked, name) for name in value}

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return base_url(value) if value else value

    @field_validator("urls")
    @classmethod
    def _check_urls(cls, value: list[str]) -> list[str]:
        return base_urls(value, "urls")

    @model_validator(mode="before")
    @classmethod
    def _urls_alone(cls, data: Any) -> Any:
        """``urls`` without ``url``: ``url`` reads as the first replica, so whatever reads ``url`` (the probe,
        ``envoy-config``) finds one of them; neither given: ``url`` is missing, named as every missing key is."""
        if isinstance(data, dict) and "url" not in data and isinstance(data.get("urls"), list) and data["urls"]:
            return {**data, "url": data["urls"][0]}
        return data

    @model_validator(mode="after")
    def _replicas(self) -> UpstreamSpec:
        """``url`` alone is one replica, as always; ``urls`` lists every replica."""
        if self.url and self.urls and self.url not in self.urls:
            raise ValueError(f"`url` {self.url} is not one of `urls`: list every replica in `urls` alone")
        if self.discover == "dns" and len(self.urls) > 1:
            raise ValueError("`discover: dns` finds the replicas behind one name: give that one `url`, not `urls`")
        return self

    def replica_urls(self) -> list[str]:
        """Every replica's base URL as configured (``discover: dns`` adds what the name resolves to at run time)."""
        return list(self.urls) or [self.url]

    def replicated(self) -> bool:
        """Is a replica picked per request (several URLs, or a name resolved to its addresses)?"""
        return len(self.urls) > 1 or self.discover == "dns"


def base_url(value: str) -> str:
    """An upstream's base URL without its trailing slash; ValueError, saying what is expected, when it is not an
    http(s) URL (``localhost:8000/v1`` would otherwise fail only at the first request)."""
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")) or not value.split("://", 1)[1]:
        raise ValueError("must be an http:// or https:// URL, e.g. http://127.0.0.1:8000/v1")
    return value


def base_urls(value: list[str], key: str = "") -> list[str]:
    """Replicas' base URLs (:func:`base_url` each), none twice; the ValueError names the position (``key[i]``)."""
    checked: list[str] = []
    for index, url in enumerate(value):
        try:
            url = base_url(url)
        except ValueError as exc:
            raise ValueError(f"{key}[{index}]: {exc}") from None
        if url in checked:
            raise ValueError(f"{key}[{index}]: {url} is listed twice")
        checked.append(url)
    return checked


class ModelRoute(BaseModel):
    """Model names matching ``match`` (exact, or a glob with ``*``, ``?``, ``[...]``) go to ``upstream``, sent as
    ``upstream_model`` when given."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: str = Field(min_length=1)
    upstream: str
    upstream_model: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes."""

    upstream: UpstreamSpec
    upstream_model: str | None  # None: the client's model name is sent as it is


def check_references(upstreams: Sequence[UpstreamSpec], models: Sequence[ModelRoute],
                     default_upstream: str | None) -> None:
    """Raises ValueError naming the key when a name is repeated or a reference points nowhere."""
    names: set[str] = set()
    for index, spec in enumerate(upstreams):
        if spec.name in names:
            raise ValueError(f"upstreams[{index}].name: {spec.name!r} is used twice")
        names.add(spec.name)
    if not upstreams and (models or default_upstream):
        raise ValueError("models / default_upstream need a list of upstreams")
    for index, route in enumerate(models):
        if route.upstream not in names:
            raise ValueError(f"models[{index}].upstream: no upstream is named {route.upstream!r}")
    if default_upstream is not None and default_upstream not in names:
        raise ValueError(f"default_upstream: no upstream is named {default_upstream!r}")


def unrouted(upstreams: Sequence[UpstreamSpec], models: Sequence[ModelRoute],
             default_upstream: str | None) -> list[str]:
    """The upstreams no request can reach: no ``models`` entry names them and none is the ``default_upstream``."""
    reached = {route.upstream for route in models} | ({default_upstream} if default_upstream else set())
    return [spec.name for spec in upstreams if spec.name not in reached]


def single_upstream(url: str, api_key: str | None, urls: Sequence[str] = ()) -> UpstreamSpec:
    """The lone ``--upstream``: Chat Completions, its key or the client's; ``urls``: its replicas (``--upstream``
    given several times, ``upstream_urls``)."""
    if len(urls) > 1:
        return UpstreamSpec(name=SINGLE_UPSTREAM, url=urls[0], urls=list(urls), api_key=api_key)
    return UpstreamSpec(name=SINGLE_UPSTREAM, url=url, api_key=api_key)


def upstream_flag(given: Sequence[str] | None) -> dict[str, Any]:
    """``--upstream`` as settings: given once, the ``upstream``; given several times (replicas of the lone upstream),
    the first as ``upstream`` and all of them as ``upstream_urls``. Not given: nothing (the other sources decide)."""
    if not given:
        return {}
    if len(given) == 1:
        return {"upstream": given[0]}
    return {"upstream": given[0], "upstream_urls": list(given)}


def _is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


class Router:
    """Picks the route of a request from its model name. ``single``: the ``--upstream`` case (one upstream, every
    model, nothing renamed), which the doors and ``envoy-config`` keep exactly as it always was."""

    def __init__(self, upstreams: Sequence[UpstreamSpec], models: Sequence[ModelRoute],
                 default_upstream: str | None, *, single: bool = False) -> None:
        check_references(upstreams, models, default_upstream)
        self.single = single
        self.upstreams = {spec.name: spec for spec in upstreams}
        self._exact: dict[str, Route] = {}
        self._globs: list[tuple[str, Route]] = []
        for entry in models:
            route = Route(self.upstreams[entry.upstream], entry.upstream_model)
            if _is_glob(entry.match):
                self._globs.append((entry.match, route))
            else:
                self._exact.setdefault(entry.match, route)
        self.models = tuple(models)
        self._default = Route(self.upstreams[default_upstream], None) if default_upstream else None
        if single and upstreams:
            self._default = Route(upstreams[0], None)
        self._keys = {spec.name: _configured_key(spec) for spec in upstreams}

    def route(self, model: str | None) -> Route:
        """The route for ``model``: an exact ``match`` first, then the globs in order, then the default upstream;
        else a 404 ``model_not_found``."""
        if model:
            found = self._exact.get(model)
            if found is not None:
                return found
            for pattern, route in self._globs:
                if fnmatchcase(model, pattern):
                    return route
        if self._default is not None:
            return self._default
        if model:
            raise APIError(404, f"The model '{model}' does not exist or you do not have access to it: "
                           f"{self._failed_rule()}.", type="invalid_request_error", param="model",
                           code="model_not_found")
        raise APIError(400, "Missing required parameter: 'model'.", param="model", code="missing_required_parameter")

    def _failed_rule(self) -> str:
        """Which routing rule let a model through to no upstream, for its 404: the operator reads it in the
        client's error, and the client learns which names are served."""
        if not self.models:
            return ("this bridge routes no model to its upstreams (its `models` list is empty) and has no "
                    "`default_upstream`")
        shown = [*self.configured_models(), *(pattern for pattern, _ in self._globs)]
        listed = ", ".join(shown[:_LISTED]) + (f" and {len(shown) - _LISTED} more" if len(shown) > _LISTED else "")
        return f"no entry of this bridge's `models` matches it ({listed}) and it has no `default_upstream`"

    def authorization(self, upstream: UpstreamSpec, client_authorization: str | None) -> str | None:
        """The upstream's configured key, as a Bearer token; without one (or with ``api_key: forward``) the
        client's own ``Authorization``."""
        key = self._keys.get(upstream.name)
        return f"Bearer {key}" if key else client_authorization

    def configured_models(self) -> list[str]:
        """The exact model names of ``models`` (globs name no one model), in order, each once."""
        seen: dict[str, None] = {}
        for entry in self.models:
            if not _is_glob(entry.match):
                seen.setdefault(entry.match, None)
        return list(seen)


def _configured_key(spec: UpstreamSpec) -> str | None:
    if spec.api_key_env:
        value = os.environ.get(spec.api_key_env)
        if not value:
            raise ValueError(f"upstream {spec.name!r}: api_key_env names {spec.api_key_env}, which is not set")
        return value
    if spec.api_key and spec.api_key != FORWARD:
        return spec.api_key
    return None
