"""The input file checked as OpenAI checks it, before any line runs: each line one JSON object with a unique
``custom_id``, ``method`` POST, ``url`` the batch's endpoint and a JSON object ``body``; within the line and size
limits. A file with any error fails its batch with ``errors.data`` naming each line (1-based, as OpenAI's), and
nothing of it runs.

The file is read line by line (:class:`InputCheck` is fed each line): memory holds one line and the set of
``custom_id``\\s, never the file. A file is read twice: once to check it, once to keep its lines (runner.py), so
that a file with an error at its last line has kept nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

MAX_LINES = 50_000
"""Requests in one batch, as OpenAI's."""
MAX_INPUT_BYTES = 200 * 1024 * 1024
"""An input file's size, as OpenAI's (the deployment's file limit may be lower: the file was refused at upload)."""
MAX_EMBEDDING_INPUTS = 50_000
"""Embedding inputs across an ``/v1/embeddings`` batch's requests, as OpenAI's."""
MAX_REPORTED_ERRORS = 1_000
"""Errors kept in ``errors.data``; a file with more fails the same, the rest counted in the last entry."""
MAX_CUSTOM_ID_CHARS = 512


@dataclass(frozen=True)
class CheckedLine:
    """A valid line: its index (0-based), ``custom_id`` and the body to send (JSON)."""

    index: int
    custom_id: str
    body: bytes


@dataclass
class InputCheck:
    """The checks of one input file for ``endpoint``'s batch. Feed it each raw line (without its newline);
    :attr:`errors` holds OpenAI's error objects once fed; :meth:`finish` adds the whole file's errors."""

    endpoint: str
    max_line_bytes: int
    errors: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0
    size: int = 0
    _ids: set[str] = field(default_factory=set)
    _embedding_inputs: int = 0
    _dropped: int = 0
    _index: int = -1

    def feed(self, raw: bytes) -> CheckedLine | None:
        """Check one line of the file; the line to keep when valid (None: blank, or an error recorded)."""
        self._index += 1
        self.size += len(raw) + 1
        number = self._index + 1
        if not raw.strip():
            return None
        self.lines += 1
        if self.lines > MAX_LINES:
            if self.lines == MAX_LINES + 1:
                self._error("too_many_tasks", f"The batch input file has more than {MAX_LINES} requests.", number)
            return None
        if len(raw) > self.max_line_bytes:
            return self._error("request_too_large", f"This line is {len(raw)} bytes, over the {self.max_line_bytes} "
                               "bytes a request may have.", number)
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return self._error("invalid_json_line", "This line is not parseable as valid JSON.", number)
        if not isinstance(line, dict):
            return self._error("invalid_json_line", "This line is not a JSON object.", number)
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            return self._error("missing_required_parameter", "Missing required parameter: 'custom_id' (a "
                               "non-empty string).", number, "custom_id")
        if len(custom_id) > MAX_CUSTOM_ID_CHARS:
            return self._error("invalid_value", f"'custom_id' is longer than {MAX_CUSTOM_ID_CHARS} characters.",
                               number, "custom_id")
        if custom_id in self._ids:
            return self._error("duplicate_custom_id", "The custom_id for this request is a duplicate of another "
                               "request. The custom_id parameter must be unique for each request in a batch.",
                               number, "custom_id")
        self._ids.add(custom_id)
        method = line.get("method")
        if method != "POST":
            return self._error("invalid_method", f"Invalid value for 'method': {_shown(method)}. Only 'POST' is "
                               "supported.", number, "method")
        url = line.get("url")
        if url != self.endpoint:
            return self._error("mismatched_endpoint", f"The url {_shown(url)} does not match the batch's endpoint "
                               f"'{self.endpoint}'. Every request of a batch goes to its endpoint.", number, "url")
        body = line.get("body")
        if not isinstance(body, dict):
            return self._error("invalid_value", "'body' must be a JSON object: the request sent to the endpoint.",
                               number, "body")
        if self.endpoint == "/v1/embeddings":
            inputs = body.get("input")
            self._embedding_inputs += len(inputs) if isinstance(inputs, list) else 1
            if self._embedding_inputs > MAX_EMBEDDING_INPUTS:
                return self._error("too_many_tasks", f"An /v1/embeddings batch may embed at most "
                                   f"{MAX_EMBEDDING_INPUTS} inputs across its requests.", number, "body.input")
        return CheckedLine(self._index, custom_id, orjson.dumps(body))

    def finish(self) -> list[dict[str, Any]]:
        """The file's errors, the whole file's (empty, too large) after the lines'."""
        if self.size > MAX_INPUT_BYTES:
            self._error("file_too_large", f"The batch input file is over {MAX_INPUT_BYTES} bytes.", None)
        if self.lines == 0:
            self._error("empty_file", "The batch input file is empty.", None)
        if self._dropped:
            self.errors.append({"code": "too_many_errors", "message": f"{self._dropped} more lines have errors.",
                                "param": None, "line": None})
        return self.errors

    def _error(self, code: str, message: str, line: int | None, param: str | None = None) -> CheckedLine | None:
        """Record an error of the file (of ``line``, 1-based, or of the whole file); None, the line not kept."""
        if len(self.errors) >= MAX_REPORTED_ERRORS:
            self._dropped += 1
            return None
        self.errors.append({"code": code, "message": message, "param": param, "line": line})
        return None


def split_lines(pieces: Iterator[bytes] | list[bytes], tail: bytearray) -> Iterator[bytes]:
    """The complete lines of ``pieces`` (chunks of a file); what follows the last newline stays in ``tail`` for the
    next call (the file's last line is ``tail`` once it has ended)."""
    for piece in pieces:
        tail += piece
        start = 0
        while True:
            end = tail.find(b"\n", start)
            if end < 0:
                break
            yield bytes(tail[start:end]).rstrip(b"\r")
            start = end + 1
        del tail[:start]


def _shown(value: object) -> str:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return repr(text[:200])
