"""The Noise handshake of ``codex exec-server --remote-transport noise`` (services/agents/executor/noise.py) against a
recording of the real exec-server (codex 0.169.0, clatter 2.2): our first message is rebuilt byte for byte from the
recorded secrets, the exec-server's answer is read with them, and its first transport record decrypts to its
``initialize`` answer. Any change to the token order, the prologue, the protocol name or the key schedule breaks it."""

from __future__ import annotations

import asyncio
import json
import struct
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiohttp import web

from responses_bridge.services.agents.executor.noise import (
    SUITE,
    CipherState,
    Identity,
    InitiatorHandshake,
    NoiseError,
    PublicKey,
    Transport,
    prologue,
)
from responses_bridge.services.agents.executor.relay import (
    RECORD_PLAINTEXT,
    NoiseChannel,
    RelayMessageFrame,
    data_frame,
    handshake_frame,
    read_frame,
)

RECORDING = json.loads((Path(__file__).parent / "recordings" / "noise_hybrid_ik_codex_0_169.json").read_text())


def replayed(stream_id: str | None = None) -> tuple[InitiatorHandshake, bytes]:
    """Our side of the recorded handshake, from its secrets, and the first message it writes."""
    executor = PublicKey.from_json(RECORDING["executor_key"])
    asked: list[bytes] = []

    def encapsulate(public: bytes) -> tuple[bytes, bytes]:
        asked.append(public)
        return bytes.fromhex(RECORDING["skem_secret"]), bytes.fromhex(RECORDING["skem_ciphertext"])

    handshake = InitiatorHandshake(
        Identity.from_secrets(bytes.fromhex(RECORDING["static_dh"]), bytes.fromhex(RECORDING["static_kem_seed"])),
        executor,
        prologue(RECORDING["environment_id"], RECORDING["registration_id"], stream_id or RECORDING["stream_id"]),
        ephemeral=Identity.from_secrets(bytes.fromhex(RECORDING["ephemeral_dh"]),
                                        bytes.fromhex(RECORDING["ephemeral_kem_seed"])),
        encapsulate=encapsulate)
    request = handshake.request(RECORDING["payload"].encode())
    assert asked == [executor.kem]  # the encapsulation is to the exec-server's static ML-KEM key
    return handshake, request


def test_the_recorded_handshake_replays_and_its_record_decrypts() -> None:
    handshake, request = replayed()
    assert request == bytes.fromhex(RECORDING["request"])
    reply = bytes.fromhex(RECORDING["reply"])
    assert len(reply) == 3424  # ekem 1088, skem 1088+16, e 32+1184, empty payload's tag 16
    transport = handshake.finish(reply)
    plaintext = transport.decrypt(bytes.fromhex(RECORDING["exec_server_record"]))
    assert plaintext == bytes.fromhex(RECORDING["exec_server_plaintext"])
    length = int.from_bytes(plaintext[:4], "big")
    answer = orjson.loads(plaintext[4:4 + length])
    assert answer["id"] == 1 and answer["result"]["environmentInfo"]["executorVersion"] == "0.169.0"
    with pytest.raises(NoiseError):  # the same record again is under the next nonce: refused
        transport.decrypt(bytes.fromhex(RECORDING["exec_server_record"]))


@pytest.mark.parametrize("at", [0, 1500, 2200, 2300, 3423])  # ekem, skem, e's X25519 key, e's ML-KEM key, tag
def test_an_altered_answer_is_refused(at: int) -> None:
    handshake, _ = replayed()
    reply = bytearray.fromhex(RECORDING["reply"])
    reply[at] ^= 0x01
    with pytest.raises(NoiseError):
        handshake.finish(bytes(reply))


def test_an_answer_on_another_stream_is_refused() -> None:
    handshake, request = replayed(stream_id="another-stream")
    assert request != bytes.fromhex(RECORDING["request"])  # the prologue is in the transcript
    with pytest.raises(NoiseError):
        handshake.finish(bytes.fromhex(RECORDING["reply"]))


def test_the_answer_is_read_once_and_only_after_the_request() -> None:
    executor = PublicKey.from_json(RECORDING["executor_key"])
    fresh = InitiatorHandshake(Identity.generate(), executor, b"")
    with pytest.raises(NoiseError):
        fresh.finish(bytes.fromhex(RECORDING["reply"]))
    fresh.request(b"")
    with pytest.raises(NoiseError):
        fresh.request(b"")
    with pytest.raises(NoiseError):
        fresh.finish(bytes.fromhex(RECORDING["reply"])[:-1])


