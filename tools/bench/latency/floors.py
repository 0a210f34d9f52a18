"""The floor of the stack for ``responses-bridge bench``: a proxy and an ext_proc processor that do nothing.

Part of what each door of the bridge adds over calling the upstream directly is not the bridge's work but the
price of the hop itself: one more Python process that parses HTTP and writes every chunk again (the HTTP door),
or one gRPC round trip per message between Envoy and a ``grpc.aio`` processor (the ext_proc door). No change to
the bridge can remove that price, so the benchmark measures it and reports each door against it:

* ``http-proxy``: an aiohttp server that sends the request's body to the upstream's ``/chat/completions`` and
  streams the answer back chunk by chunk as it comes, parsing nothing. The HTTP door's floor: same framework,
  same client settings as the sidecar's upstream client (adapters/upstream_client.py), no translation.
* ``noop-extproc``: a ``grpc.aio`` ``ExternalProcessor`` with the sidecar's server options and its gRPC health
  service, which changes nothing: an empty ``CommonResponse`` (CONTINUE) to every message. In
  ``FULL_DUPLEX_STREAMED`` (the response body mode the bootstrap renders) Envoy passes no body chunk on by
  itself: the processor sends every byte the client gets, so a chunk is answered with itself
  (``streamed_response``), as the sidecar's servicer answers a response it does not translate. (An empty
  reply to a body chunk in that mode is refused: Envoy 1.40 answers the client 503, ``spurious_message``.)
* :func:`add_floor_listener`: the bootstrap's client-facing listener again, on a port of its own, with its
  ext_proc filter pointed at the no-op processor. Same filters, processing mode and routes as the one
  ``render_bootstrap`` makes for users: a Chat Completions body POSTed to its ``/v1/responses`` passes the filter
  unchanged and the route sends it to the upstream's ``/chat/completions``. The ext_proc door's floor.

Each server runs in its own process, as the sidecar does::

    python -m tools.bench.latency.floors http-proxy --port P --upstream http://127.0.0.1:U/v1
    python -m tools.bench.latency.floors noop-extproc --port P   # or --uds PATH
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import grpc
from aiohttp import web
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from responses_bridge.adapters.extproc import service as external_processor_pb2_grpc
from responses_bridge.adapters.extproc.messages import CONTINUE_BY_PHASE, FULL_DUPLEX_STREAMED, streamed_body
from responses_bridge.adapters.extproc.server import server_options
from responses_bridge.config.settings import field_default
from responses_bridge.envoy_config import EXTPROC_CLUSTER, EXTPROC_SERVICE
from responses_bridge.process import event_loop

FLOOR_LISTENER = "responses_bridge_floor"
FLOOR_EXTPROC_CLUSTER = "responses_bridge_floor_extproc"

# ------------------------------------------------------------------------------------------------ http-proxy

_UPSTREAM = web.AppKey("floor_upstream", str)
_SESSION = web.AppKey("floor_session", aiohttp.ClientSession)


def proxy_app(upstream: str) -> web.Application:
    """The HTTP floor: ``POST /v1/chat/completions`` (any POST path, in fact) forwarded to
    ``<upstream>/chat/completions``; ``GET /health`` for the benchmark's readiness wait."""
    app = web.Application(client_max_size=int(field_default("max_request_bytes")))
    app[_UPSTREAM] = upstream.rstrip("/") + "/chat/completions"
    app.cleanup_ctx.append(_client_session)
    app.router.add_get("/health", _health)
    app.router.add_post("/{path:.*}", _forward)
    return app


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    # as the sidecar's upstream client: no pool limit, bytes forwarded as they come (never re-inflated)
    connector = aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                     timeout=aiohttp.ClientTimeout(total=None),
                                     skip_auto_headers=("Accept-Encoding", "User-Agent")) as session:
        app[_SESSION] = session
        yield


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _forward(request: web.Request) -> web.StreamResponse:
    """The request's body upstream, the answer's status, type and bytes back, each chunk written as it comes."""
    body = await request.read()
    headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
    async with request.app[_SESSION].post(request.app[_UPSTREAM], data=body, headers=headers) as upstream:
        response = web.StreamResponse(status=upstream.status)
        response.headers["Content-Type"] = upstream.headers.get("Content-Type", "application/octet-stream")
        if upstream.content_length is not None:  # a JSON answer keeps its length; a stream stays chunked
            response.content_length = upstream.content_length
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
    await response.write_eof()
    return response


def run_proxy(host: str, port: int, upstream: str) -> None:
    """Serves until SIGTERM, with the HTTP door's runner settings (adapters/http/server.py)."""
    web.run_app(proxy_app(upstream), host=host, port=port, access_log=None, handler_cancellation=True,
                backlog=1024, reuse_address=True, print=None, loop=event_loop.new_loop_from_environment())


# ---------------------------------------------------------------------------------------------- noop-extproc


