"""TLS for the domains a call has secrets for: so that the egress proxy can put a secret into an HTTPS request, it
ends the code's TLS itself with a certificate of its own, reads the request, and sends it on over a TLS connection
of its own to the server, verified against the bridge's trust store as any client of the bridge's would.

Safe by construction rather than by care:

- one certificate authority **per call**, made when the call starts and forgotten when it ends; its private key
  never leaves the bridge's memory (no file, no store, no log);
- the authority is **name-constrained** (a critical X.509 name constraint) to the secret domains alone, so even a
  leaked key could vouch for no other name, and a client that checks constraints would refuse anything else;
- only connections to hosts a secret is for are intercepted; every other ``CONNECT`` stays an end-to-end tunnel;
- the sandbox trusts the authority through ``SSL_CERT_FILE``, ``REQUESTS_CA_BUNDLE`` and ``CURL_CA_BUNDLE``,
  naming a bundle of the system's authorities and this one (bound in read-only), so other HTTPS still verifies;
- the server's certificate is checked by the bridge (``ssl.create_default_context``: chain and host name), so the
  code's client, which sees only the proxy's certificate, loses no check it would have made.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .policy import is_ip_literal

LIFETIME = datetime.timedelta(days=1)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _subtree(domain: str) -> x509.GeneralName:
    """A secret domain as a permitted subtree: a DNS name covers itself and the names under it (RFC 5280), so
    ``*.example.com`` and ``example.com`` both become ``example.com``; an IP literal is its single address."""
    if is_ip_literal(domain):
        address = ipaddress.ip_address(domain)
        return x509.IPAddress(ipaddress.ip_network(f"{address}/{address.max_prefixlen}"))
    return x509.DNSName(domain.removeprefix("*."))


class Interceptor:
    """One call's authority over ``domains`` (the secrets' domains), and the leaf certificates it signs."""

    def __init__(self, domains: Sequence[str]) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._not_before = now - datetime.timedelta(minutes=5)
        subject = _name("responses-bridge egress proxy (one call)")
        subtrees = list(dict.fromkeys(_subtree(domain) for domain in domains))
        self.ca = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(self._not_before).not_valid_after(now + LIFETIME)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                content_commitment=False, key_encipherment=False,
                                                data_encipherment=False, key_agreement=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.NameConstraints(permitted_subtrees=subtrees, excluded_subtrees=None),
                                  critical=True)
                   .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
                   .sign(self._key, hashes.SHA256()))
        self._contexts: dict[str, ssl.SSLContext] = {}

    def ca_pem(self) -> bytes:
        return self.ca.public_bytes(serialization.Encoding.PEM)

    def bundle(self) -> bytes:
        """The system's authorities (the bridge's default bundle) and this call's: what the sandbox trusts."""
        system = ssl.get_default_verify_paths().cafile
        try:
            found = Path(system).read_bytes() if system else b""
        except OSError:
            found = b""
        return found.rstrip(b"\n") + b"\n" + self.ca_pem()

    def server_context(self, host: str) -> ssl.SSLContext:
        """The TLS the proxy offers the code for ``host``: a leaf certificate of this call's authority, HTTP/1.1
        only (the proxy reads one HTTP/1.1 request)."""
        context = self._contexts.get(host)
        if context is not None:
            return context
        key = ec.generate_private_key(ec.SECP256R1())
        alternative: x509.GeneralName = (x509.IPAddress(ipaddress.ip_address(host)) if is_ip_literal(host)
                                         else x509.DNSName(host))
        leaf = (x509.CertificateBuilder().subject_name(_name(host[:64])).issuer_name(self.ca.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(self._not_before).not_valid_after(self.ca.not_valid_after_utc)
                .add_extension(x509.SubjectAlternativeName([alternative]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                               critical=False)
                .sign(self._key, hashes.SHA256()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_alpn_protocols(["http/1.1"])
        # ssl loads a chain only from files: a private temporary directory, removed at once
        with tempfile.TemporaryDirectory(prefix="responses-bridge-egress-tls-") as directory:
            chain, secret = Path(directory, "chain.pem"), Path(directory, "key.pem")
            chain.write_bytes(leaf.public_bytes(serialization.Encoding.PEM) + self.ca_pem())
            secret.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))
            context.load_cert_chain(chain, secret)
        self._contexts[host] = context
        return context


def client_context() -> ssl.SSLContext:
    """The proxy's own TLS to the server: the bridge's trust store, host names checked, HTTP/1.1."""
    context = ssl.create_default_context()
    context.set_alpn_protocols(["http/1.1"])
    return context
