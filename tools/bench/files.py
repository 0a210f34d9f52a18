"""``scripts/bench files [SIZE_MB] [N]``: upload and download throughput of the Files API through each door, with the
openai SDK as the client (defaults: 200 MB, 3 runs).

- ``door``: client -> the sidecar's HTTP door;
- ``envoy``: client -> Envoy's listener -> the HTTP door (the /v1/files route: ext_proc off, streamed).

Each upload is SIZE MB generated while it is sent (nothing is held whole by the client); reported: MB/s up and down
(median of N), and the growth of the sidecar's and Envoy's peak RSS (VmHWM, reset before each upload) during the
upload, since a file must stream through both and never be held whole. Then the same size through the Uploads API
(the SDK's upload_file_chunked, 16 MiB parts, from a file): its MB/s as a ratio to the one-request upload's of the
same run, and the sidecar's peak RSS growth.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import openai

from responses_bridge.demo.procs import ManagedProcess, envoy_binary, free_port, wait_http
from responses_bridge.envoy_config import render_bootstrap

BLOCK = os.urandom(2**20 + 17)


class Generated(io.RawIOBase):
    """``size`` bytes made as they are read; seekable, so the client sends a Content-Length."""

    def __init__(self, size: int) -> None:
        self.size, self.position = size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = 0) -> int:
        self.position = (0, self.position, self.size)[whence] + offset
        return self.position

    def readinto(self, buffer: Any) -> int:
        start = self.position % len(BLOCK)
        count = min(len(buffer), self.size - self.position, len(BLOCK) - start)
        if count <= 0:
            return 0
        buffer[:count] = BLOCK[start:start + count]
        self.position += count
        return count


def status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


async def measure(name: str, base: str, pid: int, envoy_pid: int, size: int, runs: int) -> None:
    up, down, growth, envoy_growth = [], [], [], []
    async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="bench", max_retries=0, timeout=600) as client:
        for _ in range(runs):
            for process in (pid, envoy_pid):
                Path(f"/proc/{process}/clear_refs").write_text("5")
            before, envoy_before = status_kb(pid, "VmRSS"), status_kb(envoy_pid, "VmRSS")
            started = time.perf_counter()
            created = await client.files.create(file=("bench.bin", Generated(size)), purpose="user_data")
            up.append(size / 1e6 / (time.perf_counter() - started))
            growth.append((status_kb(pid, "VmHWM") - before) / 1024)
            envoy_growth.append((status_kb(envoy_pid, "VmHWM") - envoy_before) / 1024)
            started = time.perf_counter()
            received = 0
            async with client.files.with_streaming_response.content(created.id) as response:
                async for chunk in response.iter_bytes(2**20):
                    received += len(chunk)
            down.append(received / 1e6 / (time.perf_counter() - started))
            assert received == size
            await client.files.delete(created.id)
    print(f"{name:6} upload {statistics.median(up):7.1f} MB/s   download {statistics.median(down):7.1f} MB/s   "
          f"peak RSS growth during upload: sidecar {max(growth):.1f} MB, Envoy {max(envoy_growth):.1f} MB   "
          f"({runs} x {size / 1e6:.0f} MB)",
          flush=True)
    await measure_parts(name, base, pid, statistics.median(up), size, runs)


async def measure_parts(name: str, base: str, pid: int, one_request: float, size: int, runs: int) -> None:
    """The Uploads API: parts of 16 MiB sent one after the other, then completed into one file (joined on the
    sidecar)."""
    rates, growth = [], []
    with tempfile.NamedTemporaryFile(prefix="rb-parts-") as source:
        stream = Generated(size)
        while chunk := stream.read(2**20):
            source.write(chunk)
        source.flush()
        async with openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="bench", max_retries=0, timeout=600) as client:
            for _ in range(runs):
                Path(f"/proc/{pid}/clear_refs").write_text("5")
                before = status_kb(pid, "VmRSS")
                started = time.perf_counter()
                upload = await client.uploads.upload_file_chunked(file=Path(source.name), mime_type="application/"
                                                                  "octet-stream", purpose="user_data",
                                                                  part_size=16 * 2**20)
                rates.append(size / 1e6 / (time.perf_counter() - started))
                growth.append((status_kb(pid, "VmHWM") - before) / 1024)
                assert upload.file is not None and upload.file.bytes == size
                await client.files.delete(upload.file.id)
    rate = statistics.median(rates)
    print(f"{name:6} uploads API {rate:7.1f} MB/s ({rate / one_request:.2f}x the one-request upload)   "
          f"peak RSS growth: sidecar {max(growth):.1f} MB", flush=True)


async def run(size: int, runs: int) -> None:
    with tempfile.TemporaryDirectory(prefix="rb-files-") as tmp:
        http_port, extproc_port, listen_port, admin_port = free_port(), free_port(), free_port(), free_port()
        upstream = f"http://127.0.0.1:{free_port()}/v1"  # never called: files need no model
        sidecar = ManagedProcess([sys.executable, "-m", "responses_bridge", "serve", "--upstream", upstream,
                                  "--http-port", str(http_port), "--extproc-port", str(extproc_port),
                                  "--db", os.path.join(tmp, "bench.db"), "--log-level", "error"], "sidecar")
        config = Path(tmp, "envoy.yaml")
        config.write_text(render_bootstrap(listen_port=listen_port, extproc_port=extproc_port, http_port=http_port,
                                           upstream=upstream, admin_port=admin_port))
        envoy = ManagedProcess([envoy_binary(), "-c", str(config), "--log-level", "error",
                                "--base-id", str(listen_port), "--concurrency", "1"], "envoy")
        try:
            sidecar.start()
            envoy.start()
            await wait_http(f"http://127.0.0.1:{http_port}/health", process=sidecar)
            await wait_http(f"http://127.0.0.1:{admin_port}/ready", process=envoy)
            await measure("door", f"http://127.0.0.1:{http_port}", sidecar.pid, envoy.pid, size, runs)
            await measure("envoy", f"http://127.0.0.1:{listen_port}", sidecar.pid, envoy.pid, size, runs)
        finally:
            envoy.stop()
            sidecar.stop()



def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench files", description=__doc__.split("\n\n")[0])
    parser.add_argument("size_mb", nargs="?", type=int, default=200, help="MB per upload (default 200)")
    parser.add_argument("runs", nargs="?", type=int, default=3, help="uploads and downloads per door (default 3)")
    args = parser.parse_args(argv)
    asyncio.run(run(args.size_mb * 2**20, args.runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
