"""``scripts/fuzz``: the fake upstream, the sidecar (both doors) and a real Envoy on free loopback ports, then
the fuzzers of tests/support/fuzz.py, fuzz_files.py, fuzz_embeddings.py and fuzz_skills.py through each door, then
everything stopped."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile

from responses_bridge.demo.procs import ManagedProcess, free_port, wait_http
from responses_bridge.envoy_config import render_bootstrap
from tests.support import fuzz
from tests.support.bridge import PYTHON, running_sidecar
from tests.support.envoy import start_envoy
from tests.support.fuzz_embeddings import run_embeddings
from tests.support.fuzz_files import run_files
from tests.support.fuzz_skills import ROUTES as SKILL_ROUTES
from tests.support.fuzz_skills import run_all_skills


async def _main(examples: int) -> int:
    port = free_port()
    upstream = ManagedProcess([PYTHON, "-m", "responses_bridge", "fake-upstream", "--port", str(port)],
                              "fake-upstream")
    upstream.start()
    try:
        await wait_http(f"http://127.0.0.1:{port}/health", process=upstream)
        with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
            async with running_sidecar(tmp, f"http://127.0.0.1:{port}/v1") as sidecar:
                listen = free_port()
                envoy = await start_envoy(render_bootstrap(
                    listen_port=listen, extproc_port=sidecar.extproc_port,
                    http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=sidecar.upstream_url, admin_port=0))
                try:
                    argv = ["--examples", str(examples), f"http={sidecar.http_url}",
                            f"envoy=http://127.0.0.1:{listen}"]
                    failed = await asyncio.to_thread(fuzz.main, argv)
                    for door, url in (("http", sidecar.http_url), ("envoy", f"http://127.0.0.1:{listen}")):
                        files = await asyncio.to_thread(run_files, fuzz.Tally(url, strict=False),
                                                        max(1, examples // 5))
                        print(files.summary(f"{door}, Files API (tests/support/fuzz_files.py)"), flush=True)
                        failed = failed or int(bool(files.server_errors or files.bad_shapes or files.hangs))
                        embeddings = await asyncio.to_thread(run_embeddings, fuzz.Tally(url, strict=False),
                                                             max(1, examples // 5))
                        print(embeddings.summary(f"{door}, Embeddings API (tests/support/fuzz_embeddings.py)"),
                              flush=True)
                        failed = failed or int(bool(embeddings.server_errors or embeddings.bad_shapes
                                                    or embeddings.hangs))
                        skills = await asyncio.to_thread(run_all_skills, fuzz.Tally(url, strict=False),
                                                         max(1, examples // (5 * len(SKILL_ROUTES))))
                        print(skills.summary(f"{door}, Skills API (tests/support/fuzz_skills.py)"), flush=True)
                        failed = failed or int(bool(skills.server_errors or skills.bad_shapes or skills.hangs))
                    return failed
                finally:
                    envoy.stop()
    finally:
        upstream.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description="Fuzz both doors of a fresh bridge with generated requests.")
    parser.add_argument("--examples", type=int, default=10_000, help="generated requests per door")
    return asyncio.run(_main(parser.parse_args().examples))


if __name__ == "__main__":
    sys.exit(main())
