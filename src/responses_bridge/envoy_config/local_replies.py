"""Envoy's own replies (no healthy upstream, processor down, timeouts, 413) made OpenAI-shaped
``{"error": {...}}`` bodies; the processor's own immediate responses are recognised and left alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .names import _TYPE, IMMEDIATE_RESPONSE_DETAILS, UNSUPPORTED_ENCODING_STATUS, _host_port
from .timeouts import EnvoyTimeouts, shown

if TYPE_CHECKING:
    pass


def processor_place(address: str, port: int, *, uds: str | None = None, workers: int = 1) -> tuple[str, str]:
    """Where the bootstrap looks for the processor, and the ``serve`` flags that put it there: what a
    ``processor_unavailable`` answer names, as ``sidecar_unavailable`` names the HTTP door and ``--http-port``."""
    if uds is not None:
        where = f"unix:{uds}" + (f" (and {uds}.1 to .{workers - 1}, one per worker)" if workers > 1 else "")
        flags = f"--extproc-uds {uds}"
    else:
        where = _host_port(address, port) + (f" to {port + workers - 1}, one port per worker" if workers > 1 else "")
        flags = f"--extproc-port {port}"
    return where, flags + (f" --workers {workers}" if workers > 1 else "")


def _idle_message(seconds: float) -> str:
    """Envoy's ``stream_idle_timeout`` fired: which timeout, how long, its setting, and what to do instead."""
    return (f"Envoy ended this request after {shown(seconds)} in which nothing passed either way (its "
            "stream_idle_timeout: the bridge's envoy_stream_idle_timeout setting, envoy-config "
            "--stream-idle-timeout). A timeout, not an outage: for long work stream the response (stream: true) or "
            "run it in the background (background: true, then GET /v1/responses/{id}), or raise the setting; a "
            "stored response that was cut is recorded as failed.")


def _literal(text: str) -> str:
    """``text`` inside an Envoy format string, where ``%`` starts a command."""
    return text.replace("%", "%%")


def _local_reply_config(sidecar: tuple[str, int], processor: tuple[str, str] = ("", ""),
                        timeouts: EnvoyTimeouts | None = None) -> dict[str, Any]:
    """Envoy's own replies as OpenAI-shaped errors; the processor's immediate responses pass untouched. A 5xx on
    the route to the sidecar's HTTP door names that door (``sidecar``: address and port), not the model server: it
    is what a wrong ``--http-port`` looks like. A processor failure names where the bootstrap looked for it and
    the flags ``serve`` needs for that (``processor``: :func:`processor_place`). A timeout of Envoy's says which
    one fired, its setting, and what to do instead (``timeouts``): it must not read as the sidecar being down."""
    timeouts = timeouts or EnvoyTimeouts()
    sidecar_host, sidecar_port = sidecar
    door = _literal(_host_port(sidecar_host, sidecar_port))
    processor_where, processor_flags = (_literal(part) for part in processor)
    processor_message = (
        f"The Responses API processor (the responses-bridge sidecar's ext_proc door at {processor_where}) is "
        f"unavailable (%RESPONSE_CODE_DETAILS%): is `responses-bridge serve` running, ready, with {processor_flags}?"
        if processor_where else "The Responses API processor is unavailable (%RESPONSE_CODE_DETAILS%).")
    not_ours = {"extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
            "expression": f"!response.code_details.startsWith('{IMMEDIATE_RESPONSE_DETAILS}')",
        },
    }}
    processor_failed = {"extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
            "expression": "response.code_details.startsWith('ext_proc_error')",
        },
    }}

    def mapper(filters: list[dict[str, Any]], message: str, kind: str, code: str) -> dict[str, Any]:
        return {
            "filter": {"and_filter": {"filters": [not_ours, *filters]}},
            "body_format_override": {
                "json_format": {"error": {"message": message, "type": kind, "param": None, "code": code}},
                "content_type": "application/json",
            },
        }

    def status(op: str, value: int) -> dict[str, Any]:
        return {"status_code_filter": {"comparison": {
            "op": op, "value": {"default_value": value, "runtime_key": f"responses_bridge.local_reply.{op}{value}"},
        }}}

    late_reset = {"extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
            "expression": "response.code_details.startsWith('upstream_reset_after_response_started')",
        },
    }}
    sidecar_route = {"extension_filter": {
        "name": "envoy.access_loggers.extension_filters.cel",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
            "expression": "xds.route_name.startsWith('sidecar')",
        },
    }}

    def details(prefix: str) -> dict[str, Any]:
        return {"extension_filter": {
            "name": "envoy.access_loggers.extension_filters.cel",
            "typed_config": {
                "@type": _TYPE + "envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter",
                "expression": f"response.code_details.startsWith('{prefix}')",
            },
        }}

    return {"mappers": [
        # before the route's own mappers: an idle request to the HTTP door (a long tool loop, not streamed) is cut
        # by a timeout, not by a door that is down
        mapper([details("stream_idle_timeout"), status("GE", 500)], _idle_message(timeouts.stream_idle),
               "server_error", "gateway_timeout"),
        mapper([details("ext_proc_error_per-message_timeout"), status("GE", 500)],
               f"The Responses API processor did not answer Envoy within {shown(timeouts.message)} (the ext_proc "
               "message_timeout: the bridge's envoy_message_timeout setting, envoy-config --message-timeout). The "
               "sidecar is overloaded or stuck, or the setting is lower than its work needs.", "server_error",
               "processor_timeout"),
        mapper([sidecar_route, status("GE", 500)],
               f"The responses-bridge sidecar's HTTP door at {door} did not answer "
               f"(%RESPONSE_CODE_DETAILS%): is `responses-bridge serve` running with --http-port {sidecar_port}?",
               "server_error", "sidecar_unavailable"),
        mapper([processor_failed, status("GE", 500)], processor_message, "server_error", "processor_unavailable"),
        mapper([late_reset, status("GE", 500)],
               "The upstream model server dropped the connection before its answer was complete "
               "(%RESPONSE_CODE_DETAILS%).", "server_error", "upstream_disconnected"),
        mapper([status("GE", 500)], "%LOCAL_REPLY_BODY% (%RESPONSE_CODE_DETAILS%)", "server_error",
               "gateway_error"),
        mapper([status("EQ", 413)], "The request body is too large.", "invalid_request_error",
               "request_too_large"),
        # the same answers as the HTTP door's (adapters/http/errors.py, parser_errors.py)
        mapper([status("EQ", UNSUPPORTED_ENCODING_STATUS)], "This Content-Encoding is not supported: send the "
               "request body uncompressed.", "invalid_request_error", "unsupported_content_encoding"),
        mapper([details("request_header_timeout"), status("EQ", 408)],
               f"The request headers did not arrive within {shown(timeouts.request_headers)} "
               "(RESPONSES_BRIDGE_HTTP_HEAD_TIMEOUT).", "invalid_request_error", "request_timeout"),
        mapper([status("EQ", 431)], "The request line or headers are larger than this server accepts.",
               "invalid_request_error", "request_header_fields_too_large"),
        mapper([details("path_normalization_failed"), status("EQ", 400)], "The request path is not valid.",
               "invalid_request_error", "invalid_path"),
        mapper([details("http1."), status("EQ", 400)], "The request is not valid HTTP (%RESPONSE_CODE_DETAILS%).",
               "invalid_request_error", "invalid_http_request"),
        mapper([status("GE", 400)], "%LOCAL_REPLY_BODY% (%RESPONSE_CODE_DETAILS%)", "invalid_request_error",
               "invalid_request"),
    ]}
