"""``scripts/bench NAME``: one command for every benchmark of tools/bench/, its list complete and each name runnable.

The list is tools/bench/__main__.py's table; what is checked here is what a person sees, ``scripts/bench --help`` run
as a command, against the package's files read from disk (ast, nothing imported): a benchmark module nobody listed,
or a listed one that is gone, fails. No benchmark is run: a benchmark's own ``--help`` is enough to see that the
command finds its module, from a directory other than the repository's root, in the venv running these tests.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.bench.__main__ import BENCHES

pytestmark = pytest.mark.store_free  # no store: scripts/bench and the files of tools/bench/

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "tools" / "bench"
SCRIPT = ROOT / "scripts" / "bench"


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """scripts/bench with ARGS, on this interpreter (PYTHON: the list's reader) and this venv used as it is (no
    install), the sandbox's packages never installed by it."""
    env = {**os.environ, "PYTHON": sys.executable, "RESPONSES_BRIDGE_VENV": sys.prefix, "VENV_AS_IS": "1",
           "RESPONSES_BRIDGE_SKIP_BWRAP_INSTALL": "1", "RESPONSES_BRIDGE_SKIP_DESKTOP_INSTALL": "1"}
    env.pop("PYTHONPATH", None)
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=120, check=False)


def _listed(text: str) -> dict[str, str]:
    """The names the list gives, each with its line."""
    section = text.split("\nbenchmarks:\n", 1)[1].split("\n\n", 1)[0]
    return dict(line.strip().split(None, 1) for line in section.splitlines())


def _runs_as_main(path: Path) -> bool:
    """The module has an ``if __name__ == "__main__":`` block: it is run, not only imported."""
    return any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test)
               for node in ast.parse(path.read_text()).body)


def _modules() -> dict[str, Path]:
    """Every module of tools/bench/ by dotted name: its files, those of its folders that group benchmarks (a folder
    with no __main__.py: agents/, sandbox/), and the packages run whole (a folder with a __main__.py: that file)."""
    found: dict[str, Path] = {}

    def walk(folder: Path, name: str) -> None:
        for path in sorted(folder.iterdir()):
            if path.suffix == ".py" and path.stem not in ("__init__", "__main__"):
                found[f"{name}.{path.stem}"] = path
            elif (path / "__init__.py").is_file():
                if (path / "__main__.py").is_file():
                    found[f"{name}.{path.name}"] = path / "__main__.py"
                else:
                    walk(path, f"{name}.{path.name}")

    walk(BENCH, "tools.bench")
    return found


def test_the_list_names_every_benchmark_module_and_nothing_that_is_not_there() -> None:
    result = _run("--help")
    assert result.returncode == 0, result.stderr
    listed = _listed(result.stdout)
    assert sorted(listed) == sorted(BENCHES)
    assert all(line.strip() for line in listed.values())
    assert "scripts/bench NAME --help" in result.stdout  # where a benchmark's own options are
    modules = _modules()
    benchmarks = {bench.module for bench in BENCHES.values()}
    parts = {part for bench in BENCHES.values() for part in bench.parts}
    assert benchmarks <= set(modules), f"listed, not in tools/bench/: {sorted(benchmarks - set(modules))}"
    assert all(_runs_as_main(modules[name]) for name in benchmarks), "a listed benchmark that does not run"
    assert parts <= set(modules), f"parts not in tools/bench/: {sorted(parts - set(modules))}"
    unlisted = set(modules) - benchmarks - parts
    assert not unlisted, f"in tools/bench/, neither a listed benchmark nor a part of one: {sorted(unlisted)}"
    runnable = {name for name, path in modules.items() if _runs_as_main(path)}
    assert runnable <= benchmarks, f"runs as a benchmark, listed as a part: {sorted(runnable - benchmarks)}"


def test_no_name_and_dash_h_give_the_same_list() -> None:
    listed = _listed(_run("--help").stdout)
    short = _run("-h")
    assert short.returncode == 0 and _listed(short.stdout) == listed
    bare = _run()  # nothing named is a mistake: the list on stderr, exit 2, as responses-bridge with no command
    assert bare.returncode == 2 and bare.stdout == "" and _listed(bare.stderr) == listed


@pytest.mark.parametrize("name", ["no-such-bench", "stor", "--setup"])
def test_an_unknown_name_is_one_line_naming_the_known_ones(name: str) -> None:
    result = _run(name, "--help")
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"scripts/bench: unknown benchmark {name!r}; known: ")
    assert line.split("known: ", 1)[1].split(", ") == sorted(BENCHES)


@pytest.mark.parametrize(("name", "usage"), [("store", "usage: scripts/bench store "),
                                             ("chunks", "usage: scripts/bench chunks "),
                                             ("latency", "usage: scripts/bench latency ")])
def test_a_benchmarks_own_help_from_another_directory(name: str, usage: str, tmp_path: Path) -> None:
    result = _run(name, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(usage), result.stdout[:300]


def test_instructions_prints_every_door_without_keep(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    """``scripts/bench instructions --envoy`` without ``--keep`` prints both doors' lines (it once stopped with a
    TypeError after the first, building the kept dumps' paths from no directory)."""
    from tools.bench import instructions

    figures = {"http": 2.0e6, "http idle/s": 0.0, "http net": 2.0e6,
               "envoy": 3.0e6, "envoy idle/s": 0.0, "envoy net": 3.0e6}

    async def rounds(args: object) -> list[dict[str, dict[str, float]]]:
        return [{"A": figures, "B": figures}]

    monkeypatch.setattr(instructions, "run", rounds)
    monkeypatch.setattr(sys, "argv", ["instructions", "--envoy"])
    assert instructions.main() == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[2] for line in lines[1:]] == ["http", "envoy"], lines
