"""scripts/_sandbox.sh, which scripts/demo and scripts/test source: the one thing they install outside ``.venv``
(Debian's bubblewrap, as root) is announced before it is done, with what, why and how to skip it, and the skip is
honoured. Run with bash against stand-ins for ``id`` and ``apt-get`` on a PATH without ``bwrap``: nothing is
installed on this machine."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "_sandbox.sh"
SKIP = "RESPONSES_BRIDGE_SKIP_BWRAP_INSTALL"


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
                            env={"PATH": str(bin_dir), **(env or {})}, stdin=subprocess.DEVNULL,
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
