"""The code of a code interpreter call, decoded from its streamed JSON arguments as they arrive.

The model writes ``{"code": "import math\\nprint(…)"}`` a few characters at a time; OpenAI streams the code
itself (``response.code_interpreter_call_code.delta``), so the string value is decoded incrementally: each
piece is appended, and whatever of the value can be decoded so far (not ending inside an escape, nor between
the two halves of a surrogate pair) is emitted. Each character is looked at once, so the work is linear in
the arguments' length, however they are cut.
"""

from __future__ import annotations

import json
import re

_KEY = re.compile(r'\{\s*"code"\s*:\s*"')
_HEX = frozenset("0123456789abcdefABCDEF")


class CodeStream:
    """Feed the arguments' pieces; get the newly decoded code of each. A model that does not start its
    arguments with ``{"code": "`` gets no deltas (the code is known when the arguments are complete)."""

    __slots__ = ("_raw", "_start", "_pos", "_done", "_off")

    def __init__(self) -> None:
        self._raw = ""
        self._start = -1  # where the value's characters begin in _raw
        self._pos = 0  # decoded up to here
        self._done = False  # the closing quote was seen
        self._off = False  # not the expected shape: no deltas

    def feed(self, piece: str) -> str:
        if self._done or self._off:
            return ""
        self._raw += piece
        if self._start < 0:
            found = _KEY.match(self._raw)
            if found is None:
                stripped = self._raw.lstrip()
                if len(stripped) > 64 or (stripped and stripped[0] != "{"):
                    self._off = True
                return ""
            self._start = self._pos = found.end()
        end = self._safe_end()
        if end <= self._pos:
            return ""
        segment = self._raw[self._pos:end]
        self._pos = end
        try:
            decoded: str = json.loads('"' + segment + '"')
        except ValueError:
            self._off = True
            return ""
        return decoded

    def _safe_end(self) -> int:
        """How far from ``_pos`` the value can be decoded: up to the closing quote, or to the last point not
        inside an escape or a surrogate pair."""
        raw = self._raw
        index = self._pos
        safe = index
        length = len(raw)
        while index < length:
            char = raw[index]
            if char == '"':
                self._done = True
                return index
            if char != "\\":
                index += 1
                safe = index
                continue
            if index + 1 >= length:
                return safe
            if raw[index + 1] != "u":
                index += 2
                safe = index
                continue
            if index + 6 > length:
                return safe
            code = raw[index + 2:index + 6]
            if not all(c in _HEX for c in code):
                index += 6  # not valid JSON: the decode says so
                safe = index
                continue
            if 0xD800 <= int(code, 16) <= 0xDBFF:  # a high surrogate: wait for its low half
                if index + 12 > length:
                    return safe
                index += 12
            else:
                index += 6
            safe = index
        return safe
