"""Simulated vLLM replicas: a Chat Completions server per port with vLLM's prefix cache, queues and metrics, for
``scripts/bench routing`` and its tests — a faithful model of *where time goes* in a fleet of model servers, not of
a model.

Each replica (one aiohttp app on its port; several in one process: ``python -m tools.fakes.vllm_replica --ports
P1 P2 ...``) answers ``POST /v1/chat/completions``, JSON or SSE (``stream_options.include_usage``: a last chunk with
``usage`` and ``prompt_tokens_details.cached_tokens``, as vLLM with ``--enable-prompt-tokens-details``), with the
deterministic answers of ``vllm_model.py``, and times each request as vLLM's scheduler would, with asyncio sleeps
only (so a two-core machine runs four replicas at their simulated speed):

1. *waiting* until one of ``--max-batch`` batch slots is free and then until the replica's one prefill is done
   (prefills are served one at a time, first come first served: a long miss holds every later request's first
   token back, as a real prefill holds the GPU);
2. *running*: the prompt's leading cached blocks are looked up (``vllm_cache.py``), ``cached_tokens`` of them
   (at most the prompt's tokens - 1: vLLM always computes the last token), and the rest prefilled at ``--prefill-ms``
   per token; the prompt's blocks are then cached;
3. decoding at ``--decode-ms`` per output token (the first token one step after the prefill, then chunks of
   ``--stream-tokens`` tokens); the answer's blocks are cached with the prompt's at the end, as vLLM caches the
   generated tokens' blocks.

``GET /metrics`` gives vLLM's names (label ``model_name``): ``vllm:num_requests_running``,
``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc`` (blocks of running requests over the capacity, 0-1 as
vLLM's), ``vllm:prefix_cache_queries_total`` and ``vllm:prefix_cache_hits_total`` (tokens), and
``vllm:request_success_total``; ``GET /sim/stats`` the same and more as JSON, for the benchmark's report.
``--oracle``: every replica of the process shares one unbounded cache (``SharedOracle``): every block any replica
computed is a hit, the best any placement could do.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import IO, Any

import orjson
from aiohttp import web

from .vllm_cache import BLOCK_TOKENS, PrefixCache, SharedOracle, block_keys, render_answer, render_prompt, token_count
from .vllm_model import Answer, answer

_SESSION = re.compile(r"session (\d+)")


def _session(messages: list[dict[str, Any]]) -> int | None:
    """The benchmark's session number, ``session N`` in the first user message (None: not the benchmark's)."""
    first = next((m for m in messages if m.get("role") == "user"), None)
    found = _SESSION.search(first["content"][:100]) if first and isinstance(first.get("content"), str) else None
    return int(found.group(1)) if found else None


@dataclass
class Timing:
    """How fast a replica is: seconds per uncached prompt token, per output token, the batch limit, the cache."""

    prefill_s: float = 0.0002
    decode_s: float = 0.01
    max_batch: int = 32
    capacity_blocks: int = 10_000
    stream_tokens: int = 8
    model: str = "sim"


@dataclass
class Counters:
    """What a replica did, for ``/metrics`` and ``/sim/stats``."""

    requests: int = 0
    queries: int = 0
    hits: int = 0
    prefilled: int = 0
    generated: int = 0
    prefill_busy_s: float = 0.0
    running_blocks: int = 0
    running: int = 0
    waiting: int = 0
    moved: int = 0
    moved_prefilled: int = 0
    first_token_s: list[float] = field(default_factory=list)
    """Each request's time to its first token as the replica sees it: arrival to the prefill's end, plus one
    decode step (the benchmark's figure of the placement alone, without the client's and the bridge's time)."""


class Replica:
    """One simulated vLLM server: its cache, its one-at-a-time prefill, its batch slots and its counters."""

    def __init__(self, name: str, timing: Timing, cache: PrefixCache | None = None,
                 trace: IO[bytes] | None = None, whereabouts: dict[int, str] | None = None) -> None:
        self.name = name
        self.trace = trace
        self.whereabouts = whereabouts if whereabouts is not None else {}
        """Each session's (``session N`` in its first user message) last replica, shared by the fleet's replicas:
        a turn arriving on another replica than its session's last is counted as moved."""
        self.timing = timing
        self.cache = cache if cache is not None else PrefixCache(timing.capacity_blocks)
        self.counters = Counters()
        self._prefill = asyncio.Lock()  # FIFO: one prefill at a time, in arrival order
        self._batch = asyncio.Semaphore(timing.max_batch)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/sim/stats", self.stats)
        return app

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.timing.model, "object": "model",
                                                              "owned_by": "vllm"}]})

    async def chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = orjson.loads(await request.read())
            messages = body["messages"]
            if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
                raise TypeError("messages")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return web.json_response({"error": {"message": "'messages' must be a list of objects.",
                                                "type": "BadRequestError", "param": "messages", "code": 400}},
                                     status=400)
        tools = body.get("tools") if isinstance(body.get("tools"), list) else None
        prompt = render_prompt(messages, tools)
        keys = block_keys(prompt)
        prompt_tokens = token_count(prompt)
        reply = answer(messages, tools, seed=len(prompt) ^ int.from_bytes(keys[-1] if keys else b"\0", "big"))
        counters = self.counters
        counters.waiting += 1
        arrived = time.monotonic()
        blocks, acquired = 0, False  # what the finally gives back, whenever the request ends (a client gone)
        try:
            await self._batch.acquire()
            acquired = True
            async with self._prefill:
                counters.waiting -= 1
                counters.running += 1
                blocks = len(keys) + 1
                counters.running_blocks += blocks
                cached = min(self.cache.lookup(keys) * BLOCK_TOKENS, prompt_tokens - 1)
                counters.requests += 1
                counters.queries += prompt_tokens
                counters.hits += cached
                counters.prefilled += prompt_tokens - cached
                started = time.monotonic()
                await asyncio.sleep((prompt_tokens - cached) * self.timing.prefill_s)
                counters.prefill_busy_s += time.monotonic() - started
                counters.first_token_s.append(time.monotonic() - arrived + self.timing.decode_s)
                self.cache.insert(keys)
                session = _session(messages)
                if session is not None:
                    if self.whereabouts.setdefault(session, self.name) != self.name:
                        counters.moved += 1
                        counters.moved_prefilled += prompt_tokens - cached
                    self.whereabouts[session] = self.name
                if self.trace is not None:
                    self._trace(session, len(messages), prompt_tokens, cached, started - arrived,
                                time.monotonic() - started)
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": reply.tokens(),
                     "total_tokens": prompt_tokens + reply.tokens(),
                     "prompt_tokens_details": {"cached_tokens": cached}}
            if body.get("stream"):
                include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
                response: web.StreamResponse = await self._stream(request, reply, usage if include_usage else None)
            else:
                await asyncio.sleep(reply.tokens() * self.timing.decode_s)
                response = web.json_response(self._completion(reply, usage))
            counters.generated += reply.tokens()
            self.cache.insert(block_keys(prompt + render_answer(reply.text, reply.tool_calls)))
            return response
        finally:
            if blocks:
                counters.running -= 1
                counters.running_blocks -= blocks
            else:
                counters.waiting -= 1
            if acquired:
                self._batch.release()

    def _trace(self, session: int | None, messages: int, prompt: int, cached: int, queued: float,
               prefill: float) -> None:
        """One line for ``--trace``: which session, the tokens, the seconds it queued and prefilled."""
        assert self.trace is not None
        self.trace.write(orjson.dumps({"t": round(time.time(), 3), "replica": self.name, "session": session,
                                       "messages": messages, "prompt_tokens": prompt, "cached_tokens": cached,
                                       "queued_s": round(queued, 4), "prefill_s": round(prefill, 4)}) + b"\n")

    def _meta(self) -> dict[str, Any]:
        return {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": self.timing.model}

    def _completion(self, reply: Answer, usage: dict[str, Any]) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            message["tool_calls"] = reply.tool_calls
        return {**self._meta(), "object": "chat.completion", "usage": usage,
                "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason, "logprobs": None}]}

    async def _stream(self, request: web.Request, reply: Answer, usage: dict[str, Any] | None) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        meta = {**self._meta(), "object": "chat.completion.chunk"}

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {**meta, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")

        step = self.timing.decode_s
        if reply.tool_calls:
            call = reply.tool_calls[0]
            await asyncio.sleep(step)
            arguments = call["function"]["arguments"]
            await send({"role": "assistant", "content": None, "tool_calls": [  # with the first token, as the text
                {"index": 0, "id": call["id"], "type": "function",
                 "function": {"name": call["function"]["name"], "arguments": arguments[:4]}}]})
            size = 4 * self.timing.stream_tokens
            for start in range(4, len(arguments), size):
                await asyncio.sleep(step * self.timing.stream_tokens)
                await send({"tool_calls": [{"index": 0, "function": {"arguments": arguments[start:start + size]}}]})
        else:
            words = reply.text.split(" ")
            await asyncio.sleep(step)
            await send({"role": "assistant", "content": words[0]})
            for start in range(1, len(words), self.timing.stream_tokens):
                piece = words[start:start + self.timing.stream_tokens]
                await asyncio.sleep(step * len(piece))
                await send({"content": " " + " ".join(piece)})
        await send({}, reply.finish_reason)
        if usage is not None:
            await response.write(b"data: " + orjson.dumps({**meta, "choices": [], "usage": usage}) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def snapshot(self) -> dict[str, Any]:
        counters = self.counters
        return {"name": self.name, "requests": counters.requests, "prompt_tokens": counters.queries,
                "cached_tokens": counters.hits, "prefilled_tokens": counters.prefilled,
                "generated_tokens": counters.generated, "prefill_busy_s": round(counters.prefill_busy_s, 3),
                "running": counters.running, "waiting": counters.waiting, "cached_blocks": len(self.cache),
                "evicted_blocks": self.cache.evicted, "moved": counters.moved,
                "moved_prefilled_tokens": counters.moved_prefilled,
                "first_token_s": [round(value, 4) for value in counters.first_token_s]}

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.snapshot())

    async def metrics(self, request: web.Request) -> web.Response:
        counters = self.counters
        label = f'{{model_name="{self.timing.model}"}}'
        usage = min(1.0, counters.running_blocks / self.timing.capacity_blocks)
        rows = [("vllm:num_requests_running", "gauge", "Number of requests in model execution batches.",
                 counters.running),
                ("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be processed.",
                 counters.waiting),
                ("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent usage.", usage),
                ("vllm:prefix_cache_queries_total", "counter", "Prefix cache queries, in terms of number of "
                 "queried tokens.", counters.queries),
                ("vllm:prefix_cache_hits_total", "counter", "Prefix cache hits, in terms of number of cached "
                 "tokens.", counters.hits),
                ("vllm:request_success_total", "counter", "Count of successfully processed requests.",
                 counters.requests)]
        lines = []
        for name, kind, text, value in rows:
            family = name.removesuffix("_total") if kind == "counter" else name
            lines += [f"# HELP {family} {text}", f"# TYPE {family} {kind}", f"{name}{label} {float(value)}"]
        return web.Response(text="\n".join(lines) + "\n", content_type="text/plain", charset="utf-8")


def fleet(count: int, timing: Timing, *, oracle: bool = False, trace: IO[bytes] | None = None) -> list[Replica]:
    """``count`` replicas, each with its own cache, or (``oracle``) all with one shared unbounded cache."""
    shared = SharedOracle() if oracle else None
    whereabouts: dict[int, str] = {}
    return [Replica(f"replica-{index}", timing, shared, trace, whereabouts) for index in range(count)]


async def serve(replicas: list[Replica], ports: list[int], host: str = "127.0.0.1") -> list[web.AppRunner]:
    """Each replica on its port (0: any free one; the bound ports are the runners' sites'). The caller cleans the
    runners up."""
    runners = []
    for replica, port in zip(replicas, ports, strict=True):
        runner = web.AppRunner(replica.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, backlog=1024).start()
        runners.append(runner)
    return runners


def bound_port(runner: web.AppRunner) -> int:
    """The port a runner's one site listens on."""
    return int(runner.addresses[0][1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.fakes.vllm_replica", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ports", type=int, nargs="+", required=True, help="one replica per port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--prefill-ms", type=float, default=0.2, help="per uncached prompt token (default 0.2)")
    parser.add_argument("--decode-ms", type=float, default=10.0, help="per output token (default 10)")
    parser.add_argument("--max-batch", type=int, default=32, help="requests running at once (default 32)")
    parser.add_argument("--capacity-blocks", type=int, default=10_000,
                        help="prefix cache blocks of 16 tokens per replica (default 10,000: 160k tokens)")
    parser.add_argument("--stream-tokens", type=int, default=8, help="tokens per streamed chunk (default 8)")
    parser.add_argument("--model", default="sim")
    parser.add_argument("--trace", metavar="FILE", help="a JSON line per request: replica, session, tokens, "
                        "seconds queued and prefilling")
    parser.add_argument("--oracle", action="store_true", help="one shared unbounded cache: every block any replica "
                        "computed is a hit")
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace, trace: IO[bytes] | None) -> None:
    timing = Timing(prefill_s=args.prefill_ms / 1000, decode_s=args.decode_ms / 1000, max_batch=args.max_batch,
                    capacity_blocks=args.capacity_blocks, stream_tokens=args.stream_tokens, model=args.model)
    runners = await serve(fleet(len(args.ports), timing, oracle=args.oracle, trace=trace), args.ports, args.host)
    try:
        await asyncio.Event().wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with contextlib.ExitStack() as stack, contextlib.suppress(KeyboardInterrupt):
        trace = stack.enter_context(open(args.trace, "ab", buffering=0)) if args.trace else None
        asyncio.run(_main(args, trace))


if __name__ == "__main__":
    main()
