"""A second upstream call made by the processor itself: ``truncation: "auto"`` after a context-length error.

Through the Envoy door the first call is Envoy's; its error answer reaches the processor buffered (a 4xx never
opens the client's stream). The shorter retry (``Run.retry_request``) goes through the sidecar's own upstream
client (``runtime.upstream``: Envoy's listener when ``upstream_via`` is set, so the retry still passes Envoy's
upstream route), driven by the one turn loop (run/drive.py) into a buffer, and its whole answer replaces that
buffered body in one body mutation. A streaming client therefore gets the retried events all at once, at the end
of the retried call, rather than as they are generated.
"""

from __future__ import annotations

from ...config.upstreams import Route
from ...engine.wire import Reply, UpstreamRequest
from ...run.drive import BufferSink, drive
from ...run.runs import Run
from ...runtime import Runtime


async def retried_reply(runtime: Runtime, run: Run, call: UpstreamRequest,
                        client_authorization: str | None, route: Route | None = None) -> Reply:
    """Make ``call``, drive its answer through ``run`` and return everything the client gets. ``route``: the
    request's, when several upstreams are configured (the retry goes to the same one)."""
    upstream = (runtime.client_for(route) if route is not None else None) or runtime.upstream
    authorization = (runtime.upstream_authorization(client_authorization) if route is None
                     else runtime.route_authorization(route, client_authorization))
    sink = BufferSink()
    reply = await drive(run, call, upstream, authorization, sink)
    if not sink.parts:
        return reply
    return Reply(200, reply.content_type, b"".join(sink.parts) + reply.body)
