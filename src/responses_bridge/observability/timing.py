"""Every response's timing and trace, recorded by the bridge itself: no extra installed, nothing exported, stored
with the response (the store's ``ttft_ms``/``latency_ms`` columns and its ``timing`` document) and deleted with it.

OpenTelemetry (tracing.py, otel.py) answers an operator who runs a collector; this answers the console's "how long,
and why" for every stored response, chat completion, background run and session turn. It costs a plain request a
few ``perf_counter()`` reads and one small object: a :class:`Timing` begun by the door when the request arrives
(:func:`begin`: the HTTP door's middleware for a POST, the ext_proc door at its stream's first message), found by
the run (``ResponseRun.timing``) and by whatever makes the request wait (fairness/share.py, the one rule every pool
goes through: only on the path where it *does* wait), then turned into one small document as the response is
saved (:meth:`Timing.document`). Per upstream chunk the drivers pay one "still waiting for the first one?" check.

The document: ``ttft_ms`` (the first output of the response: its first delta, a call's first item), ``latency_ms``
(arrival to the terminal bytes being made, the save included), ``upstream_headers_ms`` and
``upstream_first_byte_ms`` (of its first model call), ``waits_ms`` by pool (``upstream connections``, ``request
memory``, ``sandbox slots``, ``program slots``…), ``upstream`` and ``replica`` (the replica when the upstream has
several: :func:`note_replica`, called where a replica is picked), and ``spans``: the waterfall — each model call (its
attributes: model, tokens, finish reason, and ``output`` as the range of the response's output items it made, so
that its input and answer are read from the stored response, never stored twice), each tool call (its call id: its
arguments and result are the output item of that id), each sandbox run, each wait. Times are milliseconds from the
request's arrival. At most :data:`MAX_SPANS` spans (the rest counted in ``dropped_spans``).

A response made inside a session's turn (or any run inside another's timing) is a child: its spans are the
parent's too, shifted to the parent's clock, under a ``response`` span naming it (:func:`begin` with
``child=True``), so a turn's trace holds every response it made.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar, Token
from time import perf_counter
from typing import Any

from . import gen_ai
from .logs import noted_upstream

MAX_SPANS = 256
"""Spans kept per response (a tool loop of many calls makes a few per call); past it they are counted, not kept."""
MAX_ATTRIBUTE_CHARS = 256
"""A span's attribute value as stored (a tool's name, a model's): never an argument or an output."""

Span = tuple[str, str, float, float, "dict[str, Any] | None", "list[Any] | None"]
"""(name, kind, began, ended, attributes, call): ``kind`` is ``model``, ``tool``, ``sandbox``, ``wait`` or
``response``; times are ``perf_counter()`` readings; ``call``, a model call's own readings: ``[headers, first byte,
first output, output from, output to, failed, facts]``, its facts the run's ``call_facts()`` (model, usage, finish
reason: made attributes by observability/gen_ai.py when read). Kept raw, and stored raw (:meth:`Timing.document`):
what a page shows is made when it is read (:func:`readable`), not on every request."""


Facts = tuple[str | None, Any, str | None]
"""A model call's answer: the model it asked, its usage, its finish reason (the run's ``call_facts()``)."""


