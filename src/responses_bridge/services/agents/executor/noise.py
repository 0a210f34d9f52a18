"""The harness's side of ``codex exec-server``'s Noise channel (``noise_hybrid_ik_v1``, its default
``--remote-transport noise``): a hybrid Noise IK handshake and the transport keys it yields.

The suite is ``Noise_hybridIK_X25519+MLKEM768_AESGCM_SHA256`` as the Rust ``clatter`` crate 2.2 builds it (the
protocol name it hashes spells the curve ``25519``). Each side's static key is an X25519 key and an ML-KEM-768 key;
the harness (initiator) knows the exec-server's from its registration and proves its own in the first message:

* ``-> skem, e, es, s, ss`` (an encapsulation to the responder's static ML-KEM key, the ephemeral X25519 and ML-KEM
  public keys, then the static keys encrypted), whose payload is the registry's authorization of the harness key;
* ``<- ekem, skem, e, ee, se`` (clatter 2.2's order: both encapsulations first, to the initiator's ephemeral and
  static ML-KEM keys, then the responder's ephemeral keys), with an empty payload.

Both messages are bound to a prologue naming the environment, the exec-server's registration and the relay stream,
so a handshake captured on one stream cannot be spliced onto another. The primitives are ``cryptography``'s
(X25519, ML-KEM-768 from 47.0, AES-256-GCM, HKDF-SHA256); only the Noise state machine is written here.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import struct
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

try:
    from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PrivateKey, MLKEM768PublicKey
except ImportError:  # cryptography < 47: the registration is refused with this reason (no_mlkem)
    MLKEM768PrivateKey = MLKEM768PublicKey = None  # type: ignore[assignment,misc]

SECURITY_PROFILE = "noise_hybrid_ik_v1"
SUITE = "Noise_hybridIK_X25519+MLKEM768_AESGCM_SHA256"
PROTOCOL_NAME = b"Noise_hybridIK_25519+MLKEM768_AESGCM_SHA256"
PROLOGUE_DOMAIN = b"codex-exec-server-relay-noise/v1"
MAX_MESSAGE = 65535  # Noise's limit on one handshake or transport message
DH_LEN, KEM_PUBLIC_LEN, KEM_CIPHERTEXT_LEN, TAG_LEN = 32, 1184, 1088, 16
RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw
Encapsulate = Callable[[bytes], tuple[bytes, bytes]]  # a public ML-KEM key -> (shared secret, ciphertext)


class NoiseError(Exception):
    """A key, a handshake message or a record that does not hold (never says which secret failed)."""


@functools.cache
def mlkem_missing() -> str | None:
    """Why ML-KEM-768 cannot be used here (a ``cryptography`` before 47, or one built on an OpenSSL without it), or
    None: the one line a refused Noise registration carries."""
    try:
        MLKEM768PrivateKey.generate()
    except (AttributeError, UnsupportedAlgorithm):
        return ("The Noise relay needs ML-KEM-768 from cryptography>=47 (built with it); "
                "run the exec-server with --remote-transport direct instead.")
    return None


@dataclass(frozen=True, slots=True)
class PublicKey:
    """One side's static public keys, as codex's registry carries them (``suite`` with both keys in base64)."""

    dh: bytes
    kem: bytes

    def as_json(self) -> dict[str, str]:
        return {"suite": SUITE, "x25519_public_key": base64.b64encode(self.dh).decode(),
                "mlkem768_public_key": base64.b64encode(self.kem).decode()}

    @classmethod
    def from_json(cls, value: object) -> PublicKey:
        """The key an untrusted JSON value names; :class:`NoiseError` unless it is exactly one of this suite's."""
        if not isinstance(value, dict) or set(value) != {"suite", "x25519_public_key", "mlkem768_public_key"}:
            raise NoiseError("a Noise public key has exactly suite, x25519_public_key and mlkem768_public_key")
        if value["suite"] != SUITE:
            raise NoiseError(f"the Noise suite served is {SUITE}")
        try:
            dh = base64.b64decode(value["x25519_public_key"], validate=True)
            kem = base64.b64decode(value["mlkem768_public_key"], validate=True)
        except (TypeError, ValueError, binascii.Error):
            raise NoiseError("a Noise public key is not base64") from None
        if len(dh) != DH_LEN or len(kem) != KEM_PUBLIC_LEN:
            raise NoiseError("a Noise public key has the wrong length")
        return cls(dh, kem)


