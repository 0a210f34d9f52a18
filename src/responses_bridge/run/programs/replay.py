"""What binds a program's later runs to its first: the ``fingerprint`` of its ``program`` item and the calls it made.

A program waiting for a client's tool is not kept anywhere: the next request starts it again (isolate.py) with the
outputs the client sent. That is only sound if it is the same program in the same world, making the same calls:

* the ``fingerprint`` (opaque to the client, round-tripped on the ``program`` item) carries the clock and seed the
  program saw, and a digest of them with its code; a ``program`` item whose code or fingerprint was changed is a
  400, before anything runs;
* the replayed run must make, in order, the calls recorded as the program's ``function_call`` items (name and
  arguments); outputs for them must all be there, each matched by ``call_id``. Anything else (an output missing,
  a call the replay does not make) is a 400 naming the program.
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import dataclass

from ...protocol.errors import APIError, invalid_request
from .isolate import ToolCall

PREFIX = "pf1."


@dataclass(frozen=True, slots=True)
class ProgramWorld:
    """What a program sees besides its code and tool outputs: its clock (ms since the epoch) and random seed."""

    clock_ms: int
    seed: int


def fingerprint(code: str, world: ProgramWorld) -> str:
    payload = base64.urlsafe_b64encode(json.dumps([world.clock_ms, world.seed]).encode()).decode().rstrip("=")
    return f"{PREFIX}{payload}.{_digest(code, world)}"


def open_fingerprint(code: str, value: object, param: str) -> ProgramWorld:
    """The world a ``program`` item's fingerprint recorded; a 400 naming ``param`` if it does not bind ``code``."""
    if isinstance(value, str) and value.startswith(PREFIX) and value.count(".") == 2:
        payload, digest = value[len(PREFIX):].split(".")
        try:
            clock_ms, seed = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            world = ProgramWorld(int(clock_ms), int(seed))
        except (ValueError, TypeError):
            world = None
        if world is not None and digest == _digest(code, world):
            return world
    raise invalid_request(f"Invalid '{param}': the program's fingerprint does not match its code (send the "
                          "program item back as it was returned).", param=param, code="invalid_program_fingerprint")


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


def _digest(code: str, world: ProgramWorld) -> str:
    material = json.dumps([code, world.clock_ms, world.seed]).encode()
    return hashlib.sha256(b"responses-bridge program\0" + material).hexdigest()[:32]
