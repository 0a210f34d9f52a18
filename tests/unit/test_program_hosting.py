"""Where programs run is made by the first program that runs (run/server_tool_services.py's ``ProgramHosting``):
until then a process holds none of run/programs/ (tests/unit/test_idle_imports.py holds a started sidecar to it).
Made once however many programs come first at the same time, with the bounds and the signer the settings give; and
what the start says of programs (no room for their memory bound in the budget) is still said at start, without
importing them."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap

from responses_bridge.run.programs.host import ProgramBounds
from responses_bridge.run.server_tool_services import ProgramHosting


def _sign(message: bytes) -> str:
    return message.hex()[:16]


async def test_the_host_is_made_once_by_the_first_programs() -> None:
    hosting = ProgramHosting(_sign, 2, 9.0, 64 << 20, 3.0, share=lambda tenant: 1)
    hosting.close()  # nothing made yet: nothing to close
    first = await asyncio.gather(*(hosting.host() for _ in range(4)))
    host = first[0]
    assert all(made is host for made in first) and await hosting.host() is host
    assert host.bounds == ProgramBounds(2, 9.0, 64 << 20, lower_after=3.0)
    assert host.sign is _sign and host.share is hosting.share and host.slots.total == 2
    hosting.close()
    assert host.pool._closed.is_set()  # the pool's own flag: its workers are stopped and none start again


START = textwrap.dedent("""
    import json, sys
    import structlog
    from responses_bridge.config.settings import Settings
    from responses_bridge.runtime import program_host
    from responses_bridge.sealing import Sealer
    from responses_bridge.services.tenancy.memory_budget import MemoryBudget

    settings = Settings(upstream="http://127.0.0.1:9/v1", db=":memory:", memory_budget_bytes=BUDGET, program_slots=3,
                        program_slot_wait=7.0)
    memory = MemoryBudget(settings.memory_budget(), settings.memory_budget_share)
    with structlog.testing.capture_logs() as logs:
        hosting = program_host(settings, memory, Sealer(bytes(32)))
    loaded = sorted(name for name in sys.modules if name.startswith("responses_bridge.run.programs"))
    import asyncio
    host = asyncio.run(hosting.host())
    print(json.dumps({"logs": [log["event"] for log in logs], "loaded": loaded,
                      "bounds": [host.bounds.slots, host.bounds.slot_wait, host.bounds.memory_bytes],
                      "share": host.share("tenant") if host.share else None, "holds": host.hold is not None,
                      "same_sign": host.sign is hosting.sign}))
    host.close()
""")


def _start(budget: int) -> dict[str, object]:
    """What a fresh process's start of programs logs and imports, and the host its first program makes."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RESPONSES_BRIDGE_")}
    done = subprocess.run([sys.executable, "-c", f"BUDGET = {budget}\n{START}"], capture_output=True, text=True,
                          env=env, timeout=120, check=True)
    answer: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def test_the_start_says_programs_have_no_room_without_importing_them() -> None:
    """A budget below the programs' floor (64 MiB at the default share leaves a tenant 32): said at start, as
    before, with none of run/programs/ imported; the host the first program makes has the settings' bounds."""
    small = _start(64 << 20)
    assert small["logs"] == ["programs_without_memory"]
    assert small["loaded"] == []
    assert small["bounds"] == [3, 7.0, 64 << 20] and small["same_sign"] is True
    assert small["share"] == 3 and small["holds"] is True  # no tenants (auth: none): every slot is the one's
    roomy = _start(4 << 30)
    assert roomy["logs"] == [] and roomy["loaded"] == []
    assert roomy["bounds"] == [3, 7.0, 256 << 20]
