"""AWS Signature Version 4, checked: how ``codex exec-server --remote … --remote-transport direct --aws-sigv4``
authenticates its registration and its websocket to the environment registry (the only way its direct transport
signs; a bearer token is sent only by its Noise transport, which the bridge does not serve).

The bridge is the registry, so it checks the signature itself: the canonical request is remade from what arrived
(method, path, query, the signed headers, the body's SHA-256), signed with the secret the bridge derives for the
access key id (services/executor_credentials.py), and compared in constant time. The signature's time must be within
:data:`MAX_SKEW` of the bridge's clock, so a captured request cannot be replayed later. Nothing here is logged: the
caller gets a reason to answer with, never the secret or the signature.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

ALGORITHM = "AWS4-HMAC-SHA256"
MAX_SKEW = 300  # seconds either side of the bridge's clock, as AWS allows (its 5 minutes)
_AUTHORIZATION = re.compile(r"AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*SignedHeaders=([^,\s]+),\s*"
                            r"Signature=([0-9a-f]{64})\Z")


class SignatureRefused(Exception):
    """The request is not signed by a key the bridge knows: the reason, safe to answer with (no secret in it)."""


@dataclass(frozen=True, slots=True)
class Signed:
    """A request whose signature held: the access key id it was signed with, and the scope's region and service."""

    access_key_id: str
    region: str
    service: str


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _encode(text: str) -> str:
    return urllib.parse.quote(text, safe="-_.~")


def canonical_query(raw_query: str) -> str:
    pairs = urllib.parse.parse_qsl(raw_query, keep_blank_values=True)
    return "&".join(f"{_encode(name)}={_encode(value)}" for name, value in sorted(pairs))


def canonical_path(raw_path: str) -> str:
    """The path as SigV4 signs it for services other than S3 (each segment encoded, then encoded again)."""
    segments = urllib.parse.unquote(raw_path).split("/")
    return "/".join(_encode(_encode(segment)) for segment in segments) or "/"


def signature(secret: str, *, method: str, raw_path: str, raw_query: str, headers: Mapping[str, str],
              signed_headers: list[str], body: bytes, amz_date: str, scope: str) -> str:
    """The hex signature of a request (what the client computed, if it holds ``secret``)."""
    canonical_headers = "".join(f"{name}:{' '.join(headers.get(name, '').split())}\n" for name in signed_headers)
    canonical = "\n".join((method.upper(), canonical_path(raw_path), canonical_query(raw_query), canonical_headers,
                           ";".join(signed_headers), hashlib.sha256(body).hexdigest()))
    to_sign = "\n".join((ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()))
    day, region, service, _ = scope.split("/")
    key = _hmac(_hmac(_hmac(_hmac(("AWS4" + secret).encode(), day), region), service), "aws4_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def verify(*, method: str, raw_path: str, raw_query: str, headers: Mapping[str, str], body: bytes,
           secret_for: Callable[[str], str | None], now: datetime | None = None) -> Signed:
    """The request's signer, or :class:`SignatureRefused`. ``headers``: any case (looked up lowercased);
    ``secret_for``: the secret of an access key id (None: not a key of the bridge's)."""
    lowered = {name.lower(): value for name, value in headers.items()}
    match = _AUTHORIZATION.match(lowered.get("authorization", "").strip())
    if match is None:
        raise SignatureRefused("expected an AWS Signature Version 4 Authorization header (run codex exec-server with "
                               "--aws-sigv4 and the session's executor credentials)")
    credential, signed_list, claimed = match.groups()
    parts = credential.split("/")
    if len(parts) != 5 or parts[4] != "aws4_request":
        raise SignatureRefused("malformed credential scope")
    access_key_id, day, region, service = parts[:4]
    signed_headers = signed_list.split(";")
    if "host" not in signed_headers or "x-amz-date" not in signed_headers:
        raise SignatureRefused("the signature must cover the host and x-amz-date headers")
    amz_date = lowered.get("x-amz-date", "")
    try:
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        raise SignatureRefused("missing or malformed x-amz-date") from None
    if not amz_date.startswith(day):
        raise SignatureRefused("the credential scope's date is not the request's")
    if abs(((now or datetime.now(UTC)) - when).total_seconds()) > MAX_SKEW:
        raise SignatureRefused("the request's x-amz-date is more than 5 minutes from the bridge's clock")
    secret = secret_for(access_key_id)
    if secret is None:
        raise SignatureRefused("unknown access key id")
    expected = signature(secret, method=method, raw_path=raw_path, raw_query=raw_query, headers=lowered,
                         signed_headers=signed_headers, body=body, amz_date=amz_date,
                         scope=f"{day}/{region}/{service}/aws4_request")
    if not hmac.compare_digest(expected, claimed):
        raise SignatureRefused("the signature does not match")
    return Signed(access_key_id, region, service)
