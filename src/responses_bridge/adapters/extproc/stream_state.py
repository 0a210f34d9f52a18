"""What one ext_proc stream knows about its request and where its answer stands (the state every phase of
:class:`~responses_bridge.adapters.extproc.stream._Stream` reads and changes), and the door's shared constants."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ...config.upstreams import Route
from ...engine.chat_record import ChatRecorder
from ...protocol.errors import shut_down_mid_response, shutting_down
from ...replicas import Picked
from ...run.runs import Run
from ...runtime import Runtime
from ...services.tenancy.body_admission import BodyAdmission
from ...services.tenancy.limits import UNLIMITED
from ...services.tenancy.memory_budget import Held
from ...store.base import DEFAULT_TENANT
from ._pb.ext_proc_pb2 import ProcessingResponse
from .observe import StreamObservation
from .turn import Turn

RESPONSES_PATHS = frozenset(("/v1/responses", "/responses"))
CHAT_PATHS = frozenset(("/v1/chat/completions", "/chat/completions"))
BACKGROUND_STREAM_WAIT = 25.0  # seconds; below the filter's 30 s message_timeout (envoy_message_timeout)


def background_stream_wait(message_timeout: float) -> float:
    """How long a streamed background response's immediate answer collects events: ``BACKGROUND_STREAM_WAIT``,
    or 5/6 of a shorter ``envoy_message_timeout``, so that Envoy never gives up on the answer first."""
    return min(BACKGROUND_STREAM_WAIT, message_timeout * 5 / 6)
JSON = "application/json"
REQUEST_REMOVE = ("accept-encoding",)

SHUTDOWN_ERROR = shut_down_mid_response()
"""What a response still running when the drain timeout ends is failed with (``response.failed`` with code
``server_shutdown`` in an open stream); a request arriving during a drain gets ``REFUSED`` instead."""
REFUSED = shutting_down()

Responses = list[ProcessingResponse]
Write = Callable[[ProcessingResponse], Awaitable[None]]


class StreamState:
    """Per-request state: what the client asked for and where the answer stands."""

    __slots__ = (
        "admission",
        "authorization",
        "chat",
        "chat_own",
        "chat_record",
        "chat_request",
        "chat_saved",
        "chat_watch",
        "delivered",
        "done",
        "held",
        "idempotent",
        "failed",
        "full_duplex",
        "hands_off",
        "lock",
        "max_bytes",
        "observed",
        "ours",
        "pending",
        "picked",
        "released",
        "replica_named",
        "prefix",
        "route",
        "routed",
        "run",
        "runtime",
        "shutdown_requested",
        "sidecar_route",
        "slot",
        "sse",
        "tenant",
        "tenant_header",
        "upstream_head",
        "write",
    )

    def __init__(self, runtime: Runtime, prefix: str, write: Write | None = None) -> None:
        self.runtime = runtime
        self.prefix = prefix
        self.write = write  # the gRPC stream's, for what the processor sends on its own (a drain's last words)
        self.lock = Turn()  # one writer at a time: the message loop, or a drain ending the stream (turn.py)
        self.run: Run | None = None
        # Is this a POST /v1/responses to translate? None until known: the bootstrap skips the request headers
        # (one processor round trip less), so the first message is then the buffered body, which means yes.
        self.ours: bool | None = None
        self.authorization: str | None = None  # the client's, when the request headers were sent to us
        self.full_duplex = False  # the response body comes FULL_DUPLEX_STREAMED (from the first message)
        self.sse = False  # the client's event stream is open: its headers have been answered
        self.pending = b""  # bytes to put before the next response body chunk (the stream's head)
        self.failed = False  # failure bytes were sent: drop everything else
        self.done = False  # the terminal bytes were made
        self.delivered = False  # ... and handed to gRPC (metrics: a close after this is no client going away)
        self.shutdown_requested = False  # STREAMED mode: fail the stream at the next upstream chunk
        self.admission: BodyAdmission | None = None  # its body as it arrives, until its end (request_phase.py)
        self.routed = False  # handed to the sidecar's HTTP door: its answer passes through untouched
        self.sidecar_route = False  # the bootstrap routes requests with server-side tools to the HTTP door
        self.idempotent = False  # the request has an Idempotency-Key: the HTTP door answers it (request_phase.py)
        self.hands_off = False  # the route says the HTTP door answers and checks: change nothing (names.py)
        self.chat = False  # a POST /v1/chat/completions: its upstream chosen (several upstreams), its answer stored
        # ``store: true`` on it: the recorder the answer passes through, the request it answers, whether it is
        # stored yet (chat_phase.py)
        self.chat_record: ChatRecorder | None = None
        self.chat_request: dict[str, Any] | None = None
        self.chat_saved = False
        self.chat_watch = False  # a chat answer not stored: its headers are seen (an error made OpenAI's), no more
        # the request was answered and its answer is none of the processor's business: the gRPC stream ends
        # cleanly after the reply, and Envoy passes the rest through without the processor
        self.released = False
        self.chat_own = False  # the sidecar's own call through Envoy: the HTTP door stores what it asked to
        self.tenant_header: str | None = None  # the request's tenant header, for a stored chat's tenant
        self.route: Route | None = None  # with several upstreams: where the request's model goes (config/upstreams.py)
        self.observed: StreamObservation | None = None  # set by Process: metrics and spans of this request
        self.tenant = DEFAULT_TENANT  # the caller's, resolved from the forwarded credentials with the body
        self.max_bytes = runtime.settings.max_request_bytes  # the tenant's own, once known (first body chunk)
        self.slot = UNLIMITED  # the tenant's request in flight, taken when the run begins (services/tenancy/limits.py)
        # of the process's memory budget, reserved as the body arrives (services/tenancy/memory_budget.py)
        self.held = Held(runtime.memory)  # its holder is known with the body's first chunk (request_phase.py)
        # the replica picked for its upstream call (replicas/; None with one server), and the status and headers
        # of the answer and the replica that gave it, which end the pick (replica_pick.py)
        self.picked: Picked | None = None
        self.upstream_head: tuple[int, dict[str, str], str] | None = None
        self.replica_named = False  # a chat request that names its replica already (the HTTP door's own call)
