"""Secrets never reach a log: every field of every log event the source writes (found by reading the source, so a
new event is covered the day it is written), given credential-shaped values (a URL with a password, a bearer token,
OpenAI's and the bridge's keys, a key in a query string, a field named like a credential), is written masked,
in both formats, and the standard library's records too. The masking itself (redact.py) is checked on its own."""

from __future__ import annotations

import ast
import io
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from pydantic import SecretStr

from responses_bridge.observability import logs
from responses_bridge.redact import MASK, mask, mask_text

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "responses_bridge"
LEVELS = frozenset({"debug", "info", "warning", "error", "exception", "critical"})
LOGGING_CALL = re.compile(rf"\b(?:log|logger)\s*\.\s*(?:{'|'.join(LEVELS)})\b")
"""What a file holding such a call holds, whatever its spacing: the files without it are not parsed."""
# what a call spreads with ``**context`` (commands/upstream_check.py) or binds: the fields such dictionaries carry
SPREAD_FIELDS = ("upstream", "url", "mode", "error", "hint", "path", "db")
# a URL's password, a bearer token, OpenAI's key, the bridge's key, a key in a query string
SECRETS = ("hunter2pw", "tok3nvalue", "sk-proj-abcdefghijklmnop", "rbk_0123456789ab_" + "x" * 43, "qs3cr3t")


def log_calls() -> dict[str, set[str]]:
    """Every ``log.<level>("event", field=…)`` in the package: its event and field names."""
    found: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if not LOGGING_CALL.search(source):  # a seventh of the files log; parsing every one was a second of each
            continue  # test process's collection
        for node in ast.walk(ast.parse(source)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LEVELS and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in ("log", "logger")):
                continue
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                fields = found.setdefault(node.args[0].value, set())
                fields.update(keyword.arg for keyword in node.keywords if keyword.arg)
                if any(keyword.arg is None for keyword in node.keywords):
                    fields.update(SPREAD_FIELDS)
    return found


EVENTS = log_calls()


def secret_text() -> str:
    url, bearer, openai_key, bridge_key, query = SECRETS
    return (f"postgresql://user:{url}@db.example/bridge failed; Authorization: Bearer {bearer}; key {openai_key} "
            f"and {bridge_key}; GET https://search.example/?q=x&api_key={query}")


def secret_structure() -> dict[str, object]:
    return {"url": f"http://u:{SECRETS[0]}@127.0.0.1:9/v1", "api_key": "plain-looking-key-value",
            "headers": {"Authorization": f"Bearer {SECRETS[1]}"}, "list": [secret_text()]}


@pytest.fixture(params=["json", "console"])
def captured(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    buffer = io.StringIO()
    monkeypatch.setattr(sys, "stderr", buffer)
    logs.configure_logging("debug", request.param)
    try:
        yield buffer
    finally:
        structlog.reset_defaults()
        root.handlers[:] = handlers
        root.setLevel(level)


def test_the_source_has_log_events_to_check() -> None:
    assert len(EVENTS) > 50 and "serving" in EVENTS and "upstream_unreachable" in EVENTS
    assert {"upstreams", "db"} <= EVENTS["serving"]


@pytest.mark.parametrize("event", sorted(EVENTS))
def test_every_field_of_every_event_is_written_masked(event: str, captured: io.StringIO) -> None:
    log = structlog.get_logger("masking-test").bind(masking_call="this-test")
    fields = sorted(EVENTS[event] - {"exc_info"})
    log.warning(event, **{field: secret_text() for field in fields})
    log.warning(event, **{field: secret_structure() for field in fields})
    log.warning(event, **{field: [secret_structure(), (secret_text(),)] for field in fields})
    written = captured.getvalue()
    # this test's lines are told by their mark: a line another test's leftover thread writes meanwhile is not one
    # of them (it is still checked for secrets below); in a full run one such line once made a count of all lines 4.
    # Each call is one whole line: three marked lines naming the event, and no other line holds a piece of the
    # values (a call broken over two lines would leave one there)
    lines = written.splitlines()
    ours = [line for line in lines if "this-test" in line]
    assert len(ours) == 3 and all(event in line for line in ours), written
    assert not [line for line in lines if "this-test" not in line and ("db.example" in line or "127.0.0.1:9" in line)]
    for secret in (*SECRETS, "plain-looking-key-value"):
        assert secret not in written, (event, secret, written)
    assert MASK in "\n".join(ours) or not fields


def test_the_event_words_a_traceback_and_the_standard_librarys_records_are_masked(captured: io.StringIO) -> None:
    logging.getLogger("aiohttp.client").warning("cannot reach http://admin:%s@10.0.0.1/v1", SECRETS[0])
    try:
        raise ValueError(f"refused Bearer {SECRETS[1]}")
    except ValueError:
        structlog.get_logger("masking-test").exception(f"failed at postgresql://u:{SECRETS[4]}@h/d")
    written = captured.getvalue()
    assert "10.0.0.1/v1" in written and "refused Bearer" in written
    for secret in SECRETS:
        assert secret not in written, written


@pytest.mark.parametrize(("text", "shown"), [
    ("postgresql://bridge:p%40ss@db:5432/state", f"postgresql://bridge:{MASK}@db:5432/state"),
    ("http://127.0.0.1:8090/v1", "http://127.0.0.1:8090/v1"),  # a port is not a password
    ("https://user@host/v1", "https://user@host/v1"),
    ("Authorization: Bearer abcdefgh123", f"Authorization: Bearer {MASK}"),
    ("https://x/search?q=cats&api_key=abc123&n=2", f"https://x/search?q=cats&api_key={MASK}&n=2"),
    ("host=db password=secret dbname=x", f"host=db password={MASK} dbname=x"),
    ("upstream said 401 for sk-abcdefghijklmnopqrst", f"upstream said 401 for sk-{MASK}"),
    ("max_tokens=5 cache_key=abc", "max_tokens=5 cache_key=abc"),
])
def test_mask_text(text: str, shown: str) -> None:
    assert mask_text(text) == shown


def test_mask_by_name_and_depth() -> None:
    assert mask({"api_key": "forward", "sealing_key": "k", "database_url": SecretStr("postgresql://a:b@h/d"),
                 "upstreams": [{"name": "x", "api_key": "sk-1", "url": "http://u:p@h/v1"}], "tokens": 12,
                 "prompt_cache_key": "user-1", "empty_key": None}) == {
        "api_key": "forward", "sealing_key": MASK, "database_url": MASK,
        "upstreams": [{"name": "x", "api_key": MASK, "url": f"http://u:{MASK}@h/v1"}], "tokens": 12,
        "prompt_cache_key": "user-1", "empty_key": None}
