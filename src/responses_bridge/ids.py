"""Object ids in the shapes clients expect (``resp_…``, ``msg_…``, ``fc_…``): the prefix, then 32 hex digits.

The digits are the creation time in milliseconds (12) and 80 bits from the OS random source (20). The random part
keeps replicas sharing one store from colliding (2^80 ids a millisecond); the time part puts each new id at the end
of every index it enters — the responses' primary key, the items' ``item_id`` index (an ``item_reference`` to any
stored item), the conversations' — so a save touches the B-trees' last pages instead of one random page each.
Measured on a SQLite store of 30,000 responses, a stored plain response (two items) costs ×0.65 of its CPU with
random ids, below what it cost before the ``item_id`` index existed. (OpenAI's own ids begin with their time too.)
"""

from __future__ import annotations

import os
import time


def new_id(prefix: str) -> str:
    return f"{prefix}_{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


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
