"""The project's own ext_proc messages (protos/ext_proc.proto, compiled into adapters/extproc/_pb/): the committed
module is what the proto file compiles to, the runtime the package requires can load it, the messages never clash
with another package's Envoy stubs in the same process, and the service answers at Envoy's method path."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import grpc
import pytest
from grpc_tools import protoc
from packaging.requirements import Requirement
from packaging.version import Version

from responses_bridge.adapters.extproc import service
from responses_bridge.adapters.extproc._pb import ext_proc_pb2
from responses_bridge.adapters.extproc._pb.ext_proc_pb2 import ProcessingRequest, ProcessingResponse
from scripts.generate_protos import PACKAGE_PATH, generate

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "src" / PACKAGE_PATH / "ext_proc_pb2.py"
_GENCODE_VERSION = re.compile(rb"^# Protobuf Python Version: (\S+)$", re.MULTILINE)
_DESCRIPTOR = re.compile(rb"AddSerializedFile\((b'.*?')\)\n", re.DOTALL)


def _gencode_version(source: bytes) -> Version:
    found = _GENCODE_VERSION.search(source)
    assert found, "protoc's output names the protobuf version it was generated for"
    return Version(found.group(1).decode())


def test_the_committed_module_is_what_the_proto_compiles_to(tmp_path: Path) -> None:
    """Byte for byte when the installed grpcio-tools is the one the module was generated with; with another
    release (its boilerplate and version stamp differ), the compiled descriptor, which is every message, field
    number and name, must still be the same. Run scripts/generate-protos after changing protos/."""
    [generated] = generate(tmp_path)
    fresh, committed = generated.read_bytes(), COMMITTED.read_bytes()
    if _gencode_version(fresh) == _gencode_version(committed):
        assert fresh == committed, "src/.../_pb is stale: run scripts/generate-protos and commit the result"
    fresh_descriptor, committed_descriptor = _DESCRIPTOR.search(fresh), _DESCRIPTOR.search(committed)
    assert fresh_descriptor and committed_descriptor
    assert fresh_descriptor.group(1) == committed_descriptor.group(1), "protos/ changed: run scripts/generate-protos"


def test_the_required_protobuf_runtime_loads_the_committed_module() -> None:
    """protoc's code refuses a protobuf runtime older than the release it was generated for: the package's
    protobuf lower bound must be at least that, or a user's install with an older runtime fails at import."""
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [protobuf] = [Requirement(line) for line in dependencies if Requirement(line).name == "protobuf"]
    lower = min(Version(spec.version) for spec in protobuf.specifier if spec.operator == ">=")
    assert lower >= _gencode_version(COMMITTED.read_bytes())


def test_the_proto_file_compiles_alone(tmp_path: Path) -> None:
    """The compile is live: a proto file that breaks the rules (a field number used twice) fails it."""
    bad = tmp_path / "bad.proto"
    bad.write_text('syntax = "proto3";\npackage bad;\nmessage M { bool a = 1; bool b = 1; }\n')
    assert protoc.main(["protoc", f"-I{tmp_path}", f"--python_out={tmp_path}", str(bad)]) != 0


def test_messages_live_in_a_private_proto_package_with_envoys_numbers() -> None:
    assert ProcessingRequest.DESCRIPTOR.full_name == "responses_bridge.extproc.v3.ProcessingRequest"
    assert ext_proc_pb2.DESCRIPTOR.name == "responses_bridge/adapters/extproc/_pb/ext_proc.proto"
    request = {field.name: field.number for field in ProcessingRequest.DESCRIPTOR.fields}
    assert request["request_body"] == 4 and request["metadata_context"] == 8 and request["protocol_config"] == 11
    response = {field.name: field.number for field in ProcessingResponse.DESCRIPTOR.fields}
    assert response["immediate_response"] == 7 and response["mode_override"] == 9
    assert service.PROCESS_PATH == "/envoy.service.ext_proc.v3.ExternalProcessor/Process"


