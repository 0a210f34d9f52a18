"""The desktop's browser trusts the call's own authority by its key (sandbox/desktop/proxy_relay.py): the hash read
from the call's CA bundle — the last certificate, after the system's — is the SHA-256 of that authority's
SubjectPublicKeyInfo, as ``cryptography`` computes it, and nothing for a file without a certificate."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from responses_bridge.sandbox.desktop.proxy_relay import authority_key_hash
from responses_bridge.sandbox.egress.tls import Interceptor

pytestmark = pytest.mark.store_free


def test_the_key_hash_is_the_last_certificates_subject_public_key_info(tmp_path: Path) -> None:
    authority = Interceptor(["example.test"])
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(authority.bundle())  # the system's authorities first, the call's last
    spki = authority.ca.public_key().public_bytes(serialization.Encoding.DER,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo)
    assert authority_key_hash(str(bundle)) == base64.b64encode(hashlib.sha256(spki).digest()).decode()


def test_no_certificate_no_hash(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"not a certificate\n")
    assert authority_key_hash(str(empty)) is None
    assert authority_key_hash(str(tmp_path / "missing.pem")) is None
    assert authority_key_hash(None) is None
