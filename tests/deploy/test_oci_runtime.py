"""The bridge under a real OCI runtime (runc), started as the Dockerfile starts it (``tini -s -- responses-bridge
serve`` as uid 10001, or as root dropping to it with RESPONSES_BRIDGE_RUN_AS), in the shapes the project ships
(tests/support/oci.py): where the runtime grants a writable cgroup (Docker 28's writable-cgroups, the Kubernetes
component), code's subprocesses and the hosted shell run, three children past one call's memory bound are stopped
with the bridge answering after, and no per-call cgroup is left; where none is granted, code still runs (without
/proc if need be), the shell's refusal names the cgroup and the grant, and serve warns at start.

On this machine's cgroup (whatever its version), and on a cgroup v2 kernel in a VM: the command that runs a command
there is CGROUP2_VM_COMMAND (e.g. ``run-in-vm --mem 3072 --``), else ``run-in-vm`` on PATH. One VM boot.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

from tests.support import vm_lookups
from tests.support.oci import SHAPES

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.skipif(os.geteuid() != 0, reason="runc needs root to make a container's namespaces"),
              pytest.mark.runs_first]  # the cgroup v2 VM holds its worker for minutes


def _install_runtime() -> str | None:
    """runc and tini, from the distribution's packages when missing: None, or why they cannot be had. One process
    at a time: scripts/test runs this module's two tests in two passes at once (the VM's beside the sqlite pass), and
    a second apt-get meanwhile would fail on the first one's lock."""
    with open(Path(tempfile.gettempdir()) / "responses-bridge-oci-runtime.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if shutil.which("runc") and shutil.which("tini"):
            return None
        if shutil.which("apt-get") is None:
            return "runc and tini are missing and there is no apt-get to install them"
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "-qq", "runc", "tini"], capture_output=True, check=False,
                       timeout=600)
        return None if shutil.which("runc") and shutil.which("tini") else "apt-get could not install runc and tini"


# What the VM's Python processes import (the scenario that drives the containers, its fake upstream; in them serve
# with both doors, doctor, the sandbox's side): compiled here first, where it costs ~2 CPU-s. In the VM every module
# without bytecode is compiled under software emulation — by each process of a container, which runs as uid 10001
# over a venv it cannot write, again and again. Its test alone, on a venv fresh from the install (--no-compile, as a
# fresh clone has it): 121 CPU-s (110 once the VM's own processes had written theirs); with these compiled here
# first, 94. The same process lists what those imports read, for the scenario to hold in the VM
# (tests/support/vm_lookups.py): 140 CPU-s → 106 for the test alone.
CONTAINER_IMPORTS = ("tests.support.oci_scenario", "responses_bridge.cli", "responses_bridge.serve",
                     "responses_bridge.commands.doctor", "responses_bridge.adapters.extproc.server",
                     "responses_bridge.adapters.http.server", "responses_bridge.sandbox.runner",
                     "responses_bridge.sandbox.call", "responses_bridge.sandbox.shell",
                     "responses_bridge.run.programs.worker", "responses_bridge.demo.fake_server")


def _compile_for_the_containers() -> str:
    """The containers' imports compiled; what they read, encoded for :data:`vm_lookups.VARIABLE`."""
    env = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
    return subprocess.run([sys.executable, "-c", f"import {', '.join(CONTAINER_IMPORTS)}; "
                           "from tests.support.vm_lookups import read_by_imports; print(read_by_imports())"],
                          env=env, cwd=ROOT, capture_output=True, text=True, check=True, timeout=300).stdout.strip()


@pytest.fixture(scope="module")
def runtime() -> str:
    """runc and tini installed, the containers' imports compiled: what they read (for the VM to hold)."""
    missing = _install_runtime()
    if missing is not None:
        pytest.fail(missing)  # CI's machine has apt-get: a runtime that cannot be had is a failure, not a skip
    imports_read = _compile_for_the_containers()
    # the containers' mount point for their data: their rootfs is an rbind of `/`, where runc makes what is missing,
    # but in the VM `/` is this machine's, read-only over 9p ("mkdir .../rootfs/data: read-only file system" on a
    # fresh machine, unless a container on this side had made it first)
    Path("/data").mkdir(exist_ok=True)
    return imports_read