class Timing:
    """One request's clock readings, as it runs (a few attributes and a list: made per request)."""

    __slots__ = ("called", "dropped", "first_byte", "first_token", "headers", "origin", "parent", "replica",
                 "spans", "unsettled", "upstream", "waits")

    def __init__(self, origin: float | None = None, parent: Timing | None = None) -> None:
        self.origin = perf_counter() if origin is None else origin
        self.parent = parent  # a session turn's timing this response's spans join (see the module's docstring)
        self.headers: float | None = None  # the first model call's upstream response headers
        self.first_byte: float | None = None  # ... its first body byte
        self.first_token: float | None = None  # the response's first output
        self.spans: list[Span] = []
        self.waits: dict[str, float] | None = None  # pool -> seconds waited (None: never waited, the usual case)
        self.upstream: str | None = None
        self.replica: str | None = None
        self.dropped = 0
        self.called: float | None = None  # a model call Envoy makes (the ext_proc door) began: see watched_call
        # the last model call whose answer was not translated when it ended (a JSON answer): its readings, the
        # response's output list, what asks its facts, its end; settled once its answer is read (settle)
        self.unsettled: tuple[list[Any], list[Any], Callable[[], Facts], float] | None = None

    def add(self, name: str, kind: str, began: float, ended: float, attributes: dict[str, Any] | None = None,
            call: list[Any] | None = None) -> None:
        if len(self.spans) >= MAX_SPANS:
            self.dropped += 1
        else:
            self.spans.append((name, kind, began, ended, attributes, call))

    def waited(self, pool: str, began: float, ended: float) -> None:
        """The request waited for ``pool`` (fairness/share.py: only when it had to)."""
        waits = self.waits
        if waits is None:
            waits = self.waits = {}
        waits[pool] = waits.get(pool, 0.0) + (ended - began)
        self.add(f"wait {pool}", "wait", began, ended, {"pool": pool})

    def model_call(self, began: float, headers: float | None, first_byte: float | None, first_token: float | None,
                   ended: float, facts: Facts | None, output: tuple[int, int], failed: bool,
                   read_later: tuple[list[Any], Callable[[], Facts]] | None = None) -> None:
        """A model call the bridge drove (run/drive.py) or watched Envoy make (the ext_proc door). ``facts``: what
        its answer said (the run's ``call_facts()``: model, usage, finish reason), kept as they are; None while its
        answer is not translated yet (a JSON answer): then ``read_later``, the response's output list and what
        asks the facts, settles the call once the answer is read (:meth:`settle`: before the tool it called
        starts, before the next call, or as the response completes)."""
        if self.unsettled is not None:
            self.settle_pending()
        if self.headers is None:
            self.headers, self.first_byte = headers, first_byte
        if self.first_token is None:
            self.first_token = first_token
        call = [headers, first_byte, first_token, output[0], output[1], failed, facts]
        if len(self.spans) < MAX_SPANS:  # add(), inline: every model call of every request comes here
            self.spans.append(("chat", "model", began, ended, None, call))
        else:
            self.dropped += 1
        if read_later is not None:
            self.unsettled = (call, read_later[0], read_later[1], ended)

    def chunk_seen(self, response: Mapping[str, Any] | None) -> None:
        """A chunk of the answer to a call Envoy makes (the ext_proc door) was translated: its first byte, and the
        response's first output once it has one. The door asks only while :attr:`first_token` is None."""
        now = perf_counter()
        if self.first_byte is None:
            self.first_byte = now
        if response is not None and response.get("output"):
            self.first_token = now

    def watched_call(self, facts: Facts, output: int, failed: bool) -> None:
        """The call Envoy made (:attr:`called`) ended with the response: its span, from the readings the door
        took (the answer's headers, first byte, first output)."""
        began, self.called = self.called, None
        if began is None:
            return
        ended = perf_counter()
        if self.first_token is None and output:  # a JSON answer, translated whole at its end
            self.first_token = ended
        self.model_call(began, self.headers, self.first_byte, self.first_token, ended, facts, (0, output), failed)

    def run_ended(self, translator: Any) -> None:
        """The run is about to store its response (``translator``: its engine translator): the call Envoy made
        ends here (the ext_proc door), else the driver's last call, whose JSON answer is translated only now."""
        output = len(translator.response["output"])
        if self.called is not None:
            self.watched_call(translator.call_facts(), output, translator.upstream_failed)
        else:
            self.settle(output, translator.call_facts)

    def settle(self, output: int, facts: Callable[[], Facts]) -> None:
        """A model call's answer was read (the response completed, or a tool the call asked for starts): the call
        whose answer came whole (a JSON answer, translated only now: the unsettled one, else the last span) gets
        its output range, its first output (when the answer ended) and the facts its answer gave (``facts()``:
        asked only then)."""
        pending = self.unsettled
        call: list[Any] | None
        if pending is not None:
            self.unsettled = None
            call, ended = pending[0], pending[3]
        elif not self.spans:
            return
        else:
            ended, call = self.spans[-1][3], self.spans[-1][5]
        if call is None:
            return
        if call[6] is None:
            call[6] = facts()
        if output <= call[4]:  # a streamed answer: told as it came
            return
        call[4] = output
        if call[2] is None:
            call[2] = ended
            if self.first_token is None:
                self.first_token = ended

    def settle_pending(self) -> None:
        """The unsettled call's answer has been read (a tool it asked for starts, or the next call is made)."""
        pending = self.unsettled
        if pending is not None:
            self.settle(len(pending[1]), pending[2])

    def document(self, ended: float | None = None, response_id: str | None = None) -> list[Any]:
        """What is stored with the response, as it was taken (every instruction here is paid by every plain
        request: :func:`readable` makes it a page's when one is read): ``[3, ttft ms, latency ms, origin, waits,
        upstream, replica, spans, dropped]``, the spans' times ``perf_counter()`` readings (``origin`` the
        request's arrival), a model call's facts the run's own. Its time to first token and latency are the row's
        columns (store/timings.py). ``response_id``: the response being saved, whose spans a session's turn
        (:attr:`parent`) gets too (once: a response ends once)."""
        end = perf_counter() if ended is None else ended
        if response_id is not None and self.parent is not None:
            self.joined(response_id, end)
        origin = self.origin
        if self.upstream is None:  # the upstream the request was routed to (logs.note_upstream), if it was
            self.upstream = noted_upstream()
        first = self.first_token
        return [3, (first - origin) * 1000.0 if first is not None else None, (end - origin) * 1000.0, origin,
                self.waits, self.upstream, self.replica, self.spans, self.dropped]

    def joined(self, response_id: str | None, ended: float) -> None:
        """This (a child's) spans added to its parent's, under a span naming the response."""
        parent = self.parent
        if parent is None:
            return
        self.parent = None  # once
        parent.add(f"response {response_id}" if response_id else "response", "response", self.origin, ended,
                   {"response_id": response_id} if response_id else None)
        for index, span in enumerate(self.spans):
            name, kind, began, span_end, attributes, call = span
            if response_id is not None and kind in ("model", "tool"):  # the response's own page of the span
                attributes = {**(attributes or {}), "response_id": response_id, "span_index": index}
            parent.add(name, kind, began, span_end, attributes, call)
        if parent.first_token is None:
            parent.first_token = self.first_token
        if parent.headers is None:
            parent.headers, parent.first_byte = self.headers, self.first_byte
        if self.waits:
            for pool, seconds in self.waits.items():
                waits = parent.waits if parent.waits is not None else {}
                waits[pool] = waits.get(pool, 0.0) + seconds
                parent.waits = waits


