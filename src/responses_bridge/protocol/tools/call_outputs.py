"""A ``function_call_output`` sent without ``call_id`` (optional since the SDK's 3.5) paired with the call it answers.

OpenAI matches such an output to the function calls still waiting for theirs, in the order they were made: the
first open ``function_call`` (in the history, then the input before the output) whose ``name`` (and
``namespace``) the output names, or the first open one at all when it names none. The pairing writes that call's
``call_id`` onto the output, so what is stored, listed and sent upstream is an ordinary answered call; an output
that matches no open call is a 400 naming its ``call_id``, as an output for an unknown call already is
(protocol/request_checks.py's ``check_call_outputs``).
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

from ..errors import invalid_request


def pair_call_outputs(history: list[dict[str, Any]], items: list[dict[str, Any]]) -> None:
    """Give every ``function_call_output`` of ``items`` without a ``call_id`` the one of the call it answers
    (in ``items``: the output replaced by a copy with its ``call_id``, never changed in place — an item may be the
    same dict as an earlier one or the history's, named by an ``item_reference``:
    protocol/responses/item_references.py). Linear in the items: each call is queued under its name, its name and
    namespace, and in one queue of all, and an answered call is dropped from a queue's head when reached."""
    if not unpaired(items):
        return
    queues: dict[tuple[object, ...], deque[str]] = defaultdict(deque)
    answered: set[str] = set()
    for item in history:
        _note(item, queues, answered)
    for index, item in enumerate(items):
        if item.get("type") == "function_call_output" and "call_id" not in item:
            name, namespace = item.get("name"), item.get("namespace")
            key: tuple[object, ...] = () if name is None else (name,) if namespace is None else (name, namespace)
            call_id = _first_open(queues.get(key), answered)
            if call_id is None:
                named = f" of '{str(name)[:100]}'" if name is not None else ""
                raise invalid_request(f"No open function call{named} for the function call output at "
                                      f"'input[{index}]': send its 'call_id'.", param=f"input[{index}].call_id",
                                      code="missing_required_parameter")
            item = items[index] = {**item, "call_id": call_id}  # a copy: the item may be shared (a reference's)
        _note(item, queues, answered)


def unpaired(items: list[dict[str, Any]]) -> bool:
    """Is there an output without ``call_id`` among ``items``?"""
    return any(item.get("type") == "function_call_output" and "call_id" not in item for item in items)


def _note(item: dict[str, Any], queues: dict[tuple[object, ...], deque[str]], answered: set[str]) -> None:
    kind = item.get("type")
    call_id = item.get("call_id")
    if not isinstance(call_id, str):
        return
    if kind == "function_call":
        name = item.get("name")
        queues[()].append(call_id)
        queues[(name,)].append(call_id)
        queues[(name, item.get("namespace"))].append(call_id)
    elif kind == "function_call_output":
        answered.add(call_id)


def _first_open(queue: deque[str] | None, answered: set[str]) -> str | None:
    while queue:
        if queue[0] not in answered:
            return queue[0]
        queue.popleft()
    return None
