"""Sealed blobs: state a client carries for us (``encrypted_content`` of reasoning and compaction items).

A blob is ``rb1.`` + urlsafe-base64(nonce ‖ AES-256-GCM(ciphertext ‖ tag)), with the blob's purpose as
associated data, so a reasoning blob cannot be replayed as a compaction blob. Only a deployment holding the same
key can open it; a changed byte, a foreign blob or another key is refused as a 400, never a crash.

The key comes from ``RESPONSES_BRIDGE_SEALING_KEY`` (urlsafe base64 of 32 bytes); without it a key is created
once in a file beside the database (``sealing.key``, mode 600), which is right for one replica. Replicas
behind one load balancer must share a configured key, or a blob sealed by one is refused by the next.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import tempfile
from pathlib import Path
from typing import Any

import orjson

from .protocol.errors import APIError

PREFIX = "rb1."
_NONCE_BYTES = 12


class Sealer:
    """The cipher is built on first use: a deployment whose clients never send sealed state does not pay the
    cryptography library's memory (about 7 MB)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("the sealing key must be 32 bytes")
        self._key = key
        self._cipher: Any = None

    @property
    def _aead(self) -> Any:
        if self._cipher is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._cipher = AESGCM(self._key)
        return self._cipher

    def seal(self, purpose: str, value: Any) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, orjson.dumps(value), purpose.encode())
        return PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def mac(self, purpose: str, message: bytes) -> str:
        """A keyed digest of ``message`` (HMAC-SHA256, hex, 128 bits) under a key of its own for ``purpose``: what
        proves the bridge made a value a client carries in the clear (a program's fingerprint), and only a
        deployment holding the same sealing key can make or check it."""
        subkey = hmac.new(self._key, b"responses-bridge mac\0" + purpose.encode(), hashlib.sha256).digest()
        return hmac.new(subkey, message, hashlib.sha256).hexdigest()[:32]

    def open(self, purpose: str, blob: Any, *, param: str | None = None) -> Any:
        """The sealed value, or a 400 naming ``param`` when the blob is not one of ours or was altered."""
        try:
            if not isinstance(blob, str) or not blob.startswith(PREFIX):
                raise ValueError("not a sealed blob")
            raw = base64.urlsafe_b64decode(blob[len(PREFIX):].encode())
            if len(raw) <= _NONCE_BYTES + 16:
                raise ValueError("too short")
            plain = self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], purpose.encode())
            return orjson.loads(plain)
        except (ValueError, binascii.Error, orjson.JSONDecodeError, _invalid_tag()):
            raise APIError(400, "The encrypted content could not be verified: it was altered, or sealed by "
                           "another deployment (check RESPONSES_BRIDGE_SEALING_KEY).", param=param,
                           code="invalid_encrypted_content") from None


def _invalid_tag() -> type[Exception]:
    from cryptography.exceptions import InvalidTag

    return InvalidTag


KEY_SETTING = "RESPONSES_BRIDGE_SEALING_KEY"
KEY_FORM = "base64 of 32 random bytes, e.g. the output of: openssl rand -base64 32"
"""What a key must be, as the one line that stops a start with a bad key says it (urlsafe or standard base64)."""


class SealingKeyError(ValueError):
    """A sealing key that cannot be used: the message names where it came from and what it must be."""


def key_problem(text: str) -> str | None:
    """What is wrong with a key as written, or None: checked when the settings are read, before anything opens
    (config/settings.py), so a bad key stops the start with one line instead of a traceback from a half-opened
    bridge."""
    try:
        key = base64.urlsafe_b64decode(text.strip().encode())
    except (binascii.Error, ValueError):
        return "not base64"
    if len(key) != 32:
        return f"decodes to {len(key)} bytes, not 32"
    return None


def decode_key(text: str, where: str = KEY_SETTING) -> bytes:
    """The key's 32 bytes; :class:`SealingKeyError` naming ``where`` (the variable, or the key file) otherwise."""
    problem = key_problem(text)
    if problem is not None:
        raise SealingKeyError(f"{where}: {problem}; it must be {KEY_FORM}")
    return base64.urlsafe_b64decode(text.strip().encode())


def load_or_create_key(configured: str | None, db_path: str) -> bytes:
    if configured:
        return decode_key(configured)
    directory = Path(db_path).parent if db_path != ":memory:" else None
    if directory is None:
        return os.urandom(32)  # nothing persists with an in-memory store either
    path = directory / "sealing.key"
    if path.exists():
        return decode_key(path.read_text(), f"{path} (the sealing key made beside the database; remove it to "
                                            f"have a new one made, or set {KEY_SETTING})")
    from .store.sqlite.private_files import make_private_directory  # as the database's own: made 0700

    make_private_directory(directory)
    return _create_key_file(path)


def new_key_text() -> str:
    """A fresh key, encoded as ``RESPONSES_BRIDGE_SEALING_KEY`` takes it."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _create_key_file(path: Path) -> bytes:
    """Write a new key to a private temporary file, then link it into place: the link either creates
    ``sealing.key`` whole or fails because another process got there first, so no one ever reads a half-written
    key, and the process that lost the race uses the winner's key (both then seal with the same one)."""
    key = os.urandom(32)
    fd, temporary = tempfile.mkstemp(prefix=".sealing.key.", dir=path.parent)  # mode 600
    try:
        with os.fdopen(fd, "w") as file:
            file.write(base64.urlsafe_b64encode(key).decode())
            file.flush()
            os.fsync(file.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return decode_key(path.read_text())
    finally:
        os.unlink(temporary)
    return key