def test_prologue_is_length_prefixed() -> None:
    assert prologue("env-1", "registration-1", "stream-1") == (
        b"\0\0\0\0\0\0\0\x20codex-exec-server-relay-noise/v1" b"\0\0\0\0\0\0\0\x05env-1"
        b"\0\0\0\0\0\0\0\x0eregistration-1" b"\0\0\0\0\0\0\0\x08stream-1")


def test_public_keys_are_parsed_strictly() -> None:
    key = Identity.generate().public()
    assert PublicKey.from_json(key.as_json()) == key and key.as_json()["suite"] == SUITE
    good = key.as_json()
    for bad in ({**good, "suite": "Noise_IK_25519_AESGCM_SHA256"}, {**good, "extra": "x"},
                {k: v for k, v in good.items() if k != "suite"}, {**good, "x25519_public_key": "AAAA"},
                {**good, "mlkem768_public_key": "not base64!"}, "a string", None):
        with pytest.raises(NoiseError):
            PublicKey.from_json(bad)


def test_records_are_bounded() -> None:
    handshake, _ = replayed()
    transport: Transport = handshake.finish(bytes.fromhex(RECORDING["reply"]))
    with pytest.raises(NoiseError):
        transport.encrypt(b"x" * 65520)
    with pytest.raises(NoiseError):
        transport.decrypt(b"short")


def test_relay_frames() -> None:
    handshake = handshake_frame("s-1", b"hello")
    assert b"\x52\x07\x0a\x05hello" in handshake  # field 10 (handshake), its payload field 1
    frame = read_frame(handshake)
    assert frame.WhichOneof("body") == "handshake" and frame.stream_id == "s-1" and frame.version == 1
    frame = read_frame(data_frame("s-1", 7, b"record"))
    assert frame.WhichOneof("body") == "data" and frame.data.seq == 7 and frame.data.payload == b"record"
    assert frame.data.segment_count == 1 and frame.data.segment_index == 0
    assert read_frame(b"\xff\xff\xff") is None and read_frame(b"") is None  # no version: not a frame


async def test_records_are_put_back_in_order_and_messages_reassembled() -> None:
    """A real websocket on 127.0.0.1: the exec-server's records arrive out of order, one twice, among frames of
    another stream and the rendezvous's own; the bridge's channel decrypts them in sequence and yields whole
    messages, and what it sends spans several records numbered from 0."""
    one, two = bytes(range(32)), bytes(range(32, 64))
    got: list[bytes] = []
    done = asyncio.Event()

    async def relay(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        channel = NoiseChannel(socket, "s-1", Transport(sending=CipherState(one), receiving=CipherState(two)))
        await channel.send(orjson.dumps({"big": "b" * 100_000}))
        async for message in channel.messages():
            got.append(message)
            if len(got) == 2:
                done.set()
                break
        await socket.close()
        return socket

    app = web.Application()
    app.router.add_get("/relay", relay)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    exec_server = Transport(sending=CipherState(two), receiving=CipherState(one))
    first, second = orjson.dumps({"id": 1, "result": "x" * 70_000}), orjson.dumps({"id": 2, "result": None})
    stream = struct.pack(">I", len(first)) + first + struct.pack(">I", len(second)) + second
    records = [exec_server.encrypt(stream[at:at + RECORD_PLAINTEXT]) for at in range(0, len(stream), RECORD_PLAINTEXT)]
    assert len(records) == 2
    heartbeat = RelayMessageFrame(version=1, stream_id="s-1")
    heartbeat.heartbeat.SetInParent()
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://127.0.0.1:{port}/relay") as ws:
            received, buffered = [], b""
            while len(buffered) < 4 or len(buffered) < 4 + int.from_bytes(buffered[:4], "big"):
                frame = read_frame((await ws.receive()).data)
                received.append(frame.data.seq)
                buffered += exec_server.decrypt(frame.data.payload)
            assert received == [0, 1] and orjson.loads(buffered[4:]) == {"big": "b" * 100_000}
            for raw in (data_frame("s-1", 1, records[1]), data_frame("other", 0, b"x" * 32),
                        heartbeat.SerializeToString(), data_frame("s-1", 0, records[0]),
                        data_frame("s-1", 0, records[0])):
                await ws.send_bytes(raw)
            await asyncio.wait_for(done.wait(), 10)
    finally:
        await runner.cleanup()
    assert got == [first, second]
