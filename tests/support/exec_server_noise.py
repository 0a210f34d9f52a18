"""An exec-server as ``codex exec-server --remote URL --environment-id ID --registration-bearer-stdin`` behaves
(its default ``--remote-transport noise``, codex 0.169, written from its protocol): registers its Noise public key
at ``{URL}/cloud/environment/{ID}/register`` with the bearer, opens the relay URL the registry answers, reads the
harness's first hybrid IK message on a stream (as the responder: ``<- s``, ``-> skem, e, es, s, ss``), asks
``…/validate`` about the harness key and the authorization it carried, answers ``<- ekem, skem, e, ee, se``, and then
serves the same JSON-RPC as tests/support/exec_server.py's, each message length-prefixed in Noise records.

The responder's token logic is written here on its own; the symmetric state (Noise's hash, HKDF and AES-GCM) is the
bridge's, which the recorded real handshake (tests/unit/test_executor_noise.py) checks independently.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from typing import Any

import aiohttp
import orjson
from cryptography.hazmat.primitives.asymmetric.mlkem import MLKEM768PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from responses_bridge.services.agents.executor.noise import (
    DH_LEN,
    KEM_CIPHERTEXT_LEN,
    KEM_PUBLIC_LEN,
    PROTOCOL_NAME,
    SECURITY_PROFILE,
    TAG_LEN,
    Identity,
    PublicKey,
    SymmetricState,
    Transport,
    prologue,
)
from responses_bridge.services.agents.executor.relay import RECORD_PLAINTEXT, data_frame, handshake_frame, read_frame
from tests.support.exec_server import FakeExecServer, serving


class Responder:
    """The exec-server's half of one stream's hybrid IK handshake."""

    def __init__(self, identity: Identity, prologue_bytes: bytes) -> None:
        self.identity, self.state = identity, SymmetricState(PROTOCOL_NAME)
        self.state.mix_hash(prologue_bytes)
        own = identity.public()
        self.state.mix_hash(own.dh)
        self.state.mix_hash(own.kem)
        self.remote_ephemeral = PublicKey(b"", b"")
        self.remote = PublicKey(b"", b"")

    def read_request(self, message: bytes) -> bytes:
        """The harness's payload (its authorization); :attr:`remote` is its proven static key after."""
        state, at = self.state, 0

        def take(length: int) -> bytes:
            nonlocal at
            at += length
            return message[at - length:at]

        ciphertext = state.decrypt_and_hash(take(KEM_CIPHERTEXT_LEN))  # skem: no key yet, in the clear
        state.mix_key_and_hash(self.identity.kem.decapsulate(ciphertext))
        self.remote_ephemeral = PublicKey(take(DH_LEN), take(KEM_PUBLIC_LEN))
        state.mix_hash(self.remote_ephemeral.dh)
        state.mix_hash(self.remote_ephemeral.kem)
        state.mix_key(self._dh(self.identity, self.remote_ephemeral.dh))  # es
        self.remote = PublicKey(state.decrypt_and_hash(take(DH_LEN + TAG_LEN)),
                                state.decrypt_and_hash(take(KEM_PUBLIC_LEN + TAG_LEN)))
        state.mix_key(self._dh(self.identity, self.remote.dh))  # ss
        return state.decrypt_and_hash(message[at:])

    def write_response(self) -> tuple[bytes, Transport]:
        state, parts = self.state, []
        secret, ciphertext = MLKEM768PublicKey.from_public_bytes(self.remote_ephemeral.kem).encapsulate()  # ekem
        state.mix_hash(ciphertext)
        state.mix_key(secret)
        parts.append(ciphertext)
        secret, ciphertext = MLKEM768PublicKey.from_public_bytes(self.remote.kem).encapsulate()  # skem
        parts.append(state.encrypt_and_hash(ciphertext))
        state.mix_key_and_hash(secret)
        ephemeral = Identity.generate()
        for key in (ephemeral.public().dh, ephemeral.public().kem):  # e
            state.mix_hash(key)
            parts.append(key)
        state.mix_key(self._dh(ephemeral, self.remote_ephemeral.dh))  # ee
        state.mix_key(self._dh(ephemeral, self.remote.dh))  # se
        parts.append(state.encrypt_and_hash(b""))
        to_responder, to_initiator = state.split()
        return b"".join(parts), Transport(sending=to_initiator, receiving=to_responder)

    @staticmethod
    def _dh(own: Identity, peer: bytes) -> bytes:
        return own.dh.exchange(X25519PublicKey.from_public_bytes(peer))


