"""A fatal mistake in the settings ``serve`` starts with ends it at once: one stderr line naming the setting and
the fix, a non-zero exit, and never a process left running (before: a bad ``RESPONSES_BRIDGE_SEALING_KEY`` printed a
traceback and the process hung with its store's thread alive, so a pod neither served nor restarted). The real
CLI, a clean environment, its own data directory."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest

from responses_bridge.demo.procs import free_port
from tests.support import zygote
from tests.support.bridge import PYTHON
from tests.support.cli import clean_env

pytestmark = pytest.mark.store_free  # every command names its own SQLite file: none reads the store switch

HANG_GUARD = 60.0
"""Seconds a failing start may take before the test calls it hung: a guard, not a measure (it exits in one)."""
FORM = "it must be base64 of 32 random bytes, e.g. the output of: openssl rand -base64 32"


def serve(tmp_path: Path, db: Path, **env: str) -> tuple[int, list[str]]:
    """``serve`` on free ports; its exit status and stderr lines, once it has exited (failing if it never does)."""
    try:
        done = zygote.run([PYTHON, "-m", "responses_bridge", "serve", "--db", str(db), "--upstream",
                           "http://127.0.0.1:9/v1", "--http-port", str(free_port()), "--extproc-port",
                           str(free_port())], timeout=HANG_GUARD, cwd=tmp_path, env=clean_env(tmp_path, **env))
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"serve never exited: {str(hung.stderr)[-2000:]}")
    return done.returncode, done.stderr.splitlines()


@pytest.mark.parametrize(("key", "problem"), [
    ("not base64!!", "not base64"),
    (base64.b64encode(os.urandom(16)).decode(), "decodes to 16 bytes, not 32"),
    (base64.urlsafe_b64encode(os.urandom(31)).decode(), "decodes to 31 bytes, not 32"),
], ids=["not-base64", "16-bytes", "31-bytes"])
def test_a_bad_sealing_key_exits_with_one_line(tmp_path: Path, key: str, problem: str) -> None:
    status, lines = serve(tmp_path, tmp_path / "state" / "bridge.db", RESPONSES_BRIDGE_SEALING_KEY=key)
    assert status != 0 and len(lines) == 1, lines
    assert lines[0] == f"responses-bridge serve: RESPONSES_BRIDGE_SEALING_KEY='********': {problem}; {FORM}"
    assert key not in lines[0]
    assert not (tmp_path / "state").exists()  # refused before anything was opened or made


def test_a_damaged_key_file_beside_the_database_exits_with_one_line(tmp_path: Path) -> None:
    """The key made beside the database is read after the store is open: the store is closed again, and the
    line names the file."""
    (tmp_path / "state").mkdir()
    key_file = tmp_path / "state" / "sealing.key"
    key_file.write_text(base64.b64encode(os.urandom(16)).decode())
    status, lines = serve(tmp_path, tmp_path / "state" / "bridge.db")
    assert status != 0 and len(lines) == 1, lines
    assert lines[0] == (f"responses-bridge serve: {key_file} (the sealing key made beside the database; remove it "
                        f"to have a new one made, or set RESPONSES_BRIDGE_SEALING_KEY): decodes to 16 bytes, not 32; "
                        f"{FORM}")


@pytest.mark.parametrize(("env", "line"), [
    ({"RESPONSES_BRIDGE_HTTP_HOST": "999.1.1.1"},
     "the HTTP door cannot listen on 999.1.1.1: the address does not resolve (Name or service not known) "
     "(--http-host / RESPONSES_BRIDGE_HTTP_HOST)"),
    ({"RESPONSES_BRIDGE_EXTPROC_HOST": "192.0.2.1"},  # TEST-NET-1: never this machine's
     "the ext_proc door cannot listen on 192.0.2.1: not an address of this machine "
     "(--extproc-host / RESPONSES_BRIDGE_EXTPROC_HOST)"),
    ({"RESPONSES_BRIDGE_EXTPROC_UDS": "/nonexistent/dir/ext.sock"},
     "the ext_proc door cannot listen on unix:/nonexistent/dir/ext.sock: its directory does not exist "
     "(--extproc-uds / RESPONSES_BRIDGE_EXTPROC_UDS)"),
    ({"RESPONSES_BRIDGE_LOG_LEVEL": "loud"},
     "RESPONSES_BRIDGE_LOG_LEVEL='loud': must be debug, info, warning or error"),
], ids=["http-host", "extproc-host", "extproc-uds", "log-level"])
def test_a_door_s_address_or_the_log_level_that_cannot_work_is_one_line(tmp_path: Path, env: dict[str, str],
                                                                       line: str) -> None:
    """Before: a host that does not resolve was ``Unknown error -2`` naming the port's setting, after the store
    had opened and logged; a socket path in no directory came after gRPC's own ``add_port.cc`` line and asked
    whether a port was in use; a log level nobody knows was taken as info, silently."""
    status, lines = serve(tmp_path, tmp_path / "bridge.db", **env)
    assert status != 0 and lines == [f"responses-bridge serve: {line}"]
    assert not (tmp_path / "bridge.db").exists()  # stopped before the store opened