@dataclass(frozen=True, slots=True)
class Identity:
    """A static key pair of each kind (the harness's, made per connection: nothing outlives the stream)."""

    dh: X25519PrivateKey
    kem: MLKEM768PrivateKey

    @classmethod
    def generate(cls) -> Identity:
        return cls(X25519PrivateKey.generate(), MLKEM768PrivateKey.generate())

    @classmethod
    def from_secrets(cls, dh: bytes, kem_seed: bytes) -> Identity:
        return cls(X25519PrivateKey.from_private_bytes(dh), MLKEM768PrivateKey.from_seed_bytes(kem_seed))

    def public(self) -> PublicKey:
        return PublicKey(self.dh.public_key().public_bytes(*RAW), self.kem.public_key().public_bytes(*RAW))


def prologue(environment_id: str, registration_id: str, stream_id: str) -> bytes:
    """The domain and the three ids, each after its length as 8 bytes big-endian (no two tuples share one)."""
    parts = (PROLOGUE_DOMAIN, environment_id.encode(), registration_id.encode(), stream_id.encode())
    return b"".join(struct.pack(">Q", len(part)) + part for part in parts)


class CipherState:
    """AES-256-GCM under one key, the nonce a counter (4 zero bytes, then 8 big-endian), as Noise's AESGCM."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self.nonce = 0

    def _next(self) -> bytes:
        if self.nonce >= 2**64 - 1:
            raise NoiseError("Noise nonces exhausted")
        nonce = b"\0\0\0\0" + self.nonce.to_bytes(8, "big")
        self.nonce += 1
        return nonce

    def encrypt(self, ad: bytes, plaintext: bytes) -> bytes:
        return self._aead.encrypt(self._next(), plaintext, ad)

    def decrypt(self, ad: bytes, ciphertext: bytes) -> bytes:
        try:
            return self._aead.decrypt(self._next(), ciphertext, ad)
        except InvalidTag:
            raise NoiseError("a Noise message did not authenticate") from None


def _hkdf(chaining_key: bytes, material: bytes, outputs: int) -> list[bytes]:
    # Noise's HKDF is RFC 5869's with the chaining key as salt and no info
    derived = HKDF(algorithm=hashes.SHA256(), length=32 * outputs, salt=chaining_key, info=b"").derive(material)
    return [derived[at:at + 32] for at in range(0, 32 * outputs, 32)]


class SymmetricState:
    """Noise's chaining key, handshake hash and the cipher they key."""

    def __init__(self, protocol_name: bytes) -> None:
        self.h = protocol_name.ljust(32, b"\0") if len(protocol_name) <= 32 else hashlib.sha256(protocol_name).digest()
        self.ck = self.h
        self.cipher: CipherState | None = None

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, material: bytes) -> None:
        self.ck, key = _hkdf(self.ck, material, 2)
        self.cipher = CipherState(key)

    def mix_key_and_hash(self, material: bytes) -> None:
        self.ck, temp_h, key = _hkdf(self.ck, material, 3)
        self.mix_hash(temp_h)
        self.cipher = CipherState(key)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        out = plaintext if self.cipher is None else self.cipher.encrypt(self.h, plaintext)
        self.mix_hash(out)
        return out

    def decrypt_and_hash(self, data: bytes) -> bytes:
        out = data if self.cipher is None else self.cipher.decrypt(self.h, data)
        self.mix_hash(data)
        return out

    def split(self) -> tuple[CipherState, CipherState]:
        first, second = _hkdf(self.ck, b"", 2)
        return CipherState(first), CipherState(second)


@dataclass(slots=True)
class Transport:
    """The keys after the handshake: records the harness sends and those it receives, each under its own nonce
    (implicit: records are decrypted in the order they were sent, which the relay's sequence numbers restore)."""

    sending: CipherState
    receiving: CipherState

    def encrypt(self, plaintext: bytes) -> bytes:
        if len(plaintext) + TAG_LEN > MAX_MESSAGE:
            raise NoiseError("a Noise record is at most 65535 bytes")
        return self.sending.encrypt(b"", plaintext)

    def decrypt(self, ciphertext: bytes) -> bytes:
        if not TAG_LEN <= len(ciphertext) <= MAX_MESSAGE:
            raise NoiseError("a Noise record's length is out of bounds")
        return self.receiving.decrypt(b"", ciphertext)


