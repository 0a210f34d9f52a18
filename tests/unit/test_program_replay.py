"""A program's fingerprint binds its code and world; a replay must make the recorded calls, in order."""

from __future__ import annotations

import pytest

from responses_bridge.engine.programs import ProgramWorld, fingerprint, open_fingerprint
from responses_bridge.protocol.errors import APIError
from responses_bridge.run.programs.isolate import ToolCall
from responses_bridge.run.programs.replay import check_replay


def test_a_fingerprint_gives_back_its_world_for_its_own_code_only() -> None:
    world = ProgramWorld(clock_ms=1_700_000_000_000, seed=42)
    value = fingerprint("return 1", world)
    assert open_fingerprint("return 1", value, "input[0].fingerprint") == world
    for code, given in (("return 2", value), ("return 1", value[:-1] + "0"), ("return 1", "pf1.x.y"),
                        ("return 1", None), ("return 1", value.replace("pf1.", "pf2."))):
        with pytest.raises(APIError) as refused:
            open_fingerprint(code, given, "input[0].fingerprint")
        assert refused.value.status == 400 and refused.value.param == "input[0].fingerprint"


def test_a_replay_must_make_the_recorded_calls_in_order() -> None:
    made = [ToolCall("a", '{"x": 1, "y": 2}'), ToolCall("b", "{}")]
    check_replay(made, [ToolCall("a", '{"y":2,"x":1}')], "prog_1")  # the same JSON, spelled otherwise
    check_replay(made, made, "prog_1")
    for recorded in ([ToolCall("b", "{}")], [ToolCall("a", '{"x": 2, "y": 2}')], [*made, ToolCall("c", "{}")]):
        with pytest.raises(APIError) as refused:
            check_replay(made, recorded, "prog_1")
        assert refused.value.status == 400 and "prog_1" in refused.value.message
