"""scripts/_sandbox.sh, which scripts/demo and scripts/test source: the one thing they install outside ``.venv``
(Debian's bubblewrap, as root) is announced before it is done, with what, why and how to skip it, and the skip is
honoured. Run with bash against stand-ins for ``id`` and ``apt-get`` on a PATH without ``bwrap``: nothing is
installed on this machine."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "_sandbox.sh"
SKIP = "RESPONSES_BRIDGE_SKIP_BWRAP_INSTALL"
SKIP_DESKTOP = "RESPONSES_BRIDGE_SKIP_DESKTOP_INSTALL"


def _tool(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(0o755)


def _source(tmp_path: Path, *, uid: int = 0, env: dict[str, str] | None = None) -> tuple[str, list[str]]:
    """Source the script as scripts/demo does (``set -euo pipefail``, ``$0`` the caller): its stderr, and the
    apt-get commands it ran. The stand-in apt-get "installs" bwrap and writes a marker to the same stderr."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _tool(bin_dir, "id", f"echo {uid}\n")
    _tool(bin_dir, "apt-get", f'echo "apt-get $*" >> {calls}\necho "<apt-get ran>" >&2\n'
                              f'[ "$1" = install ] && printf "#!/bin/bash\\n" > {bin_dir}/bwrap '
                              f'&& chmod +x {bin_dir}/bwrap\nexit 0\n')
    result = subprocess.run(["/bin/bash", "-c", 'set -euo pipefail; source "$1"', "scripts/demo", str(SCRIPT)],
                            env={"PATH": str(bin_dir), SKIP_DESKTOP: "1", **(env or {})}, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stderr, calls.read_text().splitlines() if calls.exists() else []


def test_it_says_what_it_installs_why_and_how_to_skip_before_it_does(tmp_path: Path) -> None:
    stderr, calls = _source(tmp_path)
    assert calls and calls[0].startswith("apt-get install -y") and calls[0].endswith("bubblewrap")
    notice = stderr.split("<apt-get ran>", 1)[0]  # all of it before apt-get ran
    assert "apt-get install -y bubblewrap" in notice  # what, exactly
    assert "code interpreter's sandbox" in notice and "code_interpreter tool" in notice  # why
    assert f"{SKIP}=1 demo" in notice  # how not to, for the script that was run
    assert "installed bubblewrap" in stderr.split("<apt-get ran>")[-1]


def _source_with_bwrap(tmp_path: Path, env: dict[str, str]) -> tuple[str, list[str]]:
    """Source the script as root where bubblewrap is already installed and the desktop's programs are not (a PATH
    of stand-ins): its stderr, and the apt-get commands it ran."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    _tool(bin_dir, "id", "echo 0\n")
    _tool(bin_dir, "bwrap", "exit 0\n")
    _tool(bin_dir, "apt-get", f'echo "apt-get $*" >> {calls}\necho "<apt-get ran>" >&2\nexit 0\n')
    result = subprocess.run(["/bin/bash", "-c", 'set -euo pipefail; source "$1"', "scripts/demo", str(SCRIPT)],
                            env={"PATH": str(bin_dir), **env}, stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    return result.stderr, calls.read_text().splitlines() if calls.exists() else []


def test_the_desktops_packages_are_said_before_they_are_installed(tmp_path: Path) -> None:
    stderr, calls = _source_with_bwrap(tmp_path, {})
    assert calls and calls[0].startswith("apt-get install -y")
    assert "xvfb" in calls[0].split() and "xdotool" in calls[0].split()
    notice = stderr.split("<apt-get ran>", 1)[0]
    assert "apt-get install -y xvfb xdotool" in notice and "computer use" in notice  # what and why
    assert f"{SKIP_DESKTOP}=1 demo" in notice  # how not to
    assert "could not install" in stderr.split("<apt-get ran>")[-1]  # the stand-in installed nothing: said


def test_the_desktop_skip_variable_installs_none_of_its_packages(tmp_path: Path) -> None:
    for skip in (SKIP_DESKTOP, SKIP):  # no desktop without the sandbox: skipping bubblewrap skips it too
        (tmp_path / skip).mkdir()
        stderr, calls = _source_with_bwrap(tmp_path / skip, {skip: "1"})
        assert calls == []
        assert f"Not installing them ({SKIP_DESKTOP}=1)" in stderr and "apt-get install xvfb xdotool" in stderr


def test_a_command_that_is_not_the_script_is_named_as_it_is_typed(tmp_path: Path) -> None:
    """scripts/bench sources it for one benchmark of many (``SANDBOX_FOR``): the notice names ``bench code``."""
    stderr, calls = _source(tmp_path, env={"SANDBOX_FOR": "bench code"})
    assert calls and f"{SKIP}=1 bench code" in stderr.split("<apt-get ran>", 1)[0]
    assert stderr.startswith("bench code: ") and " demo" not in stderr


def test_the_skip_variable_installs_nothing(tmp_path: Path) -> None:
    stderr, calls = _source(tmp_path, env={SKIP: "1"})
    assert calls == []
    assert f"Not installing it ({SKIP}=1)" in stderr and "apt-get install bubblewrap" in stderr


def test_without_root_or_sudo_it_only_says_how(tmp_path: Path) -> None:
    stderr, calls = _source(tmp_path, uid=1000)
    assert calls == []
    assert "sudo apt-get install bubblewrap" in stderr


def test_the_readme_says_so_too() -> None:
    """The README's promise about what the scripts need names the system package and the same skip variable."""
    intro = (ROOT / "README.md").read_text().split("## What it is", 1)[0]
    assert "apt-get install bubblewrap" in intro
    assert f"{SKIP}=1 scripts/demo" in intro
    assert re.search(r"\$\{" + SKIP + r":-\}", SCRIPT.read_text())


def _runtime_out_of_reach(python: str) -> tuple[Path, Path, dict[str, str]]:
    """A "home" directory of mode 0700 holding a runtime directory, a stand-in venv whose python (fed the
    script's check on stdin) runs ``python``, a stand-in bwrap; the caller script that sources _sandbox.sh and then
    reads the runtime's file as the sandbox's uid would. Made under a directory every uid can traverse."""
    base = Path(tempfile.mkdtemp(prefix="sandbox-script-", dir="/tmp"))
    base.chmod(0o755)
    home = base / "home"
    (home / "runtime").mkdir(parents=True)
    (home / "runtime" / "python").write_text("runtime reached\n")
    (home / ".profile").write_text("root's own\n")
    home.chmod(0o700)
    bin_dir = base / "bin"
    bin_dir.mkdir()
    _tool(bin_dir, "bwrap", "exit 0\n")
    venv = base / "venv"
    (venv / "bin").mkdir(parents=True)
    _tool(venv / "bin", "python", f"cat > /dev/null\n{python}\n")
    caller = base / "caller"
    _tool(base, "caller", f'set -euo pipefail\nsource {SCRIPT}\n'
                          f'setpriv --reuid=65534 --regid=65534 --clear-groups cat "$HOME_DIR/runtime/python"\n'
                          f'cat "$HOME_DIR/.profile"\nstat -c %a "$HOME_DIR"\n')
    env = {"PATH": f"{bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin", "VENV": str(venv), "HOME_DIR": str(home)}
    return caller, home, env


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("setpriv"),
                    reason="needs root, unshare and setpriv")