def _ms(millis: Any) -> float | None:
    return round(float(millis), 3) if isinstance(millis, int | float) and not isinstance(millis, bool) else None


def readable(stored: Any) -> dict[str, Any]:
    """A stored document (:meth:`Timing.document`) as a page reads it: every time in milliseconds from the
    request's arrival, each span a mapping (its name and attributes bounded to :data:`MAX_ATTRIBUTE_CHARS`), a
    model call's readings and facts among its attributes (``output``: the range of the response's output items it
    made); the first model call's headers and first byte as the response's. Anything else: an empty document."""
    document: dict[str, Any] = {"ttft_ms": None, "latency_ms": None, "upstream_headers_ms": None,
                                "upstream_first_byte_ms": None, "waits_ms": {}, "upstream": None, "replica": None,
                                "spans": []}
    if not isinstance(stored, list) or len(stored) != 9 or stored[0] != 3:
        return document
    _, ttft, latency, origin, waits, upstream, replica, spans, dropped = stored
    if not isinstance(origin, int | float):
        return document
    document.update(ttft_ms=_ms(ttft), latency_ms=_ms(latency), upstream=upstream, replica=replica)
    if isinstance(waits, dict):
        document["waits_ms"] = {str(pool): _ms(seconds * 1000.0) for pool, seconds in waits.items()
                                if isinstance(seconds, int | float)}
    for span in spans if isinstance(spans, list) else ():
        if isinstance(span, list) and len(span) == 6 and all(isinstance(value, int | float) for value in span[2:4]):
            shown = _readable_span(span, float(origin))
            document["spans"].append(shown)
            if shown["kind"] == "model" and document["upstream_headers_ms"] is None:
                attributes = shown.get("attributes") or {}
                for key in ("upstream_headers_ms", "upstream_first_byte_ms"):
                    if key in attributes:
                        document[key] = round(attributes[key] + shown["start_ms"], 3)
    if dropped:
        document["dropped_spans"] = dropped
    return document


