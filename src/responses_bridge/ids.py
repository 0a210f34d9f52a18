"""Object ids in the shapes clients expect (``resp_…``, ``msg_…``, ``fc_…``).

Ids come from the OS random source so that several replicas sharing one store never collide.
"""

from __future__ import annotations

import os


def new_id(prefix: str) -> str:
    return f"{prefix}_{os.urandom(16).hex()}"


def response_id() -> str:
    return new_id("resp")


def message_id() -> str:
    return new_id("msg")


def function_call_id() -> str:
    return new_id("fc")


def function_call_output_id() -> str:
    return new_id("fco")


def reasoning_id() -> str:
    return new_id("rs")


def call_id() -> str:
    return new_id("call")