# The share of the CPU the VM's session is given, as an autogroup niceness (CONFIG_SCHED_AUTOGROUP: the kernel shares
# the CPU between sessions, so a niceness within the test run's session would order nothing against the sidecars'
# sessions). Its one emulated vCPU is then one host thread that runs whenever it can: the guest's bridge starts in
# ~75 s whatever the passes beside it do, where on a loaded machine (CI's, 7 test workers and their sidecars) it got
# a fraction of a core and missed its 300 s start. The work is the same and done sooner, and a guest spends CPU for
# every second it lives (development.md).
VM_AUTOGROUP_NICE = -10


def _favour(pid: int) -> str | None:
    """The session led by ``pid`` given :data:`VM_AUTOGROUP_NICE`: None, or why not (said with a failure). Its
    process group gets the same niceness, inherited by what it starts (QEMU): what counts where autogroups are
    off (``kernel.sched_autogroup_enabled=0``, the file then written to no effect) or not built."""
    failed = []
    for what, favour in (("autogroup", lambda: Path(f"/proc/{pid}/autogroup").write_text(str(VM_AUTOGROUP_NICE))),
                         ("process group", lambda: os.setpriority(os.PRIO_PGRP, pid, VM_AUTOGROUP_NICE))):
        try:
            favour()
        except OSError as error:
            failed.append(f"{what}: {error}")
    return "; ".join(failed) or None


def _scenario(prefix: list[str], workdir: str, shapes: list[str], env: dict[str, str],
              timeout: float) -> dict[str, dict[str, Any]]:
    """The scenario's report of each shape; run by ``prefix`` (the cgroup v2 VM) in a session of its own,
    favoured (:data:`VM_AUTOGROUP_NICE`), when one is given."""
    holding = ["tests.support.vm_lookups"] if vm_lookups.VARIABLE in env else []  # the VM's lookups held first
    with subprocess.Popen([*prefix, "env", *(f"{key}={value}" for key, value in env.items()), sys.executable,
                           "-m", *holding, "tests.support.oci_scenario", workdir, *shapes], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=bool(prefix)) as process:
        unfavoured = _favour(process.pid) if prefix else None
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            if prefix:
                os.killpg(process.pid, signal.SIGKILL)  # the VM's session: run-in-vm and its QEMU
            else:
                process.kill()
            stdout, stderr = process.communicate()
            pytest.fail(f"the scenario ran past {timeout:g} s ({unfavoured=})\n{stdout[-3000:]}{stderr[-3000:]}")
    reports = {}
    for line in stdout.splitlines():
        if line.startswith("{"):
            report = json.loads(line)
            report["unfavoured"] = unfavoured
            reports[report["shape"]] = report
    assert set(reports) == set(shapes), f"{unfavoured=}\n" + stdout[-3000:] + stderr[-3000:]
    return reports


