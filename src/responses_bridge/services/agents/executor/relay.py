"""``codex exec-server``'s relay frames (``codex.exec_server.relay.v1.RelayMessageFrame``, protobuf, one per binary
websocket message) and the JSON-RPC channel the Noise transport carries in them (:class:`NoiseChannel`).

The bridge is both the rendezvous the exec-server connects to and the harness behind it, so of the frame kinds it
sends only ``handshake`` (the first Noise message) and ``data`` (Noise records, numbered from 0 per direction), and
it reads ``handshake``, ``data`` and ``reset``; acks, resumes and heartbeats are the rendezvous's and are ignored.
Above the Noise records, each JSON-RPC message is its length (4 bytes big-endian) and its JSON, cut into records of
at most :data:`RECORD_PLAINTEXT` bytes, as codex frames them.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import WSMsgType, web
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from .noise import Identity, InitiatorHandshake, NoiseError, PublicKey, Transport, prologue
from .rpc import MAX_FRAME_BYTES, ExecutorGone

FRAME_VERSION = 1
RECORD_PLAINTEXT = 60 * 1024
MAX_JSONRPC_MESSAGE = MAX_FRAME_BYTES  # as the direct transport bounds one message (a read asks for 256 KiB)
MAX_RELAY_FRAME_BYTES = 256 * 1024  # one frame: a Noise record (64 KiB at most) and its routing, as codex bounds it
MAX_REORDER = 64  # records (4 MiB) held waiting for an earlier one: codex numbers them, a relay may reorder
HANDSHAKE_SECONDS = 30.0  # the exec-server validates our key with the registry before it answers


def _frame_class() -> Any:
    """The relay's message classes, described here rather than generated: six small messages and a oneof."""
    proto = descriptor_pb2.FileDescriptorProto(name="codex_exec_server_relay_v1.proto",
                                               package="codex.exec_server.relay.v1", syntax="proto3")
    u32, string, bytes_, message = (descriptor_pb2.FieldDescriptorProto.TYPE_UINT32,
                                    descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                                    descriptor_pb2.FieldDescriptorProto.TYPE_BYTES,
                                    descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE)
    optional = descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL
    layouts: dict[str, list[tuple[str, int, int, str]]] = {
        "RelayData": [("seq", 1, u32, ""), ("segment_index", 2, u32, ""), ("segment_count", 3, u32, ""),
                      ("payload", 4, bytes_, "")],
        "RelayAck": [], "RelayResume": [("next_seq", 1, u32, "")], "RelayReset": [("reason", 1, string, "")],
        "RelayHeartbeat": [], "RelayHandshake": [("payload", 1, bytes_, "")],
        "RelayMessageFrame": [("version", 1, u32, ""), ("stream_id", 2, string, ""), ("ack", 3, u32, ""),
                              ("ack_bits", 4, u32, ""), ("data", 5, message, "RelayData"),
                              ("ack_frame", 6, message, "RelayAck"), ("resume", 7, message, "RelayResume"),
                              ("reset", 8, message, "RelayReset"), ("heartbeat", 9, message, "RelayHeartbeat"),
                              ("handshake", 10, message, "RelayHandshake")]}
    for name, fields in layouts.items():
        described = proto.message_type.add(name=name)
        if name == "RelayMessageFrame":
            described.oneof_decl.add(name="body")
        for field_name, number, kind, type_name in fields:
            field = described.field.add(name=field_name, number=number, type=kind, label=optional)
            if type_name:
                field.type_name = f".codex.exec_server.relay.v1.{type_name}"
                field.oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("codex.exec_server.relay.v1.RelayMessageFrame"))


RelayMessageFrame = _frame_class()


def handshake_frame(stream_id: str, payload: bytes) -> bytes:
    frame = RelayMessageFrame(version=FRAME_VERSION, stream_id=stream_id)
    frame.handshake.payload = payload
    return bytes(frame.SerializeToString())


def data_frame(stream_id: str, seq: int, payload: bytes) -> bytes:
    frame = RelayMessageFrame(version=FRAME_VERSION, stream_id=stream_id)
    frame.data.seq, frame.data.segment_count, frame.data.payload = seq, 1, payload
    return bytes(frame.SerializeToString())


