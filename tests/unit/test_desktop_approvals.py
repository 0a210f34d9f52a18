"""The desktop's origin gate in the real egress proxy (a loopback host, real sockets), origins as the web writes
them, and a sign-in form's report and values checked (sandbox/desktop/origins.py, sign_in.py,
sandbox/egress/origins.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from responses_bridge.sandbox.desktop.origins import OriginApprovals
from responses_bridge.sandbox.desktop.sign_in import SignInError, check_values, parse_form, submitted_values
from responses_bridge.sandbox.egress.origins import parse_origin, url_origin
from responses_bridge.sandbox.egress.policy import EgressRules
from responses_bridge.sandbox.egress.proxy import EgressLimits, EgressProxy
from tests.unit.test_egress_proxy import Host, exchange, fake_dns, policy_of


@pytest.fixture(scope="module")
async def host() -> AsyncIterator[Host]:
    served = Host()
    await served.start()
    yield served
    assert served.runner is not None
    await served.runner.cleanup()


@pytest.fixture
async def gated(host: Host) -> AsyncIterator[tuple[EgressProxy, OriginApprovals]]:
    approvals = OriginApprovals(hold=30.0)
    proxy = EgressProxy(policy_of("app.test"), EgressRules.parse(f"127.0.0.1:{host.port}"), EgressLimits(),
                        tenant="t", resolver=fake_dns, origins=approvals)
    await proxy.start()
    yield proxy, approvals
    await proxy.close()


async def _pending(approvals: OriginApprovals) -> tuple[str, ...]:
    for _ in range(400):
        if approvals.pending():
            return approvals.pending()
        await asyncio.sleep(0.005)
    return approvals.pending()


async def test_a_request_waits_for_its_origin_and_goes_on_once_allowed(gated: tuple[EgressProxy, OriginApprovals],
                                                                       host: Host) -> None:
    proxy, approvals = gated
    before = len(host.seen)
    asked = asyncio.ensure_future(exchange(proxy, f"GET http://app.test:{host.port}/echo-headers HTTP/1.1\r\n"
                                           f"Host: app.test:{host.port}\r\n\r\n".encode()))
    assert await _pending(approvals) == (f"http://app.test:{host.port}",)
    assert not asked.done() and len(host.seen) == before  # held: nothing sent
    approvals.allow(f"http://app.test:{host.port}")
    answer = await asyncio.wait_for(asked, 15)
    assert answer.startswith(b"HTTP/1.1 200") and len(host.seen) == before + 1
    assert approvals.pending() == ()
    again = await exchange(proxy, f"GET http://app.test:{host.port}/echo-headers HTTP/1.1\r\n\r\n".encode())
    assert again.startswith(b"HTTP/1.1 200")  # allowed from then on, never asked again


@pytest.mark.parametrize("decision", ["deny", "dismiss"])
async def test_a_denied_or_dismissed_origin_gets_a_403_and_is_never_reached(
        gated: tuple[EgressProxy, OriginApprovals], host: Host, decision: str) -> None:
    proxy, approvals = gated
    before = len(host.seen)
    origin = f"http://app.test:{host.port}"
    asked = asyncio.ensure_future(exchange(proxy, f"CONNECT app.test:{host.port} HTTP/1.1\r\n\r\n".encode()))
    assert await _pending(approvals) == (f"https://app.test:{host.port}",)  # a tunnel is the https origin
    getattr(approvals, decision)(f"https://app.test:{host.port}")
    answer = await asyncio.wait_for(asked, 15)
    assert answer.startswith(b"HTTP/1.1 403") and b"X-Egress-Outcome: origin_not_approved" in answer
    plain = asyncio.ensure_future(exchange(proxy, f"GET {origin}/echo-headers HTTP/1.1\r\n\r\n".encode()))
    assert await _pending(approvals) == (origin,)  # the http origin is another one
    approvals.deny(origin)
    assert (await asyncio.wait_for(plain, 15)).startswith(b"HTTP/1.1 403")
    assert len(host.seen) == before
    if decision == "deny":  # remembered: refused at once, never pending again
        later = await exchange(proxy, f"CONNECT app.test:{host.port} HTTP/1.1\r\n\r\n".encode())
        assert later.startswith(b"HTTP/1.1 403") and approvals.pending() == ()


async def test_the_policy_bounds_what_can_be_approved(gated: tuple[EgressProxy, OriginApprovals], host: Host) -> None:
    proxy, approvals = gated
    before = len(host.seen)
    for origin in (f"http://other.test:{host.port}", f"http://app.test:{host.port + 1}"):
        approvals.allow(origin)  # not in the policy's domains; not a port the deployment's rules allow
    for target in (f"http://other.test:{host.port}/", f"http://app.test:{host.port + 1}/"):
        answer = await exchange(proxy, f"GET {target} HTTP/1.1\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 403") and b"origin_not_approved" not in answer, answer[:200]
    assert approvals.pending() == () and len(host.seen) == before  # refused before its owner was asked


async def test_a_hold_ends_with_a_403_and_the_origin_stays_pending(host: Host) -> None:
    approvals = OriginApprovals(hold=0.05)
    proxy = EgressProxy(policy_of("app.test"), EgressRules.parse(f"127.0.0.1:{host.port}"), EgressLimits(),
                        resolver=fake_dns, origins=approvals)
    await proxy.start()
    try:
        answer = await exchange(proxy, f"GET http://app.test:{host.port}/ HTTP/1.1\r\n\r\n".encode())
        assert b"X-Egress-Outcome: origin_not_approved" in answer
        assert approvals.pending() == (f"http://app.test:{host.port}",)
    finally:
        await proxy.close()


@pytest.mark.parametrize(("text", "expected"), [
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"), ("HTTPS://Example.COM:443/", "https://example.com"),
    ("http://example.com:80", "http://example.com"), ("https://[::1]:8443", "https://[::1]:8443"),
    ("https://bücher.example", "https://xn--bcher-kva.example"),
    ("ftp://example.com", None), ("http://example.com/path", None), ("http://user@example.com", None),
    ("http://example.com:0", None), ("http://example.com:99999", None), ("example.com", None), ("http://", None),
    ("http://exa mple.com", None), ("http://example.com?q", None),
])
def test_origins_are_written_as_the_web_writes_them(text: str, expected: str | None) -> None:
    assert parse_origin(text) == expected


def test_a_urls_origin_drops_its_path() -> None:
    assert url_origin("http://127.0.0.1:9000/login?next=/") == "http://127.0.0.1:9000"
    assert url_origin("about:blank") is None


REPORT = {"origin": "https://app.test", "key": "1700000000000.5",
          "fields": [{"id": "username", "label": "Email", "required": True, "type": "email"},
                     {"id": "password", "label": "Password", "required": True, "type": "password"},
                     {"id": "otp", "label": "Code", "required": False, "type": "text"}]}


def test_a_report_becomes_the_sdks_browser_authentication_request() -> None:
    form = parse_form(REPORT)
    assert form is not None
    assert form.request() == {"type": "browser_authentication", "credential_origin": "https://app.test",
                              "fields": REPORT["fields"], "options": [], "reason": form.reason}
    assert "1700000000000.5" not in repr(form)


@pytest.mark.parametrize("report", [
    None, "x", {"key": "k"}, {"key": "k", "fields": []}, {"key": "k", "fields": [{"id": "bad id!"}]},
    {"key": "k", "fields": [{"id": "a"}, {"id": "a"}]},
])
def test_a_bad_report_is_no_form(report: object) -> None:
    assert parse_form(report) is None


def test_an_opaque_page_has_no_credential_origin_and_at_most_six_fields_are_kept() -> None:
    many = {"origin": "null", "key": "k", "fields": [{"id": f"f{n}", "type": "text"} for n in range(9)]}
    form = parse_form(many)
    assert form is not None and form.credential_origin is None and len(form.fields) == 6


@pytest.mark.parametrize(("values", "option", "param", "code"), [
    ({"user": "s3cret-value"}, None, "fields[0].field_id", "invalid_value"),
    ({"username": "a", "password": 7}, None, "fields[1].value", "invalid_type"),
    ({"username": "a"}, None, "fields", "missing_required_parameter"),
    ({"username": "a", "password": ""}, None, "fields", "missing_required_parameter"),
    ({"username": "a", "password": "b"}, "sso", "selected_option", "invalid_value"),
    ({"username": "a", "password": "x" * (121 * 1024)}, None, "fields", "invalid_value"),
])
def test_values_that_do_not_fit_the_form_are_a_400_naming_the_field_never_the_value(
        values: dict[str, str], option: str | None, param: str, code: str) -> None:
    form = parse_form(REPORT)
    assert form is not None
    with pytest.raises(SignInError) as refused:
        check_values(form, values, option)
    assert refused.value.status == 400 and refused.value.param == param and refused.value.code == code
    assert "s3cret-value" not in refused.value.message and "xxxx" not in refused.value.message


def test_values_that_fit_are_kept_as_given() -> None:
    form = parse_form(REPORT)
    assert form is not None
    assert check_values(form, {"username": "a@b", "password": "pw"}) == {"username": "a@b", "password": "pw"}


def test_the_sdks_submitted_fields_become_values() -> None:
    assert submitted_values([{"field_id": "username", "value": "a"}, {"field_id": "password", "value": "b"}]) == {
        "username": "a", "password": "b"}


@pytest.mark.parametrize(("raw", "param", "code"), [
    ({"username": "s3cret-value"}, "fields", "invalid_type"),
    ([{"field_id": f"f{n}", "value": "s3cret-value"} for n in range(7)], "fields", "invalid_value"),
    (["s3cret-value"], "fields[0]", "invalid_type"),
    ([{"field_id": "a", "value": "s3cret-value", "label": "x"}], "fields[0].label", "unknown_parameter"),
    ([{"field_id": "a"}], "fields[0].value", "missing_required_parameter"),
    ([{"field_id": 1, "value": "s3cret-value"}], "fields[0].field_id", "invalid_type"),
    ([{"field_id": "a", "value": "s3cret-value"}, {"field_id": "a", "value": "s3cret-value"}], "fields[1].field_id",
     "invalid_value"),
])
def test_bad_submitted_fields_are_a_400_naming_the_entry_never_the_value(raw: object, param: str, code: str) -> None:
    with pytest.raises(SignInError) as refused:
        submitted_values(raw)
    assert refused.value.param == param and refused.value.code == code
    assert "s3cret-value" not in refused.value.message
