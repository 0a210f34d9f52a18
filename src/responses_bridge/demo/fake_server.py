"""The fake upstream as a server: the app with every route (the chat fake, fake_upstream.py; its Responses API,
fake_responses.py; its Images API, fake_images.py; its Embeddings API, fake_embeddings.py), started in a
test's loop or served by the ``fake-upstream`` command. Assembled here, above the others, so none of them imports
another's server."""

from __future__ import annotations

import argparse
from typing import Any

from aiohttp import web

from ..process.event_loop import new_loop_from_environment
from . import fake_images, fake_quirks, fake_responses
from .fake_embeddings import embeddings
from .fake_upstream import (
    _STATE,
    _openai_errors,
    _State,
    chat_completions,
    clear_requests,
    get_model,
    health,
    list_models,
    recorded_requests,
)


def create_app(*, chunk_count: int | None = None, chunk_delay: float = 0.0,
               tool_topics: bool = False, quirks: str | frozenset[str] | None = None,
               native: bool = False, embedding_delay: float = 0.0, header_delay: float = 0.0,
               images: bool = True) -> web.Application:
    """Builds the fake; ``chunk_count``/``chunk_delay``/``header_delay`` (seconds before an answer's headers) are
    defaults the conversation can override;
    ``tool_topics`` also calls an offered tool whose name the user's text mentions (fake_upstream.py);
    ``quirks`` (e.g. ``"llamacpp"``) puts on a real backend's departures from OpenAI (fake_quirks.py);
    ``native`` also serves ``/v1/responses`` as a stateless backend does (fake_responses.py);
    ``embedding_delay``: seconds before each ``/v1/embeddings`` answer (ingestion that takes a while);
    ``images``: serve ``/v1/images/generations`` (fake_images.py)."""
    if chunk_count is not None and chunk_count < 1:
        raise ValueError("chunk_count must be >= 1")
    app = web.Application(middlewares=[_openai_errors], client_max_size=64 * 1024 * 1024)
    if header_delay < 0:
        raise ValueError("header_delay must be >= 0")
    app[_STATE] = _State(chunk_count=chunk_count, chunk_delay=chunk_delay, tool_topics=tool_topics,
                         quirks=fake_quirks.parse(quirks), embedding_delay=embedding_delay, header_delay=header_delay)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/health", health)
    app.router.add_get("/_fake/requests", recorded_requests)
    app.router.add_delete("/_fake/requests", clear_requests)
    if native:
        fake_responses.add_routes(app)
    if images:
        fake_images.add_routes(app)
    return app


# Cancelling handlers when their client disconnects keeps stalled requests from delaying shutdown.
_RUNNER_OPTIONS: dict[str, Any] = {"handler_cancellation": True, "shutdown_timeout": 1.0}
BACKLOG = 4096
"""As a model server's (uvicorn's is 2,048): thousands of streams opened at once are queued, not dropped to the
client's SYN retries, which a bridge's short connect timeout would read as the model being down."""


async def start(host: str = "127.0.0.1", port: int = 0, **app_kwargs: Any) -> tuple[web.AppRunner, int]:
    """Starts the fake in the running loop; returns the runner (call ``cleanup()``) and the bound port."""
    runner = web.AppRunner(create_app(**app_kwargs), access_log=None, **_RUNNER_OPTIONS)
    await runner.setup()
    await web.TCPSite(runner, host, port, backlog=BACKLOG).start()
    return runner, runner.addresses[0][1]


def run(host: str, port: int, **app_kwargs: Any) -> None:
    """Serves until interrupted; what the ``fake-upstream`` CLI command calls."""
    web.run_app(create_app(**app_kwargs), host=host, port=port, access_log=None,
                print=lambda *_: print(f"fake upstream listening on http://{host}:{port}/v1", flush=True),
                loop=new_loop_from_environment(), backlog=BACKLOG, **_RUNNER_OPTIONS)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="responses-bridge fake-upstream",
                                     description="Deterministic OpenAI-compatible Chat Completions server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--chunk-count", type=int, default=None,
                        help="content chunks per streamed text answer (default: one per word)")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--quirks", default=None, help="a backend's departures from OpenAI: 'llamacpp' or "
                        "comma-separated quirk names (see fake_quirks.py)")
    parser.add_argument("--embedding-delay", type=float, default=0.0,
                        help="seconds before each /v1/embeddings answer (a slow embedding model)")
    parser.add_argument("--header-delay", type=float, default=0.0,
                        help="seconds before the headers of each chat answer (a model's time to first token)")
    parser.add_argument("--no-images", action="store_true",
                        help="no /v1/images/generations route (an upstream without the Images API: a 404)")
    args = parser.parse_args(argv)
    run(args.host, args.port, chunk_count=args.chunk_count, chunk_delay=args.chunk_delay, quirks=args.quirks,
        embedding_delay=args.embedding_delay, header_delay=args.header_delay, images=not args.no_images)


if __name__ == "__main__":
    main()
