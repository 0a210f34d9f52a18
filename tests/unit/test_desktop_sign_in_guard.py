"""The desktop process's own judgement of where a sign-in's request goes and where a value shows
(sandbox/desktop/devtools.py's ``url_origin``, masking.py's address check), beside the bridge's origins
(sandbox/egress/origins.py): a request's URL is compared with the browser's ``securityOrigin`` written the same way,
and an address that holds a submitted value in any spelling is found."""

from __future__ import annotations

import pytest

from responses_bridge.sandbox.desktop.devtools import url_origin
from responses_bridge.sandbox.desktop.masking import Masking

pytestmark = pytest.mark.store_free


@pytest.mark.parametrize(("url", "origin"), [
    ("http://127.0.0.1:8080/login?x=1", "http://127.0.0.1:8080"),
    ("http://EXAMPLE.test:80/a", "http://example.test"),
    ("https://example.test:443/", "https://example.test"),
    ("https://example.test:8443/", "https://example.test:8443"),
    ("wss://example.test/socket", "wss://example.test"),
    ("http://[::1]:9/x", "http://[::1]:9"),
    ("http://user:pw@example.test/", "http://example.test"),
    ("data:text/html,hello", "null"),
    ("blob:http://example.test/1", "null"),
    ("http://example.test:99999/", "null"),
    ("javascript:alert(1)", "null"),
    ("", "null"),
])
def test_a_requests_origin_is_written_as_the_browser_writes_a_security_origin(url: str, origin: str) -> None:
    assert url_origin(url) == origin


def test_an_address_holding_a_value_in_any_spelling_is_found() -> None:
    masking = Masking(None)  # type: ignore[arg-type]  # the address check needs no browser
    masking._values = ["pw-Zq8 never+seen", "carol@example.test"]
    assert masking._shown_in("http://a.test/x?p=pw-Zq8%20never%2Bseen")
    assert masking._shown_in("http://a.test/x?p=pw-Zq8+never%2Bseen")
    assert masking._shown_in("http://a.test/#carol%40example.test")
    assert not masking._shown_in("http://a.test/x?p=pw-Zq8")

