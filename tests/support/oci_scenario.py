"""Run the bridge under runc in each named shape (tests/support/oci.py) and report, as one JSON object per shape
on stdout, what a deployment would see: the start-up log's sandbox lines, whether code's subprocess runs, whether
the hosted shell runs (or its refusal), three children of one call past its memory bound, the bridge answering
after, and the per-call cgroups left a few seconds after the last call. Run as root, on this machine (cgroup v1)
or inside the cgroup v2 VM (tests/deploy/test_oci_runtime.py runs it both ways):

    python -m tests.support.oci_scenario WORKDIR SHAPE [SHAPE...]
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from responses_bridge.demo.procs import free_port
from tests.support.oci import SHAPES, Container, remove_parent, running

SUBPROCESS = ("import subprocess\n"
              "print(subprocess.run(['echo', 'from-a-subprocess'], capture_output=True, text=True).stdout)")
CHILD_MIB = int(os.environ.get("SCENARIO_CHILD_MIB", "700"))
MEMORY = int(os.environ.get("SCENARIO_MEMORY_MIB", "1024"))
CHILDREN = (
    "import subprocess, sys\n"
    f"code = 'b = bytearray({CHILD_MIB} << 20)\\nfor i in range(0, len(b), 4096): b[i] = 1\\n"
    "import time; time.sleep(3)'\n"
    "children = [subprocess.Popen([sys.executable, '-c', code]) for _ in range(3)]\n"
    "print('children', [child.wait() for child in children])\n")


def _action(tool: str, **action: object) -> str:
    return f"call {tool} [args64={base64.b64encode(json.dumps(action).encode()).decode()}]"


def _wait_ready(url: str, container: Container, seconds: float) -> str | None:
    """None once the bridge answers ready; else how it was not: the container's end and its status, or the
    seconds waited (a failure's first words: an early end and a slow start are looked for in different places)."""
    started = time.monotonic()
    while time.monotonic() < started + seconds:
        if container.process.poll() is not None:
            waited = time.monotonic() - started
            return f"the container ended (status {container.process.returncode}) after {waited:.0f} s"
        try:
            with urllib.request.urlopen(f"{url}/health/ready", timeout=2) as answer:
                if answer.status == 200:
                    return None
        except OSError:
            pass
        time.sleep(0.5)
    return f"no ready answer within {seconds:.0f} s"


def _create(url: str, body: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """``POST /v1/responses``: the Response, or what the error answer said. Plain urllib, not the OpenAI SDK: in
    the VM every instruction is emulated, and the SDK's import alone held it for ~40 s of its ~4 minutes (the SDK's
    surface is tested natively, elsewhere)."""
    request = urllib.request.Request(f"{url}/v1/responses", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "Authorization": "Bearer sk-test"})
    try:
        with urllib.request.urlopen(request, timeout=300) as answer:
            return json.loads(answer.read()), None
    except urllib.error.HTTPError as error:
        return None, f"HTTP {error.code}: {error.read()[:2000].decode(errors='replace')}"
    except OSError as error:
        return None, str(error)


def _code(url: str, code: str) -> dict[str, Any]:
    response, error = _create(url, {"model": "fake-model", "input": _action("python", code=code),
                                    "tools": [{"type": "code_interpreter", "container": {"type": "auto"}}],
                                    "include": ["code_interpreter_call.outputs"]})
    if response is None:
        return {"error": error}
    call = next((item for item in response["output"] if item["type"] == "code_interpreter_call"), None)
    if call is None:
        return {"error": "no code_interpreter_call", "output": str(response["output"])[:2000]}
    logs = "".join(output["logs"] for output in call.get("outputs") or () if output["type"] == "logs")
    return {"status": call["status"], "logs": logs[-3000:]}


def _shell(url: str) -> dict[str, Any]:
    response, error = _create(url, {"model": "fake-model", "input": "sh: echo shell-ran; ls /mnt/data | wc -l",
                                    "tools": [{"type": "shell", "environment": {"type": "container_auto"}}]})
    if response is None:
        return {"error": error}
    output = next((item for item in response["output"] if item["type"] == "shell_call_output"), None)
    if output is None:
        return {"error": "no shell_call_output"}
    return {"stdout": "".join(command["stdout"] for command in output["output"])}


def _events(log: Path) -> list[dict[str, Any]]:
    found = []
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except ValueError:
                continue
    return found


def _left(container: Container) -> list[str]:
    left = []
    for directory in container.cgroup_dirs():
        parent = (directory.parent if directory.name == "bridge" else directory) / "responses-bridge-sandbox"
        if parent.is_dir():
            left += [f"{parent}/{entry.name}" for entry in parent.iterdir() if entry.is_dir()]
    return left


def _left_after(container: Container, seconds: float) -> list[str]:
    """The per-call cgroups still there once none is, or after ``seconds``: the bridge removes each as its call ends
    (in the cgroup v2 VM, emulated, that can take seconds), so a fixed wait would wait out the slowest case always."""
    deadline = time.monotonic() + seconds
    while (left := _left(container)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def run_shape(name: str, workdir: Path, upstream: str) -> dict[str, Any]:
    shape = SHAPES[name]
    port = free_port()
    venv = Path(sys.executable).parent
    env = {"PATH": f"{venv}:/usr/local/bin:/usr/bin:/bin", "HOME": "/data", "PYTHONUNBUFFERED": "1",
           "RESPONSES_BRIDGE_HTTP_HOST": "127.0.0.1", "RESPONSES_BRIDGE_HTTP_PORT": str(port),
           "RESPONSES_BRIDGE_EXTPROC_PORT": str(free_port()), "RESPONSES_BRIDGE_DB": "/data/responses.sqlite",
           "RESPONSES_BRIDGE_UPSTREAM": upstream, "RESPONSES_BRIDGE_LOG_FORMAT": "json",
           "RESPONSES_BRIDGE_CODE_TIMEOUT": "60", "RESPONSES_BRIDGE_CODE_MEMORY_BYTES": str(MEMORY << 20)}
    if shape.run_as:
        env["RESPONSES_BRIDGE_RUN_AS"] = shape.run_as
    if "TINI_VERBOSITY" in os.environ:
        env["TINI_VERBOSITY"] = os.environ["TINI_VERBOSITY"]
    report: dict[str, Any] = {"shape": name}
    args = ["tini", "-s", "--", str(venv / "responses-bridge"), "serve"]
    with running(shape, args, env, workdir) as container:
        report["copied_roots"] = container.copied_roots
        url = f"http://127.0.0.1:{port}"
        report["not_ready"] = _wait_ready(url, container, float(os.environ.get("SCENARIO_START_SECONDS", "120")))
        report["ready"] = report["not_ready"] is None
        events = _events(container.log)
        report["events"] = [event for event in events if str(event.get("event", "")).startswith(
            ("sandbox", "cgroup"))]
        if not report["ready"]:
            report["log"] = container.log.read_text(errors="replace")[-4000:]
            return report
        report["subprocess"] = _code(url, SUBPROCESS)
        report["shell"] = _shell(url)
        if shape.granted:
            report["children"] = _code(url, CHILDREN)
        report["after"] = _code(url, "print(2 + 2)")
        if os.environ.get("SCENARIO_DOCTOR"):  # `docker exec … responses-bridge doctor`, as an operator would
            doctor_env = {key: value for key, value in env.items() if key != "RESPONSES_BRIDGE_RUN_AS"}
            for flags in ([], ["--require-shell"]):
                done = container.exec([str(venv / "responses-bridge"), "doctor", *flags], doctor_env)
                report[f"doctor{''.join(flags)}"] = {"status": done.returncode, "out": done.stdout[-3000:]}
        report["left"] = _left_after(container, 5.0)
        report["bridge_uid"] = _bridge_uid(container)
        report["stopped"] = container.stop(float(os.environ.get("SCENARIO_STOP_SECONDS", "60")))
        said = container.log.read_text(errors="replace")
        report["init_failed"] = "FATAL" in said
        if any("error" in report.get(key, {}) for key in ("subprocess", "after")) or report["init_failed"]:
            report["log"] = said[-6000:]
    return report


def _bridge_uid(container: Container) -> list[int]:
    """The uids of the container's serving processes (responses-bridge serve), seen from the host."""
    pid = container.init_pid()
    uids = []
    if pid is None:
        return uids
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(entry / "ns/pid") != os.readlink(f"/proc/{pid}/ns/pid"):
                continue
            if b"serve" in (entry / "cmdline").read_bytes() and b"tini" not in (entry / "cmdline").read_bytes():
                uids.append(int((entry / "status").read_text().split("Uid:")[1].split()[0]))
        except OSError:
            continue
    return uids


def main() -> int:
    workdir = Path(sys.argv[1])
    workdir.mkdir(parents=True, exist_ok=True)
    upstream_port = free_port()
    upstream = subprocess.Popen([str(Path(sys.executable).parent / "responses-bridge"), "fake-upstream", "--host",
                                 "127.0.0.1", "--port", str(upstream_port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    # the shapes at once, each its own container, port and cgroup; one at a time with SCENARIO_ONE_AT_A_TIME (in the
    # VM, where bridges starting together over its 9p root failed to import a codec)
    at_once = 1 if os.environ.get("SCENARIO_ONE_AT_A_TIME") else len(sys.argv) - 2
    try:
        with ThreadPoolExecutor(at_once) as pool:
            for report in pool.map(lambda name: run_shape(name, workdir, f"http://127.0.0.1:{upstream_port}/v1"),
                                   sys.argv[2:]):
                print(json.dumps(report), flush=True)
    finally:
        remove_parent()
        upstream.terminate()
        upstream.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
