"""The fields of one :class:`~responses_bridge.engine.responses.translator.Translator`, declared once for the modules
that write its methods: the first call, the upstream's answer and the tool loop's turns (``translator.py``), the
client's stream and its terminal states (``translator_stream.py``), and the compaction turns
(``translator_compaction.py``).

Each of those is a class over these slots and the translator is their union, so every method reads the instance's
own slots, wherever it was written: the per-chunk path has no layer in between.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from ...protocol.errors import APIError
from ...protocol.responses.request import ResponsesRequest
from ...sealing import Sealer
from ..options import EngineOptions
from ..sse import SSEDecoder
from ..tools.prompt import PromptToolCalls
from ..tools.tools import ToolPlan
from ..wire import Framing
from .auto_compaction import PendingCompaction
from .output_builder import OutputBuilder
from .response_object import ResponseReads

# What a chunk of the wrong shape (``"choices": {}``, ``"delta": "x"``, a list where an object belongs) raises
# inside the output builder; it is the upstream's fault, so it fails the response like any protocol error.
MALFORMED = (AttributeError, TypeError, KeyError, IndexError, ValueError)


class TranslatorState(ResponseReads):
    __slots__ = ("_options", "request", "response", "_builder", "_decoder", "_upstream_status", "_upstream_sse",
                 "_buffer", "_head_sent", "_error", "_ended", "_sealer", "_events", "_retry_chat", "_compacting",
                 "_buffered", "_translated", "_terminal_head", "plan", "context", "_chat", "_body", "_turn_closed",
                 "backlog", "compact_threshold", "_auto", "committed", "_prompt_calls", "_prewarm")

    _options: EngineOptions
    request: ResponsesRequest
    response: dict[str, Any]
    _builder: OutputBuilder
    _decoder: SSEDecoder | None
    _upstream_status: int
    _upstream_sse: bool
    _buffer: list[bytes]
    _head_sent: bool
    _error: APIError | None
    _ended: bool
    _sealer: Sealer | None
    _events: Framing | None
    _retry_chat: dict[str, Any] | None
    _compacting: int | None
    _buffered: int
    _translated: ResponsesRequest | None
    _terminal_head: bytes
    plan: ToolPlan | None
    context: list[dict[str, Any]]
    _chat: dict[str, Any] | None
    _body: dict[str, Any] | None
    _turn_closed: bool
    backlog: deque[bytes | dict[str, Any]]
    compact_threshold: int | None
    _prewarm: bool  # prompt_cache_options.prewarm: the turn only warms the backend's cache (prewarm.py)
    _auto: PendingCompaction | None
    committed: bool
    _prompt_calls: PromptToolCalls | None  # tool_calling "prompt": the turn's answer is read for calls as text

    def _reset_answer(self) -> None:
        """A new upstream call's answer follows: the state of the last one goes."""
        self._upstream_status, self._upstream_sse, self._buffer, self._buffered = 0, False, [], 0
        self._decoder, self._retry_chat, self._turn_closed = None, None, False
        self._prompt_calls = None

    def _take_buffer(self) -> bytes:
        """The buffered answer in one piece; the pieces are let go at once, so it is never held twice."""
        chunks, self._buffer = self._buffer, []
        return b"".join(chunks)
