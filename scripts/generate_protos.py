"""Compiles protos/*.proto into src/responses_bridge/adapters/extproc/_pb/ with grpcio-tools' protoc.

The generated modules are committed (a user's install needs no compiler); tests/unit/test_extproc_protos.py runs
:func:`generate` into a temporary folder and compares the result with the committed files. The proto files are
mapped to the package's own path (``-I<package path>=protos``), so each registers in protobuf's descriptor pool
under a name no other package uses, and the generated module names itself by its real import path.
"""

from __future__ import annotations

import sys
from importlib.resources import files
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE_PATH = "responses_bridge/adapters/extproc/_pb"
"""Where the generated modules live, relative to src/ (and the proto files' virtual path)."""


def generate(out: Path) -> list[Path]:
    """Writes ``<out>/responses_bridge/adapters/extproc/_pb/<name>_pb2.py`` for each proto file; returns them."""
    from grpc_tools import protoc  # the [test] extra; imported here so the module loads without it

    sources = sorted(PROTOS.glob("*.proto"))
    well_known = str(files("grpc_tools") / "_proto")  # google/protobuf/*.proto, shipped with grpcio-tools
    out.mkdir(parents=True, exist_ok=True)
    args = ["protoc", f"-I{PACKAGE_PATH}={PROTOS}", f"-I{well_known}", f"--python_out={out}",
            *(str(source) for source in sources)]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    return [out / PACKAGE_PATH / f"{source.stem}_pb2.py" for source in sources]


if __name__ == "__main__":
    for path in generate(ROOT / "src"):
        print(path.relative_to(ROOT), file=sys.stderr)
