"""Structured logs: one JSON object per line by default, so log shippers need no parsing rules.

Every line written while a request is handled carries its ``request_id`` (the value of Envoy's ``x-request-id``,
so a bridge line and Envoy's access log line of one request share it). The id lives in a context variable bound
once per request (:func:`bind_request_id`): tasks the request starts inherit it, and nothing on the per-chunk
path has to pass it along. Lines from the standard library's loggers (aiohttp, grpc, asyncio) are rendered as
JSON too, with the same fields.

What is logged at info level is metadata only (ids, routes, statuses, durations, token counts): request and
response bodies never are, and every field of every line, the standard library's included, passes through the one
masking of credentials (redact.py) just before it is rendered, so a URL given with a password or a key quoted in an
error message is written masked whichever flag or path it came by.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from contextvars import ContextVar, Token

import structlog
from structlog.contextvars import bind_contextvars, reset_contextvars

from ..redact import mask

REQUEST_ID_HEADER = "x-request-id"
MAX_REQUEST_ID_LENGTH = 128


def configure_logging(level: str = "info", fmt: str = "json", *, worker: int | None = None) -> None:
    """``worker``: this process's index under ``serve --workers``, written into every line as ``worker``."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    # console: colours only for a terminal; a file or a pipe gets the same lines without escape codes
    renderer = (structlog.processors.JSONRenderer() if fmt == "json"
                else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty()))
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
    ]
    if worker is not None:
        shared.append(_WorkerField(worker))
    # the standard library's records (aiohttp, grpc, asyncio) get the same fields and the same renderer
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, mask_credentials, renderer]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, mask_credentials, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def mask_credentials(logger: object, method: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
    """A structlog processor, the last before rendering: every field of the line (the event's own words, a
    formatted traceback and the standard library's records included) through :func:`redact.mask`."""
    return {key: mask(value, key) for key, value in event.items()}


class _WorkerField:
    """A structlog processor: the worker's index on every line."""

    def __init__(self, index: int) -> None:
        self.index = index

    def __call__(self, logger: object, method: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
        event["worker"] = self.index
        return event


def clean_request_id(value: str | None) -> str | None:
    """A client's or Envoy's request id, if it is one worth logging: short printable ASCII without spaces (it
    is echoed in a response header and written into every log line, so nothing else is taken)."""
    if not value or len(value) > MAX_REQUEST_ID_LENGTH or not value.isascii() or not value.isprintable():
        return None
    if " " in value:
        return None
    return value


def new_request_id() -> str:
    """Envoy's format (a UUID4), so ids made here look like the ones Envoy makes. Built from the random bytes
    directly: ``str(uuid.uuid4())`` costs twice as much, on every request that comes without an id."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    digits = raw.hex()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def bind_request_id(request_id: str) -> Mapping[str, object]:
    """Binds ``request_id`` for every log line of the current context; give the result to
    :func:`unbind_request_id` when the request ends."""
    return bind_contextvars(request_id=request_id)


def unbind_request_id(tokens: Mapping[str, object]) -> None:
    reset_contextvars(**tokens)  # type: ignore[arg-type]


_SERVED_BY: ContextVar[dict[str, str] | None] = ContextVar("responses_bridge_served_by", default=None)


def watch_upstream() -> tuple[dict[str, str], Token[dict[str, str] | None]]:
    """A request starts: what :func:`note_upstream` says from here on (in this context and the tasks it starts)
    fills the returned dict, for its ``request_finished`` line and metrics. Give the token to
    :func:`unwatch_upstream` when it ends."""
    served: dict[str, str] = {}
    return served, _SERVED_BY.set(served)


def unwatch_upstream(token: Token[dict[str, str] | None]) -> None:
    _SERVED_BY.reset(token)


def note_upstream(name: str, mode: str) -> None:
    """The request being handled goes to the upstream ``name`` (its configured name), in ``mode``
    (``translate``, ``native`` or ``passthrough``); nothing when no request is watched."""
    served = _SERVED_BY.get()
    if served is not None:
        served["upstream"] = name
        served["mode"] = mode


def noted_upstream() -> str | None:
    """The upstream :func:`note_upstream` named for the request being handled, if any (its stored timing)."""
    served = _SERVED_BY.get()
    return served.get("upstream") if served else None


def noted_mode() -> str | None:
    """The mode :func:`note_upstream` gave the request being handled, if any."""
    served = _SERVED_BY.get()
    return served.get("mode") if served else None
