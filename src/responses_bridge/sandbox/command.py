"""The bubblewrap command line of one sandbox run: what the code sees of the machine.

New user, PID, IPC, UTS, cgroup and network namespaces (the code's network namespace has only its own loopback,
which reaches nothing outside it); an unprivileged uid inside; every capability dropped; no further user
namespaces; a new session (no terminal to inject into); ``--die-with-parent`` so that killing bubblewrap ends
everything the code started. The file system is a fresh tmpfs holding only: the system's directories read-only
(``/usr`` and the merged-usr links, a few files of ``/etc``), the Python installation and the environment the
bridge runs from (read-only: its packages, numpy among them), the launcher, a private ``/tmp`` of bounded size,
and ``/mnt/data`` — the container's files, the only place written through to the host. The bridge's data
directory, database, configuration and working directory are never mounted, and the environment is cleared: only
the variables below are set, so no secret of the bridge's reaches the code.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from .limits import MIB, SandboxLimits

DATA_DIR = "/mnt/data"
LAUNCHER = "/opt/sandbox/launcher.py"
SANDBOX_UID = 1000
TMP_BYTES = 64 * MIB
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/alternatives", "/etc/fonts",
             "/etc/localtime", "/etc/mime.types", "/etc/ssl/certs")

ENVIRONMENT = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "TMPDIR": "/tmp",
    "MPLBACKEND": "Agg",
    "MPLCONFIGDIR": "/tmp/matplotlib",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
}


def python_roots() -> list[str]:
    """The directories the interpreter needs: its installation and, for a virtual environment, the environment
    (its site-packages). Read-only in the sandbox."""
    roots = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix)}
    return sorted(root for root in roots if not any(root.startswith(other + "/") for other in roots))


def _system_binds() -> list[str]:
    arguments: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):
            arguments += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            arguments += ["--ro-bind", path, path]
    for path in ETC_FILES:
        arguments += ["--ro-bind-try", path, path]
    return arguments


def bwrap_command(bwrap: str, workdir: Path, limits: SandboxLimits, *, python: str | None = None,
                  launcher: Path | None = None, extra_roots: Sequence[str] = (), times_fd: int = -1) -> list[str]:
    """The argv that runs the launcher (which reads the code from stdin) in a sandbox over ``workdir``.
    ``times_fd``: an inherited descriptor the launcher writes its timing marks on."""
    interpreter = python or sys.executable
    arguments = [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session", "--disable-userns",
                 "--cap-drop", "ALL", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
                 "--hostname", "sandbox", "--clearenv"]
    for name, value in ENVIRONMENT.items():
        arguments += ["--setenv", name, value]
    arguments += ["--tmpfs", "/", *_system_binds(), "--proc", "/proc", "--dev", "/dev",
                  "--size", str(TMP_BYTES), "--tmpfs", "/tmp"]
    for root in [*python_roots(), *extra_roots]:
        arguments += ["--ro-bind", root, root]
    arguments += ["--ro-bind", str(launcher or Path(__file__).with_name("launcher.py")), LAUNCHER,
                  "--bind", str(workdir), DATA_DIR, "--chdir", DATA_DIR, "--remount-ro", "/",
                  interpreter, "-I", "-B", LAUNCHER,
                  str(limits.memory_bytes), str(limits.processes), str(limits.file_bytes), str(times_fd)]
    return arguments
