"""The input file's checks (services/batches/validation.py) as OpenAI makes them: each error named with its line
(1-based), the whole file's errors (empty, too many requests) after, a valid line kept as the body to send; and the
file split into lines whatever its chunks."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from responses_bridge.services.batches import validation
from responses_bridge.services.batches.validation import InputCheck, split_lines


def raw(custom_id: str = "a", **changes: Any) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/responses",
                         "body": {"model": "m", "input": "x"}, **changes})


def checked(lines: list[bytes], endpoint: str = "/v1/responses", max_line_bytes: int = 10_000) -> InputCheck:
    check = InputCheck(endpoint, max_line_bytes)
    for line in lines:
        check.feed(line)
    check.finish()
    return check


def test_a_valid_line_is_kept_as_its_body() -> None:
    check = InputCheck("/v1/responses", 10_000)
    kept = check.feed(raw("first"))
    assert kept is not None and kept.index == 0 and kept.custom_id == "first"
    assert orjson.loads(kept.body) == {"model": "m", "input": "x"}
    assert check.feed(b"   ") is None  # a blank line: skipped, still counted for the numbering
    second = check.feed(raw("second"))
    assert second is not None and second.index == 2
    assert check.finish() == []


@pytest.mark.parametrize(("line", "code", "param"), [
    (b"{not json", "invalid_json_line", None),
    (b"[1, 2]", "invalid_json_line", None),
    (raw(custom_id=""), "missing_required_parameter", "custom_id"),
    (raw(custom_id=7), "missing_required_parameter", "custom_id"),
    (raw(custom_id="x" * 513), "invalid_value", "custom_id"),
    (raw(method="GET"), "invalid_method", "method"),
    (raw(url="/v1/chat/completions"), "mismatched_endpoint", "url"),
    (raw(body=[1]), "invalid_value", "body"),
])
def test_each_error_names_its_line(line: bytes, code: str, param: str | None) -> None:
    check = checked([raw("ok"), line])
    assert check.errors == [{"code": code, "message": check.errors[0]["message"], "param": param, "line": 2}]
    assert check.errors[0]["message"]


def test_duplicates_sizes_and_the_whole_files_errors() -> None:
    check = checked([raw("a"), raw("b"), raw("a"), b"x" * 20_001])
    assert [(error["code"], error["line"]) for error in check.errors] == [
        ("duplicate_custom_id", 3), ("request_too_large", 4)]
    assert [error["code"] for error in checked([]).errors] == ["empty_file"]
    assert [error["code"] for error in checked([b"", b"  "]).errors] == ["empty_file"]


def test_limits_on_requests_embedding_inputs_and_reported_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(validation, "MAX_LINES", 3)
    check = checked([raw(str(n)) for n in range(5)])
    assert [(error["code"], error["line"]) for error in check.errors] == [("too_many_tasks", 4)]
    monkeypatch.setattr(validation, "MAX_EMBEDDING_INPUTS", 3)
    embeddings = [orjson.dumps({"custom_id": str(n), "method": "POST", "url": "/v1/embeddings",
                                "body": {"model": "e", "input": ["a", "b"]}}) for n in range(2)]
    assert [(e["code"], e["line"]) for e in checked(embeddings, "/v1/embeddings").errors] == [("too_many_tasks", 2)]
    monkeypatch.setattr(validation, "MAX_REPORTED_ERRORS", 2)
    many = checked([b"bad"] * 3)
    assert [error["code"] for error in many.errors] == ["invalid_json_line", "invalid_json_line", "too_many_errors"]


def test_lines_are_split_whatever_the_chunks() -> None:
    tail = bytearray()
    pieces = [b'{"a"', b':1}\r\n{"b":2}\n{"c', b'":3}']
    assert list(split_lines(pieces, tail)) == [b'{"a":1}', b'{"b":2}']
    assert bytes(tail) == b'{"c":3}'