class _NoiseSocket:
    """What FakeExecServer's answers write to (``send_str``, ``closed``): Noise records in data frames."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, stream_id: str, transport: Transport) -> None:
        self.ws, self.stream_id, self.transport, self.seq = ws, stream_id, transport, 0
        self.lock = asyncio.Lock()

    @property
    def closed(self) -> bool:
        return self.ws.closed

    async def send_str(self, text: str) -> None:
        framed = struct.pack(">I", len(text.encode())) + text.encode()
        async with self.lock:
            for at in range(0, len(framed), RECORD_PLAINTEXT):
                await self.ws.send_bytes(data_frame(self.stream_id, self.seq,
                                                    self.transport.encrypt(framed[at:at + RECORD_PLAINTEXT])))
                self.seq += 1


class NoiseFakeExecServer(FakeExecServer):
    """One Noise registration and its relay; ``valid`` is what the registry said of the harness's key."""

    def __init__(self, remote: str, environment_id: str, bearer: str) -> None:
        super().__init__(remote, environment_id, "", "")
        self.bearer, self.identity = bearer, Identity.generate()
        self.registration_id = ""
        self.valid: bool | None = None

    async def register(self, http: aiohttp.ClientSession, body: bytes | None = None,
                       ) -> tuple[int, dict[str, Any]]:
        body = body or orjson.dumps({"security_profile": SECURITY_PROFILE,
                                     "executor_public_key": self.identity.public().as_json()})
        async with http.post(f"{self.remote}/cloud/environment/{self.environment_id}/register", data=body,
                             headers={"Authorization": f"Bearer {self.bearer}",
                                      "Content-Type": "application/json"}) as answer:
            registered = await answer.json()
        self.registration_id = registered.get("executor_registration_id", "")
        return answer.status, registered

    async def serve(self, http: aiohttp.ClientSession, url: str, connected: asyncio.Event | None = None) -> None:
        try:
            async with http.ws_connect(url) as ws:
                socket = await self._handshake(http, ws)
                if socket is None:
                    return
                buffered = b""
                async for message in ws:
                    frame = read_frame(message.data) if message.type == aiohttp.WSMsgType.BINARY else None
                    if frame is None or frame.stream_id != socket.stream_id or frame.WhichOneof("body") != "data":
                        continue
                    buffered += socket.transport.decrypt(frame.data.payload)  # the bridge sends in order
                    while len(buffered) >= 4 and len(buffered) >= 4 + struct.unpack(">I", buffered[:4])[0]:
                        length = struct.unpack(">I", buffered[:4])[0]
                        request, buffered = orjson.loads(buffered[4:4 + length]), buffered[4 + length:]
                        if "id" not in request:
                            if request.get("method") == "initialized" and connected is not None:
                                connected.set()
                            continue
                        self.requests.append(request["method"])
                        self._spawn(self._answer(socket, request))  # type: ignore[arg-type]
        finally:
            await self.stop()

    async def _handshake(self, http: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse,
                         ) -> _NoiseSocket | None:
        async for message in ws:
            frame = read_frame(message.data) if message.type == aiohttp.WSMsgType.BINARY else None
            if frame is None or frame.WhichOneof("body") != "handshake":
                continue
            responder = Responder(self.identity, prologue(self.environment_id, self.registration_id,
                                                          frame.stream_id))
            authorization = responder.read_request(frame.handshake.payload).decode()
            async with http.post(f"{self.remote}/cloud/environment/{self.environment_id}/validate",
                                 headers={"Authorization": f"Bearer {self.bearer}"},
                                 json={"executor_registration_id": self.registration_id,
                                       "harness_public_key": responder.remote.as_json(),
                                       "harness_key_authorization": authorization}) as answer:
                self.valid = answer.status == 200 and (await answer.json())["valid"]
            if not self.valid:
                return None
            reply, transport = responder.write_response()
            await ws.send_bytes(handshake_frame(frame.stream_id, reply))
            return _NoiseSocket(ws, frame.stream_id, transport)
        return None


def running_noise_exec_server(remote: str, environment_id: str, bearer: str,
                              ) -> contextlib.AbstractAsyncContextManager[NoiseFakeExecServer]:
    """A registered fake exec-server whose Noise stream the bridge opened and validated, until the block ends."""
    return serving(NoiseFakeExecServer(remote, environment_id, bearer))
