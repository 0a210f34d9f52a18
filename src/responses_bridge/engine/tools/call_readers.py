"""Which reader streams a tool call the model makes, by its target's kind: the one place that knows every kind's
reader module (client tools, the bridge's own tools, ``program``, the multi-agent beta's actions), so that none of
those modules needs to know another's."""

from __future__ import annotations

from .client import CallReader, reader_for
from .multi_agent import call_reader as multi_agent_reader
from .programs import ProgramSigner
from .server import server_reader_for
from .tools import CallTarget


def call_reader_for(target: CallTarget, call_id: str, output_index: int,
                    program_sign: ProgramSigner | None = None) -> CallReader:
    """The reader of a call of ``target`` (not a plain function's: that call is a ``function_call`` item);
    ``program_sign``: what keys a program's fingerprint (programs.py)."""
    if target.kind == "program":
        from .program_reader import program_reader  # programs' only: loaded by the first call of one

        return program_reader(call_id, output_index, program_sign)
    if target.kind == "multi_agent":
        return multi_agent_reader(target.name or "", call_id, output_index)
    if target.server:
        return server_reader_for(target, call_id, output_index)
    return reader_for(target, call_id, output_index)
