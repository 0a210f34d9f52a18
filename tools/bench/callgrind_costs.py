"""Where two callgrind dumps differ (``scripts/bench instructions --keep``): self costs summed by function and by
object file (a whole library's share — the interpreter's, libsqlite3's, orjson's), per request.

``callgrind_annotate`` attributes every instruction of these dumps to ``_PyEval_Vector`` (a dump taken mid-run of an
interpreter whose frames it cannot follow), so the costs are read here from the format itself: a cost line after
``fn=`` is that function's own; the one line after ``calls=`` is the inclusive cost of the call it names, left out.
"""

from __future__ import annotations

import collections
from pathlib import Path


def self_costs(dump: Path) -> tuple[collections.Counter[str], collections.Counter[str]]:
    """``(by function, by object file)``: the instructions each spent itself in ``dump``."""
    by_function: collections.Counter[str] = collections.Counter()
    by_object: collections.Counter[str] = collections.Counter()
    current_object, function, function_object, after_call = "", "", "", False
    with dump.open(errors="replace") as lines:
        for line in lines:
            if line.startswith("ob="):
                current_object = line[3:].strip()
            elif line.startswith("fn="):
                function, function_object, after_call = line[3:].strip(), current_object, False
            elif line.startswith("calls="):
                after_call = True
            elif line[:1].isdigit() or line[:1] in "+-*":
                fields = line.split()
                if len(fields) < 2 or not fields[1].isdigit():
                    continue
                if after_call:
                    after_call = False
                else:
                    by_function[function] += int(fields[1])
                    by_object[function_object.rsplit("/", 1)[-1]] += int(fields[1])
    return by_function, by_object


def differences(a: Path, b: Path, requests: int, top: int = 12) -> list[str]:
    """Lines naming the object files and then the functions whose self cost per request differs most, A less B."""
    (a_functions, a_objects), (b_functions, b_objects) = self_costs(a), self_costs(b)
    lines = []
    for title, a_costs, b_costs in (("object file", a_objects, b_objects), ("function", a_functions, b_functions)):
        names = sorted(set(a_costs) | set(b_costs), key=lambda name: abs(a_costs[name] - b_costs[name]), reverse=True)
        lines.append(f"    {'A - B':>9} {'A':>10} {'B':>10}   by {title}, per request")
        for name in names[:top]:
            a_cost, b_cost = a_costs[name] / requests, b_costs[name] / requests
            if a_cost != b_cost:
                lines.append(f"    {a_cost - b_cost:>9.0f} {a_cost:>10.0f} {b_cost:>10.0f}   {name}")
    return lines
