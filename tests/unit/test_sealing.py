"""sealing.py: AES-GCM blobs bound to their purpose and the deployment's key."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.sealing import PREFIX, Sealer, decode_key, load_or_create_key


def test_round_trip_and_fresh_nonces() -> None:
    sealer = Sealer(os.urandom(32))
    a, b = sealer.seal("reasoning", {"text": "x"}), sealer.seal("reasoning", {"text": "x"})
    assert a.startswith(PREFIX) and a != b
    assert sealer.open("reasoning", a) == {"text": "x"}


@pytest.mark.parametrize("mutate", [
    lambda blob: blob[:-4] + ("AAAA" if blob[-4:] != "AAAA" else "BBBB"),
    lambda blob: blob.replace(PREFIX, "rb2."),
    lambda blob: PREFIX + "@@@",
    lambda blob: PREFIX,
    lambda blob: None,
])
def test_altered_blobs_are_400(mutate) -> None:  # type: ignore[no-untyped-def]
    sealer = Sealer(os.urandom(32))
    with pytest.raises(APIError) as caught:
        sealer.open("reasoning", mutate(sealer.seal("reasoning", [1])), param="input[0].encrypted_content")
    assert caught.value.status == 400 and caught.value.param == "input[0].encrypted_content"


def test_purpose_and_key_bind_the_blob() -> None:
    sealer = Sealer(os.urandom(32))
    blob = sealer.seal("reasoning", 1)
    with pytest.raises(APIError):
        sealer.open("compaction", blob)
    with pytest.raises(APIError):
        Sealer(os.urandom(32)).open("reasoning", blob)


def test_key_file_is_created_once_private(tmp_path: Path) -> None:
    db = str(tmp_path / "d" / "bridge.db")
    key = load_or_create_key(None, db)
    path = tmp_path / "d" / "sealing.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_key(None, db) == key
    configured = base64.urlsafe_b64encode(os.urandom(32)).decode()
    assert load_or_create_key(configured, db) == decode_key(configured)
    with pytest.raises(ValueError):
        decode_key(base64.urlsafe_b64encode(b"short").decode())


def _load_key_at_barrier(barrier, db: str, results) -> None:  # a child process
    barrier.wait()
    try:
        results.put(("ok", load_or_create_key(None, db)))
    except Exception as exc:  # noqa: BLE001  (reported to the test, not lost in the child)
        results.put(("error", repr(exc)))


def test_processes_starting_at_once_share_one_key(tmp_path) -> None:
    """Several processes create the key file at the same instant: none fails, none reads a half-written file,
    and all of them end up with the key that is in the file."""
    import multiprocessing

    # forked from one server that has imported this module once (not 24 interpreters each importing the bridge):
    # each child is still a process of its own, and the barrier still releases all six at the same instant
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    for round_number in range(4):
        db = str(tmp_path / f"round{round_number}" / "bridge.db")
        count = 6
        barrier, results = context.Barrier(count), context.Queue()
        processes = [context.Process(target=_load_key_at_barrier, args=(barrier, db, results)) for _ in range(count)]
        for process in processes:
            process.start()
        outcomes = [results.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(timeout=60)
        assert [kind for kind, _ in outcomes] == ["ok"] * count, outcomes
        on_disk = decode_key((tmp_path / f"round{round_number}" / "sealing.key").read_text())
        assert {key for _, key in outcomes} == {on_disk}
        assert sorted(p.name for p in (tmp_path / f"round{round_number}").iterdir()) == ["sealing.key"]