def _readable_span(span: list[Any], origin: float) -> dict[str, Any]:
    name, kind, began, ended, attributes, call = span
    shown: dict[str, Any] = {key: (value[:MAX_ATTRIBUTE_CHARS] if isinstance(value, str) else value)
                             for key, value in attributes.items()} if isinstance(attributes, dict) else {}
    if isinstance(call, list) and len(call) == 7:
        headers, first_byte, first_token, start, end, failed, facts = call
        if isinstance(facts, list) and len(facts) == 3:
            model, usage, finish = facts
            shown.update(gen_ai.model_call(str(model)[:MAX_ATTRIBUTE_CHARS] if model else None,
                                           usage if isinstance(usage, dict) else None,
                                           str(finish)[:MAX_ATTRIBUTE_CHARS] if finish else None, None))
        shown["output"] = [start, end]
        for key, value in (("upstream_headers_ms", headers), ("upstream_first_byte_ms", first_byte),
                           ("first_token_ms", first_token)):
            if isinstance(value, int | float):
                shown[key] = round((value - began) * 1000.0, 3)
        if failed:
            shown["error"] = True
        model = shown.get("gen_ai.request.model")
        if name == "chat" and model:
            name = f"chat {model}"
    readable_span: dict[str, Any] = {"name": str(name)[:MAX_ATTRIBUTE_CHARS], "kind": str(kind),
                                     "start_ms": round((began - origin) * 1000.0, 3),
                                     "end_ms": round((ended - origin) * 1000.0, 3)}
    if shown:
        readable_span["attributes"] = shown
    return readable_span


CURRENT: ContextVar[Timing | None] = ContextVar("responses_bridge_timing", default=None)
"""The timing of the request being handled (in its task and the tasks it starts: a background run's)."""


def begin(origin: float | None = None, *, child: bool = False) -> Token[Timing | None]:
    """A request arrives (``origin``: when, if earlier than now): its timing is the current one until
    :func:`end` with the returned token. ``child``: the timing current now (a session turn's) gets this one's spans
    when it is saved."""
    return CURRENT.set(Timing(origin, CURRENT.get() if child else None))


def end(token: Token[Timing | None]) -> None:
    CURRENT.reset(token)


def current() -> Timing | None:
    return CURRENT.get()


def note_replica(name: str) -> None:
    """The request being handled goes to the replica ``name`` of its upstream (where the upstream has several):
    its stored timing says so (``replica``). Nothing when no request is timed."""
    clock = CURRENT.get()
    if clock is not None:
        clock.replica = name


class _ToolSpan:
    """A tool call's or sandbox run's span while it runs (only when a timing is current)."""

    __slots__ = ("attributes", "began", "kind", "name", "timing")

    def __init__(self, timing: Timing, name: str, kind: str, attributes: dict[str, Any] | None) -> None:
        self.timing, self.name, self.kind, self.attributes = timing, name, kind, attributes
        self.began = 0.0

    def __enter__(self) -> _ToolSpan:
        if self.timing.unsettled is not None:  # the model call that asked for this tool: its answer was read
            self.timing.settle_pending()
        self.began = perf_counter()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: Any) -> None:
        attributes = self.attributes
        if kind is not None:
            attributes = {**(attributes or {}), "error": True}
        self.timing.add(self.name, self.kind, self.began, perf_counter(), attributes)


_NOOP: AbstractContextManager[None] = nullcontext()


def span(name: str, kind: str, attributes: Mapping[str, Any] | None = None) -> AbstractContextManager[Any]:
    """A tool call's or a sandbox run's span, in the current timing (nothing when there is none)."""
    timing = CURRENT.get()
    if timing is None:
        return _NOOP
    return _ToolSpan(timing, name, kind, dict(attributes) if attributes else None)


@contextmanager
def waiting(pool: str) -> Iterator[None]:
    """The block is a wait for ``pool`` (one that did not go through fairness/share.py)."""
    timing = CURRENT.get()
    began = perf_counter()
    try:
        yield
    finally:
        if timing is not None:
            timing.waited(pool, began, perf_counter())


__all__ = ["CURRENT", "MAX_SPANS", "Timing", "begin", "current", "end", "note_replica", "readable", "span",
           "waiting"]