class NoopProcessor(external_processor_pb2_grpc.ExternalProcessorServicer):
    """Changes nothing, answers at once: what any processor costs Envoy in this processing mode."""

    async def Process(self, request_iterator: object, context: grpc.aio.ServicerContext) -> None:
        read, write = context.read, context.write  # as the sidecar's servicer reads and writes its stream
        full_duplex = False
        while True:
            request = await read()
            if request is grpc.aio.EOF:  # type: ignore[attr-defined]  # grpc exports it; grpc-stubs lack it
                return
            phase = request.WhichOneof("request")
            if phase == "response_body" and full_duplex:
                body = request.response_body
                await write(streamed_body(body.body, body.end_of_stream))
                continue
            if request.HasField("protocol_config"):  # the first message names the modes
                full_duplex = request.protocol_config.response_body_mode == FULL_DUPLEX_STREAMED
            await write(CONTINUE_BY_PHASE[phase])


async def serve_noop(address: str) -> None:
    """``address``: ``host:port`` or ``unix:PATH``. Serves until the process is stopped."""
    server, _ = await start_noop(address)
    await server.wait_for_termination()


async def start_noop(address: str) -> tuple[grpc.aio.Server, int]:
    """The no-op processor and the gRPC health service, started on ``address`` (port 0: any free port);
    returns the server and its bound port."""
    server = grpc.aio.server(options=server_options(int(field_default("max_request_bytes"))))
    external_processor_pb2_grpc.add_ExternalProcessorServicer_to_server(NoopProcessor(), server)
    health_servicer = health.aio.HealthServicer()  # type: ignore[attr-defined]  # at run time; not in the stubs
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for service in ("", EXTPROC_SERVICE):  # Envoy health-checks the processor's cluster, as the sidecar's
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    bound = server.add_insecure_port(address)
    if not bound:
        raise OSError(f"the no-op processor could not listen on {address}")
    await server.start()
    return server, bound


# -------------------------------------------------------------------------------------------- Envoy listener


def processor_address(*, port: int | None = None, uds: str | None = None) -> dict[str, Any]:
    """The no-op processor's address as an Envoy ``Address``: a loopback port or a Unix socket (``uds``)."""
    if uds is not None:
        return {"pipe": {"path": uds}}
    assert port is not None, "a port or a Unix socket"
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def add_floor_listener(bootstrap: dict[str, Any], *, port: int, processor: dict[str, Any]) -> None:
    """Adds to ``bootstrap`` (``render_bootstrap``'s YAML, loaded) a copy of its client-facing listener on
    ``port`` whose ext_proc filter calls the processor at ``processor`` (:func:`processor_address`), through a
    copy of the bootstrap's processor cluster (same HTTP/2 options, health check and limits). Everything else is
    shared: the upstream cluster, the routes, every other filter. Fails loudly when the bootstrap no longer has
    the shape this relies on (one ext_proc filter calling ``EXTPROC_CLUSTER``)."""
    resources = bootstrap["static_resources"]
    listener = copy.deepcopy(resources["listeners"][0])
    listener["name"] = FLOOR_LISTENER
    listener["address"]["socket_address"]["port_value"] = port
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    manager["stat_prefix"] = FLOOR_LISTENER
    manager["route_config"]["name"] = FLOOR_LISTENER
    pointed = 0
    for http_filter in manager["http_filters"]:
        grpc_service = http_filter.get("typed_config", {}).get("grpc_service", {}).get("envoy_grpc", {})
        if grpc_service.get("cluster_name") == EXTPROC_CLUSTER:
            grpc_service["cluster_name"] = FLOOR_EXTPROC_CLUSTER
            pointed += 1
    if pointed != 1:
        raise ValueError(f"the bootstrap's listener has {pointed} filters calling {EXTPROC_CLUSTER}, expected one")
    (cluster,) = [copy.deepcopy(c) for c in resources["clusters"] if c["name"] == EXTPROC_CLUSTER]
    cluster["name"] = FLOOR_EXTPROC_CLUSTER
    cluster["type"] = "STATIC"  # a loopback address or a socket file: nothing to resolve
    cluster.pop("dns_lookup_family", None)
    cluster["load_assignment"] = {"cluster_name": FLOOR_EXTPROC_CLUSTER, "endpoints": [{"lb_endpoints": [
        {"endpoint": {"address": processor}}]}]}
    resources["listeners"].append(listener)
    resources["clusters"].append(cluster)


# ------------------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.latency.floors",
                                     description="The benchmark's floor servers (see responses-bridge bench).")
    servers = parser.add_subparsers(dest="server", required=True)
    proxy = servers.add_parser("http-proxy", help="aiohttp passthrough to the upstream's /chat/completions")
    proxy.add_argument("--host", default="127.0.0.1")
    proxy.add_argument("--port", type=int, required=True)
    proxy.add_argument("--upstream", required=True, help="Chat Completions base URL, ending in /v1")
    noop = servers.add_parser("noop-extproc", help="grpc.aio ext_proc processor that changes nothing")
    where = noop.add_mutually_exclusive_group(required=True)
    where.add_argument("--port", type=int, help="listen on 127.0.0.1:PORT")
    where.add_argument("--uds", metavar="PATH", help="listen on this Unix socket")
    args = parser.parse_args(argv)
    if args.server == "http-proxy":
        run_proxy(args.host, args.port, args.upstream)
    else:
        event_loop.run(serve_noop(f"unix:{args.uds}" if args.uds else f"127.0.0.1:{args.port}"),
                       event_loop.choice_from_environment())


if __name__ == "__main__":
    main()