def _events(report: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [event for event in report["events"] if event.get("event") == name]


def _check(report: dict[str, Any], *, v2: bool) -> None:
    shape = SHAPES[report["shape"]]
    assert report["ready"], (f"not ready: {report.get('not_ready')}; the VM not favoured: {report.get('unfavoured')}\n"
                             f"{report.get('log')}")
    # the shapes' roots, made at once, copied none of each other's mounts: else ~1,000 mounts, that every mount
    # namespace made meanwhile (each sandbox call of every test) copies
    assert report["copied_roots"] == 0, report["copied_roots"]
    [ready] = _events(report, "sandbox_ready")
    assert report["after"] == {"status": "completed", "logs": "4\n"}, report["after"]
    if shape.granted:
        assert ready["mode"] == "cgroup" and ready["shell"] is True, report["events"]
        assert report["bridge_uid"] and set(report["bridge_uid"]) == {10001}  # dropped from root, serving
        assert "from-a-subprocess" in report["subprocess"]["logs"], report["subprocess"]
        assert report["shell"] == {"stdout": "shell-ran\n0\n"}, report["shell"]
        children = report["children"]["logs"]
        assert "ran out of memory" in children or "children" not in children, children  # stopped at the bound
        assert report["left"] == [], report["left"]  # every per-call cgroup (the probe's too) removed
        assert not _events(report, "sandbox_shell_unavailable")
    else:
        assert ready["mode"] == "single-process" and ready["shell"] is False
        assert "this sandbox runs one process" in report["subprocess"]["logs"], report["subprocess"]
        refusal = report["shell"]["error"]
        assert "400" in refusal and "cgroup" in refusal and "writable-cgroups=true" in refusal, refusal
        [warned] = _events(report, "sandbox_shell_unavailable")
        assert "writable" in warned["cause"] or "RUN_AS" in warned["cause"]
    assert report["stopped"] and not report["init_failed"], report.get("log")  # a stop reaches the bridge
    if shape.masks and not v2:
        assert ready["proc"] is False and _events(report, "sandbox_without_proc")


def test_shapes_on_this_machines_cgroups(runtime: str, tmp_path: Path) -> None:
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    reports = _scenario([], str(tmp_path), list(SHAPES), {"SCENARIO_DOCTOR": "1"}, timeout=600)
    for report in reports.values():
        _check(report, v2=v2)
        # doctor, run in the container as an operator would: code runs in every shape (exit 0); with
        # --require-shell (a deployment offering the shell) it fails exactly where no cgroup is granted
        doctor, gate = report["doctor"], report["doctor--require-shell"]
        assert doctor["status"] == 0 and "code interpreter: code runs in the sandbox here" in doctor["out"], doctor
        assert gate["status"] == (0 if SHAPES[report["shape"]].granted else 1), gate
        assert ("hosted shell: shell commands run" in gate["out"]) == SHAPES[report["shape"]].granted


def _vm_command() -> list[str] | None:
    given = os.environ.get("CGROUP2_VM_COMMAND")
    if given:
        return shlex.split(given)
    found = shutil.which("run-in-vm")
    return [found, "--mem", "3072", "--timeout", "900", "--"] if found else None


def test_shapes_on_a_cgroup_v2_kernel(runtime: str) -> None:
    command = _vm_command()
    if command is None:
        pytest.skip("no cgroup v2 VM to run in: set CGROUP2_VM_COMMAND to a command that runs a command "
                    "on a cgroup v2 kernel (this checkout shared at its path), or put run-in-vm on PATH")
    # two shapes, one boot (~2 min of software emulation): the granted pod (masks, read-only root, a writable cgroup:
    # the leaf, the delegation, the /proc fallback in the cgroup mode) and the pod granted nothing (the masks'
    # fallback in the single-process mode, the refusal's words). CGROUP2_VM_SHAPES names others (compose-writable).
    shapes = os.environ.get("CGROUP2_VM_SHAPES", "pod-writable pod").split()
    # the memory bound and the three children scaled down together (one child fits the bound, two do not, as with
    # 700 MiB children under the host's 1 GiB): every page a child touches is emulated, and 3 x 700 MiB held the VM
    # for 13-25 s of its two minutes
    reports = _scenario(command, "/tmp/oci", shapes, {"SCENARIO_START_SECONDS": "300", "SCENARIO_ONE_AT_A_TIME": "1",
                                                      "SCENARIO_MEMORY_MIB": "256", "SCENARIO_CHILD_MIB": "160",
                                                      vm_lookups.VARIABLE: runtime},
                        timeout=900)
    for report in reports.values():
        _check(report, v2=True)