def test_as_root_the_runtime_is_reached_in_a_private_mount_namespace_never_by_loosening_the_host() -> None:
    """The sandbox's uid cannot traverse the home directory holding the runtime: the script goes on in a mount
    namespace of its own where it can (the directory covered, its entries bound back); the host's directory keeps
    its mode and no mount of it is left on the host."""
    caller, home, env = _runtime_out_of_reach(
        'setpriv --reuid=65534 --regid=65534 --clear-groups test -r "$HOME_DIR/runtime/python" '
                  '|| echo "$HOME_DIR"')
    try:
        result = subprocess.run([str(caller)], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == ["runtime reached", "root's own", "701"]  # inside: o+x, all there
        assert "private mount namespace" in result.stderr and str(home) in result.stderr
        assert stat.S_IMODE(home.stat().st_mode) == 0o700  # the host's directory as it was
        assert str(home) not in Path("/proc/self/mountinfo").read_text()
    finally:
        shutil.rmtree(home.parent)


def test_without_a_private_namespace_it_says_what_to_run_and_stops() -> None:
    caller, home, env = _runtime_out_of_reach('echo "$HOME_DIR"')
    bin_dir = Path(env["PATH"].split(":")[0])
    _tool(bin_dir, "id", "echo 0\n")
    _tool(bin_dir, "unshare", "exit 1\n")  # a container that refuses new mount namespaces
    try:
        result = subprocess.run([str(caller)], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                timeout=60, check=False)
        assert result.returncode == 1 and result.stdout == "", result.stdout
        said = " ".join(result.stderr.split())
        assert str(home) in said and "no private mount namespace could be made" in said
        assert "PYTHON=/usr/bin/python3" in said and "RESPONSES_BRIDGE_CODE_SANDBOX_UID" in said
        assert f"{SKIP}=1 caller" in said
        assert stat.S_IMODE(home.stat().st_mode) == 0o700
    finally:
        shutil.rmtree(home.parent)