def read_frame(raw: bytes) -> Any:
    """The frame, or None for one that is not a relay frame of this version."""
    frame = RelayMessageFrame()
    try:
        frame.ParseFromString(raw)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError (and any malformed input): not a frame
        return None
    return frame if frame.version == FRAME_VERSION else None


class NoiseChannel:
    """JSON-RPC over one Noise relay stream (rpc.py's ``Channel``), opened by :func:`open_channel`."""

    def __init__(self, socket: web.WebSocketResponse, stream_id: str, transport: Transport) -> None:
        self.socket, self.stream_id, self.transport = socket, stream_id, transport
        self._next_seq = 0
        self._sending = asyncio.Lock()  # one message's records go out together, in nonce order

    async def send(self, message: bytes) -> None:
        framed = struct.pack(">I", len(message)) + message
        async with self._sending:
            for at in range(0, len(framed), RECORD_PLAINTEXT):
                record = self.transport.encrypt(framed[at:at + RECORD_PLAINTEXT])
                if self.socket.closed:
                    raise ExecutorGone("the exec-server disconnected")
                try:
                    await self.socket.send_bytes(data_frame(self.stream_id, self._next_seq, record))
                except (ConnectionError, RuntimeError) as error:
                    raise ExecutorGone("the exec-server disconnected") from error
                self._next_seq += 1

    async def messages(self) -> AsyncIterator[bytes]:
        waiting: dict[int, bytes] = {}
        next_seq, buffered = 0, bytearray()
        async for raw in self.socket:
            if raw.type != WSMsgType.BINARY:
                continue
            frame = read_frame(raw.data)
            if frame is None or frame.stream_id != self.stream_id:
                continue
            body = frame.WhichOneof("body")
            if body == "reset":
                return
            if body != "data" or frame.data.seq < next_seq:
                continue  # a duplicate, or the rendezvous's own frames
            waiting[frame.data.seq] = frame.data.payload
            if len(waiting) > MAX_REORDER:
                return  # a gap that never fills: the stream is broken
            while next_seq in waiting:
                try:
                    buffered += self.transport.decrypt(waiting.pop(next_seq))
                except NoiseError:
                    return
                next_seq += 1
            while len(buffered) >= 4:
                (length,) = struct.unpack(">I", buffered[:4])
                if not 0 < length <= MAX_JSONRPC_MESSAGE:
                    return
                if len(buffered) < 4 + length:
                    break
                yield bytes(buffered[4:4 + length])
                del buffered[:4 + length]

    async def close(self) -> None:
        await self.socket.close()


async def open_channel(socket: web.WebSocketResponse, *, environment_id: str, registration_id: str,
                       executor_key: PublicKey, authorization: str, identity: Identity) -> NoiseChannel:
    """The handshake on a new stream of ``socket``: our first message (its payload the registry's authorization of
    ``identity``), then the exec-server's answer, which it sends once the registry validated our key.
    :class:`ExecutorGone` when it resets the stream, closes, answers with anything else or not in time."""
    stream_id = str(uuid.uuid4())
    handshake = InitiatorHandshake(identity, executor_key, prologue(environment_id, registration_id, stream_id))
    await socket.send_bytes(handshake_frame(stream_id, handshake.request(authorization.encode())))
    try:
        async with asyncio.timeout(HANDSHAKE_SECONDS):
            async for raw in socket:
                frame = read_frame(raw.data) if raw.type == WSMsgType.BINARY else None
                if frame is None or frame.stream_id != stream_id:
                    continue
                body = frame.WhichOneof("body")
                if body == "handshake":
                    return NoiseChannel(socket, stream_id, handshake.finish(frame.handshake.payload))
                if body in ("reset", "data"):
                    break
    except TimeoutError:
        raise ExecutorGone(f"the exec-server did not answer the Noise handshake within {HANDSHAKE_SECONDS:g} s"
                           ) from None
    except NoiseError as error:
        raise ExecutorGone(f"the exec-server's Noise handshake answer did not verify ({error})") from None
    raise ExecutorGone("the exec-server reset or closed the stream instead of completing the Noise handshake")
