"""The egress proxy's parser: every well-formed head it is given reads back as written, any bytes at all are either
a head or a :class:`BadRequest` (never another exception), the ambiguities a server behind could read another way
are refused, and the head forwarded carries the URL's own host and the secrets in place of their placeholders."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from responses_bridge.sandbox.egress.request_head import (
    BadRequest,
    destination,
    forwarded_head,
    named_destination,
    parse_head,
)

TOKEN = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~",
                min_size=1, max_size=20)
VALUE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=40)
FIELDS = st.lists(st.tuples(TOKEN.filter(lambda name: name.lower() not in ("host", "content-length",
                                                                           "transfer-encoding")), VALUE),
                  max_size=8)
TARGET = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7e), min_size=1, max_size=60)


@given(TOKEN, TARGET, st.sampled_from(["HTTP/1.1", "HTTP/1.0"]), FIELDS)
def test_a_well_formed_head_reads_back_as_written(method: str, target: str, version: str,
                                                   fields: list[tuple[str, str]]) -> None:
    raw = f"{method} {target} {version}\r\n" + "".join(f"{name}: {value}\r\n" for name, value in fields) + "\r\n"
    head = parse_head(raw.encode())
    assert (head.method, head.target, head.version) == (method, target, version)
    assert list(head.headers) == fields


@given(st.binary(max_size=300))
def test_any_bytes_are_a_head_or_a_bad_request(data: bytes) -> None:
    for candidate in (data, data + b"\r\n\r\n"):
        try:
            head = parse_head(candidate)
        except BadRequest:
            continue
        with contextlib.suppress(BadRequest):
            destination(head)


@given(st.sampled_from(["\r", "\n", "\x00", "\x7f", "\x01"]), VALUE)
def test_control_characters_in_a_field_are_refused(control: str, value: str) -> None:
    with pytest.raises(BadRequest):
        parse_head(f"GET http://a.com/ HTTP/1.1\r\nX: {value}{control}{value}\r\n\r\n".encode())


@pytest.mark.parametrize("raw", [
    b"GET http://a.com/ HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\n\r\n",
    b"POST http://a.com/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST http://a.com/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
    b"GET http://a.com/ HTTP/1.1\r\nX : y\r\n\r\n",
    b"GET http://a.com/ HTTP/1.1\r\nX: y\r\n folded\r\n\r\n",
    b"GET  http://a.com/ HTTP/1.1\r\n\r\n",
    b"GET http://a.com/ HTTP/2\r\n\r\n",
    b"GET http://a.com/ HTTP/1.1\n\n",
    b"GET http://a.com/ HTTP/1.1\r\n",
])
def test_ambiguous_heads_are_refused(raw: bytes) -> None:
    with pytest.raises(BadRequest):
        parse_head(raw)


@pytest.mark.parametrize(("target", "method", "expected"), [
    ("api.example.com:443", "CONNECT", ("api.example.com", 443, True, "/")),
    ("[2001:db8::1]:8443", "CONNECT", ("2001:db8::1", 8443, True, "/")),
    ("http://API.Example.com/v1/x?q=1", "GET", ("api.example.com", 80, False, "/v1/x?q=1")),
    ("http://a.com:8080", "GET", ("a.com", 8080, False, "/")),
    ("http://a.com?q", "GET", ("a.com", 80, False, "/?q")),
    ("http://bücher.example/", "GET", None),  # not a token character: refused by the request line
])
def test_the_destination_of_each_form(target: str, method: str,
                                      expected: tuple[str, int, bool, str] | None) -> None:
    raw = f"{method} {target} HTTP/1.1\r\n\r\n".encode()
    if expected is None:
        with pytest.raises(BadRequest):
            destination(parse_head(raw))
        return
    where = destination(parse_head(raw))
    assert (where.host, where.port, where.tunnel, where.path) == expected


@pytest.mark.parametrize("target", ["/relative", "https://a.com/", "http://user:pw@a.com/", "http://a.com:0/",
                                    "http://a.com:99999/", "http://a_b.com/", "ftp://a.com/", "http://:80/"])
def test_targets_the_proxy_does_not_take(target: str) -> None:
    with pytest.raises(BadRequest):
        destination(parse_head(f"GET {target} HTTP/1.1\r\n\r\n".encode()))
    if not target.startswith("/"):
        with pytest.raises(BadRequest):
            destination(parse_head(b"CONNECT a.com HTTP/1.1\r\n\r\n"))  # no port


def test_the_forwarded_head_has_the_urls_host_no_proxy_fields_and_the_secrets() -> None:
    head = parse_head(b"GET http://api.example.com:8080/x?y=1 HTTP/1.1\r\nHost: evil.example\r\n"
                      b"Authorization: Bearer PH-1\r\nProxy-Authorization: Basic x\r\nX-Api-Key: PH-1\r\n"
                      b"Origin: http://PH-1.example\r\nReferer: PH-1\r\nAccept-Encoding: gzip\r\n"
                      b"Connection: keep-alive, X-Drop\r\nX-Drop: 1\r\nX-Keep: PH-2 and PH-1\r\n\r\n")
    sent = forwarded_head(head, destination(head), {"PH-1": "s3cret"}).decode()
    lines = sent.split("\r\n")
    # a request carrying secrets goes as HTTP/1.0, unencoded, so its answer can be scanned for them
    assert lines[0] == "GET /x?y=1 HTTP/1.0" and lines[1] == "Host: api.example.com:8080"
    assert "Authorization: Bearer s3cret" in lines and "X-Api-Key: s3cret" in lines  # credential fields only
    assert "X-Keep: PH-2 and PH-1" in lines and "Origin: http://PH-1.example" in lines and "Referer: PH-1" in lines
    assert "evil.example" not in sent and "Proxy-Authorization" not in sent and "X-Drop" not in sent
    assert "gzip" not in sent and "Accept-Encoding: identity" in lines
    assert lines[-3] == "Connection: close" and sent.endswith("\r\n\r\n")
    plain = forwarded_head(head, destination(head), {}).decode()  # no secrets: the client's own version
    assert plain.startswith("GET /x?y=1 HTTP/1.1\r\n") and "Accept-Encoding: gzip" in plain


@pytest.mark.parametrize(("prefix", "host", "port"), [
    (b"GET http://a.com:8080/" + b"x" * 3000, "a.com", 8080),  # the target cut off past its host
    (b"GET http://A.com?" + b"q" * 100, "a.com", 80),
    (b"CONNECT a.com:443 HTTP/1.1\r\nX: " + b"y" * 3000, "a.com", 443),
    (b"GET http://[::1]:81/ HTTP/1.1\r\n", "::1", 81),
])
def test_the_start_of_a_head_too_large_names_where_it_went(prefix: bytes, host: str, port: int) -> None:
    where = named_destination(prefix)
    assert where is not None and (where.host, where.port) == (host, port)


@pytest.mark.parametrize("prefix", [
    b"GET http://a.com" + b"m" * 3000,  # cut off within its host: no host named
    b"CONNECT a.com:44",  # a CONNECT's target cut off
    b"GET /relative HTTP/1.1\r\n", b"GET https://a.com/ HTTP/1.1\r\n", b"GET http://u@a.com/ HTTP/1.1\r\n",
    b"\x00\x01garbage", b"",
])
def test_a_start_that_names_no_host_is_none(prefix: bytes) -> None:
    assert named_destination(prefix) is None


@given(st.binary(max_size=300))
def test_any_start_names_a_destination_or_none(data: bytes) -> None:
    named_destination(data)  # never an exception