def _encapsulate(public: bytes) -> tuple[bytes, bytes]:
    return MLKEM768PublicKey.from_public_bytes(public).encapsulate()


class InitiatorHandshake:
    """The harness's two steps: :meth:`request` (the first message) and :meth:`finish` (the exec-server's answer,
    which yields the :class:`Transport`). ``ephemeral`` and ``encapsulate`` are given only to replay a recorded
    handshake (the unit tests); otherwise each is fresh randomness."""

    def __init__(self, identity: Identity, responder: PublicKey, prologue_bytes: bytes, *,
                 ephemeral: Identity | None = None, encapsulate: Encapsulate = _encapsulate) -> None:
        self.identity, self.responder = identity, responder
        self.ephemeral = ephemeral or Identity.generate()
        self._encapsulate = encapsulate
        self.state = SymmetricState(PROTOCOL_NAME)
        self.state.mix_hash(prologue_bytes)
        self.state.mix_hash(responder.dh)  # the responder's static key, known before the handshake (<- s)
        self.state.mix_hash(responder.kem)
        self._sent = False

    def _dh(self, own: X25519PrivateKey, peer: bytes) -> bytes:
        try:
            return own.exchange(X25519PublicKey.from_public_bytes(peer))
        except ValueError:  # a low-order point (an all-zero secret)
            raise NoiseError("a Noise public key is not usable") from None

    def request(self, payload: bytes) -> bytes:
        """``-> skem, e, es, s, ss`` with ``payload`` encrypted last."""
        if self._sent:
            raise NoiseError("the handshake's first message was sent already")
        self._sent = True
        state, parts = self.state, []
        secret, ciphertext = self._encapsulate(self.responder.kem)  # skem
        parts.append(state.encrypt_and_hash(ciphertext))
        state.mix_key_and_hash(secret)
        ephemeral = self.ephemeral.public()  # e: both ephemeral public keys in the clear
        for key in (ephemeral.dh, ephemeral.kem):
            state.mix_hash(key)
            parts.append(key)
        state.mix_key(self._dh(self.ephemeral.dh, self.responder.dh))  # es
        static = self.identity.public()  # s
        parts += [state.encrypt_and_hash(static.dh), state.encrypt_and_hash(static.kem)]
        state.mix_key(self._dh(self.identity.dh, self.responder.dh))  # ss
        parts.append(state.encrypt_and_hash(payload))
        message = b"".join(parts)
        if len(message) > MAX_MESSAGE:
            raise NoiseError("the handshake's first message is over 65535 bytes")
        return message

    def finish(self, message: bytes) -> Transport:
        """``<- ekem, skem, e, ee, se`` with an empty payload; :class:`NoiseError` for anything else."""
        expected = KEM_CIPHERTEXT_LEN + KEM_CIPHERTEXT_LEN + TAG_LEN + DH_LEN + KEM_PUBLIC_LEN + TAG_LEN
        if not self._sent or len(message) != expected:
            raise NoiseError("the exec-server's handshake answer is not the one hybrid IK makes")
        state, at = self.state, 0

        def take(length: int) -> bytes:
            nonlocal at
            at += length
            return message[at - length:at]

        ekem = take(KEM_CIPHERTEXT_LEN)  # to our ephemeral ML-KEM key, in the clear
        state.mix_hash(ekem)
        state.mix_key(self._decapsulate(self.ephemeral.kem, ekem))
        skem = state.decrypt_and_hash(take(KEM_CIPHERTEXT_LEN + TAG_LEN))  # to our static ML-KEM key
        state.mix_key_and_hash(self._decapsulate(self.identity.kem, skem))
        remote_dh, remote_kem = take(DH_LEN), take(KEM_PUBLIC_LEN)  # e (its ML-KEM key is not used further)
        state.mix_hash(remote_dh)
        state.mix_hash(remote_kem)
        state.mix_key(self._dh(self.ephemeral.dh, remote_dh))  # ee
        state.mix_key(self._dh(self.identity.dh, remote_dh))  # se
        if state.decrypt_and_hash(take(TAG_LEN)):
            raise NoiseError("the exec-server's handshake answer carries a payload")
        sending, receiving = state.split()
        return Transport(sending, receiving)

    @staticmethod
    def _decapsulate(key: MLKEM768PrivateKey, ciphertext: bytes) -> bytes:
        try:
            return key.decapsulate(ciphertext)
        except ValueError:
            raise NoiseError("an ML-KEM ciphertext is malformed") from None
