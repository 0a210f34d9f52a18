"""A program's fingerprint binds its code and world under the bridge's key; a replay must make the recorded calls,
in order."""

from __future__ import annotations

import hashlib
import json

import pytest

from responses_bridge.engine.tools.programs import (
    ProgramWorld,
    fingerprint,
    open_fingerprint,
    program_signer,
    tenant_signer,
)
from responses_bridge.protocol.errors import APIError
from responses_bridge.run.programs.isolate import ToolCall
from responses_bridge.run.programs.replay import check_replay
from responses_bridge.sealing import Sealer

SIGN = program_signer(Sealer(b"k" * 32))


def test_a_fingerprint_gives_back_its_world_for_its_own_code_only() -> None:
    world = ProgramWorld(clock_ms=1_700_000_000_000, seed=42)
    value = fingerprint("return 1", world, SIGN)
    assert open_fingerprint("return 1", value, "input[0].fingerprint", SIGN) == world
    for code, given in (("return 2", value), ("return 1", value[:-1] + ("1" if value[-1] == "0" else "0")),
                        ("return 1", "pf3.x.y"), ("return 1", None), ("return 1", value.replace("pf3.", "pf2.")),
                        ("return 1", value.replace("pf3.", "pf1."))):
        with pytest.raises(APIError) as refused:
            open_fingerprint(code, given, "input[0].fingerprint", SIGN)
        assert refused.value.status == 400 and refused.value.param == "input[0].fingerprint"
        assert refused.value.code == "invalid_program_fingerprint"


def test_only_the_bridges_key_makes_a_fingerprint_it_accepts() -> None:
    """The unkeyed hash a client could compute (the old ``pf1.``, or one under another key) is refused; the same key
    (a restart, another replica) accepts it."""
    world = ProgramWorld(clock_ms=1_700_000_000_000, seed=7)
    code = "return 'FORGED RAN'"
    material = json.dumps([code, world.clock_ms, world.seed]).encode()
    unkeyed = hashlib.sha256(b"responses-bridge program\0" + material).hexdigest()[:32]
    payload = fingerprint(code, world, SIGN).split(".")[1]
    forged = [f"pf2.{payload}.{unkeyed}", f"pf1.{payload}.{unkeyed}",
              fingerprint(code, world, program_signer(Sealer(b"x" * 32)))]
    for value in forged:
        with pytest.raises(APIError) as refused:
            open_fingerprint(code, value, "input[1].fingerprint", SIGN)
        assert refused.value.code == "invalid_program_fingerprint"
    again = program_signer(Sealer(b"k" * 32))  # the same key in another process
    assert open_fingerprint(code, fingerprint(code, world, SIGN), "p", again) == world


def test_a_fingerprint_is_its_tenants_and_its_call_ids_only() -> None:
    """Another tenant's item (its code and fingerprint as made), or the fingerprint moved to another program item of
    the same code, is refused in the forged item's words; the tenant's own item under its own call_id opens."""
    world = ProgramWorld(clock_ms=1_700_000_000_000, seed=9)
    acme, beta = tenant_signer(SIGN, "acme"), tenant_signer(SIGN, "beta")
    value = fingerprint("return 1", world, acme, "call_1")
    assert open_fingerprint("return 1", value, "p", acme, "call_1") == world
    assert open_fingerprint("return 1", value, "p", tenant_signer(program_signer(Sealer(b"k" * 32)), "acme"),
                            "call_1") == world  # the same key and tenant in another process
    for sign, call_id in ((beta, "call_1"), (acme, "call_2"), (SIGN, "call_1"), (tenant_signer(SIGN, "acm"), "call_1"),
                          (tenant_signer(SIGN, ""), "call_1")):
        with pytest.raises(APIError) as refused:
            open_fingerprint("return 1", value, "input[1].fingerprint", sign, call_id)
        assert refused.value.status == 400 and refused.value.code == "invalid_program_fingerprint"
        assert refused.value.param == "input[1].fingerprint"


def test_a_replay_must_make_the_recorded_calls_in_order() -> None:
    made = [ToolCall("a", '{"x": 1, "y": 2}'), ToolCall("b", "{}")]
    check_replay(made, [ToolCall("a", '{"y":2,"x":1}')], "prog_1")  # the same JSON, spelled otherwise
    check_replay(made, made, "prog_1")
    for recorded in ([ToolCall("b", "{}")], [ToolCall("a", '{"x": 2, "y": 2}')], [*made, ToolCall("c", "{}")]):
        with pytest.raises(APIError) as refused:
            check_replay(made, recorded, "prog_1")
        assert refused.value.status == 400 and "prog_1" in refused.value.message
