"""What binds a program's later runs to its first: the ``fingerprint`` of its ``program`` item
(engine/tools/programs.py) and the calls it made.

A program waiting for a client's tool is not kept anywhere: the next request starts it again (isolate.py) with the
outputs the client sent. That is only sound if it is the same program in the same world making the same calls: the
fingerprint must bind the item's code (else a 400 before anything runs), and the replayed run must make, in order,
the calls recorded as the program's ``function_call`` items (name and arguments), each answered by an output
matched by ``call_id``. Anything else (an output missing, a call the replay does not make) is a 400 naming the
program.
"""

from __future__ import annotations

import json

from ...protocol.errors import APIError, invalid_request
from .isolate import ToolCall


def check_replay(calls: list[ToolCall], recorded: list[ToolCall], program_call_id: str) -> None:
    """A 400 unless the replayed run made the ``recorded`` calls, in order (name and arguments)."""
    for index, expected in enumerate(recorded):
        made = calls[index] if index < len(calls) else None
        if made is None or made.name != expected.name or _canonical(made.arguments) != _canonical(expected.arguments):
            raise mismatch(program_call_id, f"its tool call {index + 1} ({expected.name}) is not what the program "
                                            "makes when run again")


def mismatch(program_call_id: str, why: str) -> APIError:
    return invalid_request(f"The program '{program_call_id[:100]}' cannot be resumed: {why}.", param="input",
                           code="program_replay_mismatch")


def _canonical(arguments: str) -> str:
    try:
        return json.dumps(json.loads(arguments), sort_keys=True, separators=(",", ":"))
    except ValueError:
        return arguments
