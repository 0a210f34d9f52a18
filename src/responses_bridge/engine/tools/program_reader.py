"""A call of ``program`` as it streams: the ``program`` item (programs.py), done with its arguments."""

from __future__ import annotations

from typing import Any

from .client import Event, parse_arguments
from .programs import ProgramSigner, ProgramWorld, fingerprint, program_item
from .server import ServerCallReader


def program_code(arguments: str) -> str:
    """The program's source from the call's arguments; a model that sent a bare string sent the code itself."""
    parsed = parse_arguments(arguments)
    if isinstance(parsed, dict) and isinstance(parsed.get("code"), str):
        return str(parsed["code"])
    if isinstance(parsed, str):
        return parsed
    return arguments if parsed is None else ""


class ProgramReader(ServerCallReader):
    """A call of ``program``: the ``program`` item is done with its arguments (the SDK has no events of its own for
    it); the run adds what the program came to."""

    __slots__ = ("sign",)

    def __init__(self, item: dict[str, Any], output_index: int, sign: ProgramSigner | None) -> None:
        super().__init__(item, output_index)
        self.sign = sign

    def close(self, arguments: str, status: str) -> list[Event]:
        code = program_code(arguments)
        self.item["code"] = code
        # without a signer (an engine used alone: the run's programs set the tenant's) no fingerprint is made: such
        # a program is never resumed
        self.item["fingerprint"] = (fingerprint(code, ProgramWorld.new(), self.sign, self.item["call_id"])
                                    if self.sign is not None else "")
        return []


def program_reader(call_id: str, output_index: int, sign: ProgramSigner | None = None) -> ProgramReader:
    return ProgramReader(program_item(call_id), output_index, sign)