# A module of another package that registers Envoy's own names in the default pool (as xds-protos' stubs do):
# ProcessingRequest with its request_body (HttpBody: body, end_of_stream), in Envoy's proto package and file.
_ENVOY_NAMES = textwrap.dedent("""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    F = descriptor_pb2.FieldDescriptorProto
    envoy = descriptor_pb2.FileDescriptorProto(
        name="envoy/service/ext_proc/v3/external_processor.proto", package="envoy.service.ext_proc.v3",
        syntax="proto3")
    body = envoy.message_type.add(name="HttpBody")
    body.field.add(name="body", number=1, type=F.TYPE_BYTES, label=F.LABEL_OPTIONAL)
    body.field.add(name="end_of_stream", number=2, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    request = envoy.message_type.add(name="ProcessingRequest")
    request.field.add(name="request_body", number=4, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                      type_name=".envoy.service.ext_proc.v3.HttpBody")
    descriptor_pool.Default().Add(envoy)
    EnvoyRequest = message_factory.GetMessageClass(
        descriptor_pool.Default().FindMessageTypeByName("envoy.service.ext_proc.v3.ProcessingRequest"))
""")

_OURS = textwrap.dedent("""
    from responses_bridge.adapters.extproc import server  # the whole door, as `serve` imports it
    from responses_bridge.adapters.extproc._pb.ext_proc_pb2 import ProcessingRequest
""")

_CHECK = textwrap.dedent("""
    ours = ProcessingRequest()
    ours.request_body.body = b'{"input": "hi"}'
    ours.request_body.end_of_stream = True
    theirs = EnvoyRequest.FromString(ours.SerializeToString())  # the same bytes on the wire
    assert theirs.request_body.body == b'{"input": "hi"}' and theirs.request_body.end_of_stream
    assert ProcessingRequest.FromString(theirs.SerializeToString()) == ours
    print("ok")
""")


@pytest.mark.parametrize("order", ["envoy names first", "ours first"])
def test_our_stubs_import_beside_a_package_that_registers_envoys_names(order: str) -> None:
    """Registering one fully-qualified name twice in protobuf's default pool fails at import; ours are private,
    so whichever loads first, both load, and each reads the other's bytes. A fresh interpreter: a clean pool."""
    parts = [_ENVOY_NAMES, _OURS] if order == "envoy names first" else [_OURS, _ENVOY_NAMES]
    result = subprocess.run([sys.executable, "-c", "".join([*parts, _CHECK])], capture_output=True, text=True,
                            cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


class _Echo(service.ExternalProcessorServicer):
    async def Process(self, request_iterator, context):  # type: ignore[no-untyped-def,override]
        async for request in request_iterator:
            reply = ProcessingResponse()
            reply.request_body.response.body_mutation.body = request.request_body.body.upper()
            yield reply


async def test_the_service_answers_at_envoys_method_path() -> None:
    """What Envoy's filter does: opens the stream at the literal method path, sends ProcessingRequest bytes, and
    reads ProcessingResponse bytes back; and the hand-written client stub reaches the same handler."""
    server = grpc.aio.server()
    service.add_ExternalProcessorServicer_to_server(_Echo(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            raw = channel.stream_stream("/envoy.service.ext_proc.v3.ExternalProcessor/Process")
            request = ProcessingRequest()
            request.request_body.body = b"abc"
            call = raw()
            await call.write(request.SerializeToString())
            reply = ProcessingResponse.FromString(await call.read())
            assert reply.request_body.response.body_mutation.body == b"ABC"
            await call.done_writing()

            stub_call = service.ExternalProcessorStub(channel).Process()
            request.request_body.body = b"def"
            await stub_call.write(request)
            assert (await stub_call.read()).request_body.response.body_mutation.body == b"DEF"
            await stub_call.done_writing()

            unknown = channel.stream_stream("/responses_bridge.extproc.v3.ExternalProcessor/Process")()
            await unknown.done_writing()
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await unknown.read()
            assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED  # only Envoy's path is served
    finally:
        await server.stop(None)
