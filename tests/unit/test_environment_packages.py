"""An environment's ``packages`` checked (what pip and npm may be handed), the operator's indexes parsed, the
install's one command, and the installed tree kept and laid out again (bounded, links only inside it)."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import pytest

from responses_bridge.protocol.containers.environment_packages import MAX_PACKAGES, PackageIndexes, checked_packages
from responses_bridge.protocol.containers.environments import hosted_plan
from responses_bridge.protocol.errors import APIError
from responses_bridge.services.agents.environments.packages import (
    SETTING,
    EnvironmentPackages,
    _naming,
    install_command,
)
from responses_bridge.services.containers.package_trees import InstallFailed, read_modes, unpack_tree, zip_tree


@pytest.mark.parametrize("entry", ["requests", "numpy>=2,<3", "Django[argon2]==5.0.1",
                                   "pywin32; sys_platform == 'win32'", "a.b-c_d~=1.2"])
def test_python_requirement_specifiers_pass_normalized(entry: str) -> None:
    python, npm, _ = checked_packages({"python": [entry]})
    assert len(python) == 1 and npm == ()


@pytest.mark.parametrize("entry", ["--index-url=https://x/simple", "-e .", "-r requirements.txt", "./pkg",
                                   "/abs/pkg.whl", "pkg @ https://x/pkg.whl", "https://x/pkg.whl",
                                   "git+https://x/pkg.git", "C:\\pkg", "", " ", "x" * 201, 3, None])
def test_python_options_paths_and_urls_are_400s_naming_the_entry(entry: object) -> None:
    with pytest.raises(APIError) as refused:
        checked_packages({"python": ["fine", entry]})
    assert refused.value.status == 400 and refused.value.param == "environment.packages.python[1]"
    assert refused.value.code == "invalid_value"


@pytest.mark.parametrize("entry", ["lodash", "lodash@4.17.21", "@types/node", "@types/node@^20", "left-pad@latest",
                                   "react@>=18 <19"])
def test_npm_names_with_versions_pass(entry: str) -> None:
    assert checked_packages({"npm": [entry]}) == ((), (entry,), ())


@pytest.mark.parametrize("entry", ["--registry=https://x", "git+https://x/y.git", "x@file:../y", "x@http://y/z.tgz",
                                   "github:user/repo", "../local", "UPPER", "x@git+ssh://y", "@scope", ""])
def test_npm_options_paths_and_urls_are_400s_naming_the_entry(entry: str) -> None:
    with pytest.raises(APIError) as refused:
        checked_packages({"npm": [entry]})
    assert refused.value.status == 400 and refused.value.param == "environment.packages.npm[0]"


def test_system_packages_count_and_shape() -> None:
    assert checked_packages({"system": ["curl", "jq=1.6-2.1", "libc6-dev"]}) == \
        ((), (), ("curl", "jq=1.6-2.1", "libc6-dev"))
    for entry in ("--allow-unauthenticated", "../x.deb", "Curl", "curl jq", "x", "curl=1.0;rm", 7):
        with pytest.raises(APIError) as refused:
            checked_packages({"system": ["curl", entry]})
        assert refused.value.param == "environment.packages.system[1]" and refused.value.code == "invalid_value"
    with pytest.raises(APIError) as refused:
        checked_packages({"python": [f"p{n}" for n in range(MAX_PACKAGES + 1)]})
    assert refused.value.param == "environment.packages.python"
    with pytest.raises(APIError) as refused:
        checked_packages({"ruby": ["x"]})
    assert refused.value.code == "unknown_parameter"
    with pytest.raises(APIError) as refused:
        checked_packages({"python": "requests"})
    assert refused.value.code == "invalid_type"
    assert checked_packages({"python": [], "npm": None, "system": []}) == ((), (), ())
    plan = hosted_plan({"type": "openai_hosted", "packages": {"python": ["requests"], "npm": ["lodash"]}})
    assert plan.resource("cntr_1", [])["packages"] == {"npm": ["lodash"], "python": ["requests"], "system": []}


def test_debian_repositories_are_sources_lines_signed_by_default() -> None:
    indexes = PackageIndexes.parse("python=https://pypi.example/simple,"
                                   "debian=https://deb.example/debian bookworm main contrib,"
                                   "debian=[trusted=yes] http://10.0.0.5:8080/repo/ ./")
    assert indexes.debian == ("[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] https://deb.example/debian "
                              "bookworm main contrib", "[trusted=yes] http://10.0.0.5:8080/repo/ ./")
    assert indexes.hosts() == ["10.0.0.5", "deb.example", "pypi.example"]
    for bad in ("debian=https://deb.example/debian", "debian=ftp://deb.example/debian bookworm main",
                "debian=[arch=amd64] https://deb.example/debian bookworm", "debian=https://u:p@deb.example/d x",
                "debian=https://deb.example/debian book'worm"):
        with pytest.raises(ValueError):
            PackageIndexes.parse(bad)


def test_indexes_parse_and_name_the_bad_entry() -> None:
    parsed = PackageIndexes.parse("python=https://pypi.example/simple, python=http://mirror:8080/simple,"
                                  "npm=https://registry.example")
    assert parsed.python == ("https://pypi.example/simple", "http://mirror:8080/simple")
    assert parsed.npm == "https://registry.example"
    assert parsed.hosts() == ["mirror", "pypi.example", "registry.example"]
    for bad in ("pip=https://x", "python=ftp://x", "python=https://user:pw@x/simple", "npm=https://a,npm=https://b",
                "python="):
        with pytest.raises(ValueError):
            PackageIndexes.parse(bad)


class _Refusing:
    def refusal(self, job: str, **_: object) -> str | None:
        return None


def test_no_index_for_a_kind_is_a_400_naming_the_setting() -> None:
    plan = hosted_plan({"type": "openai_hosted", "packages": {"npm": ["lodash"]}})
    for indexes in (None, PackageIndexes(("https://x/simple",))):
        packages = EnvironmentPackages(None, _Refusing(), indexes)  # type: ignore[arg-type]
        with pytest.raises(APIError) as refused:
            packages.check(plan)
        assert refused.value.param == "environment.packages.npm" and SETTING in refused.value.message
    EnvironmentPackages(None, _Refusing(), PackageIndexes((), "https://r"),  # type: ignore[arg-type]
                        ).check(plan)


def test_the_install_is_one_command_each_entry_one_argument() -> None:
    command = install_command(("numpy>=2,<3", "pywin32; sys_platform == 'win32'"), ("@types/node@^20",),
                              PackageIndexes(("https://a/simple", "https://b/simple"), "https://r"))
    pip_line = next(line for line in command.splitlines() if line.startswith("python3 -m pip"))
    words = shlex.split(pip_line)
    assert words[-2:] == ["numpy>=2,<3", "pywin32; sys_platform == 'win32'"]
    assert "--index-url=https://a/simple" in words and "--extra-index-url=https://b/simple" in words
    npm_line = next(line for line in command.splitlines() if line.startswith("npm install"))
    assert shlex.split(npm_line)[-1] == "@types/node@^20" and "--registry=https://r" in shlex.split(npm_line)
    assert "npm install" not in install_command(("x",), (), PackageIndexes(("https://a/simple",)))


def test_an_install_error_names_the_package_its_output_names() -> None:
    said = "ERROR: No matching distribution found for nosuchpkg"
    assert _naming(said, ("tinypkg", "nosuchpkg>=1")).startswith("Installing the package 'nosuchpkg>=1' failed")
    assert _naming("npm error 404 '@scope/thing@1' is not in this registry", ("@scope/thing@1",)).startswith(
        "Installing the package '@scope/thing@1'")
    assert _naming("killed", ("a", "b")).startswith("Installing the packages (a, b) failed")


def test_a_kept_tree_comes_back_with_links_inside_it_only(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "python" / "pkg").mkdir(parents=True)
    (tree / "python" / "pkg" / "__init__.py").write_text("X = 1\n")
    (tree / "npm" / "node_modules" / ".bin").mkdir(parents=True)
    (tree / "npm" / "node_modules" / "tool").mkdir()
    script = tree / "npm" / "node_modules" / "tool" / "cli.js"
    script.write_text("#!/usr/bin/env node\n")
    script.chmod(0o700)
    os.symlink("../tool/cli.js", tree / "npm" / "node_modules" / ".bin" / "tool")
    os.symlink("/etc/passwd", tree / "npm" / "node_modules" / ".bin" / "outside")
    os.symlink("../../../../escape", tree / "npm" / "node_modules" / ".bin" / "up")
    archive = tmp_path / "kept.zip"
    size, _ = zip_tree(tree, archive, 1 << 20)
    assert size == len("X = 1\n") + len("#!/usr/bin/env node\n")
    (tmp_path / "cache").mkdir()
    root = unpack_tree(archive, tmp_path / "cache" / "blob", 1 << 20).path
    assert (root / "python" / "pkg" / "__init__.py").read_text() == "X = 1\n"
    assert os.readlink(root / "npm" / "node_modules" / ".bin" / "tool") == "../tool/cli.js"
    assert not (root / "npm" / "node_modules" / ".bin" / "outside").is_symlink()
    assert not (root / "npm" / "node_modules" / ".bin" / "up").is_symlink()
    assert (root / "npm" / "node_modules" / "tool" / "cli.js").stat().st_mode & 0o777 == 0o755
    assert (root / "python" / "pkg" / "__init__.py").stat().st_mode & 0o777 == 0o644
    with pytest.raises(InstallFailed):
        zip_tree(tree, tmp_path / "small.zip", 3)
    with pytest.raises(OSError):
        unpack_tree(archive, tmp_path / "cache" / "again", 3)
    assert not (tmp_path / "cache" / "again").exists()


def test_the_installs_own_record_gives_back_modes_and_links_a_transfer_lost(tmp_path: Path) -> None:
    """A pod's file API brings the install's files back without modes or links: the install's record of them
    (NUL-separated, beside the tree) makes them again, a link out of the tree still left out."""
    tree = tmp_path / "tree"
    (tree / "python" / "bin").mkdir(parents=True)
    (tree / "python" / "bin" / "tool").write_text("#!/usr/bin/python3\n")  # 0644: its x bit lost
    (tree / "npm" / "node_modules" / "pkg").mkdir(parents=True)
    (tree / "npm" / "node_modules" / "pkg" / "cli.js").write_text("#!/usr/bin/env node\n")
    modes = tmp_path / "modes"
    modes.write_bytes(b"x\0python/bin/tool\0x\0npm/node_modules/pkg/cli.js\0"
                      b"l\0npm/node_modules/.bin/pkg\0../pkg/cli.js\0l\0npm/node_modules/.bin/out\0/etc/passwd\0"
                      b"l\0npm/../../escape\0x\0")
    recorded = read_modes(modes)
    assert recorded[0] == {"python/bin/tool", "npm/node_modules/pkg/cli.js"}
    zip_tree(tree, tmp_path / "kept.zip", 1 << 20, recorded)
    (tmp_path / "cache").mkdir()
    root = unpack_tree(tmp_path / "kept.zip", tmp_path / "cache" / "blob", 1 << 20).path
    assert (root / "python" / "bin" / "tool").stat().st_mode & 0o777 == 0o755
    assert os.readlink(root / "npm" / "node_modules" / ".bin" / "pkg") == "../pkg/cli.js"
    assert (root / "npm" / "node_modules" / ".bin" / "pkg").resolve() == \
        (root / "npm" / "node_modules" / "pkg" / "cli.js").resolve()
    assert not os.path.lexists(root / "npm" / "node_modules" / ".bin" / "out")
    assert read_modes(tmp_path / "missing") == (set(), {})


def test_an_installer_missing_from_a_bubblewrap_sandbox_is_a_400_naming_the_kind(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from responses_bridge.sandbox import Sandbox
    from responses_bridge.services.agents.environments import packages as environment_packages

    sandbox = object.__new__(Sandbox)  # the check reads no state of it: its /usr is this host's
    monkeypatch.setattr(environment_packages.shutil, "which", lambda tool, path=None: None if tool == "npm" else tool)
    packages = EnvironmentPackages(None, sandbox, PackageIndexes(("https://x/simple",), "https://r"))  # type: ignore[arg-type]
    with pytest.raises(APIError) as refused:
        packages.check(hosted_plan({"type": "openai_hosted", "packages": {"npm": ["lodash"]}}))
    assert refused.value.param == "environment.packages.npm" and "needs npm" in refused.value.message
