"""RESPONSES_BRIDGE_RUN_AS: a uid (and gid) that is never root, refused at start when malformed; a bridge not
started as root does nothing with it. The hand-over itself runs under runc (tests/deploy/test_oci_runtime.py): here
it would hand this machine's own cgroup away."""

from __future__ import annotations

import os

import pytest

from responses_bridge.config.settings import Settings
from responses_bridge.sandbox.cgroups.delegation import become, parse_user


def test_a_uid_and_its_gid() -> None:
    assert parse_user("10001") == (10001, 10001)
    assert parse_user("10001:20002") == (10001, 20002)
    for root in ("0", "0:10001", "10001:0"):
        with pytest.raises(ValueError, match="never runs as root"):
            parse_user(root)


@pytest.mark.parametrize("value", ["0", "root", "10001:", "-1", "10001:0"])
def test_a_bad_setting_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="run_as"):
        Settings(run_as=value)


def test_unset_or_not_root_changes_nothing() -> None:
    assert become(None) is None
    if os.geteuid() != 0:
        assert become("10001:10001") is None and os.geteuid() != 10001
