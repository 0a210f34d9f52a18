"""tools/bench/callgrind_costs.py: a function's own cost counted, the inclusive cost of the calls it makes not."""

from __future__ import annotations

from pathlib import Path

from tools.bench.callgrind_costs import differences, self_costs

DUMP = """# callgrind format
version: 1
events: Ir
summary: 1700

ob=/usr/lib/libsqlite3.so.0
fl=sqlite3.c
fn=sqlite3_step
10 100
cob=/usr/lib/libpython3.11.so
cfn=PyErr_Format
calls=2 5
20 {call}
+2 {own}

ob=/usr/lib/libpython3.11.so
fn=PyErr_Format
5 {callee}
"""


def _dump(path: Path, own: int, callee: int) -> Path:
    path.write_text(DUMP.format(call=callee, own=own, callee=callee))
    return path


def test_self_costs_leave_the_calls_out(tmp_path: Path) -> None:
    by_function, by_object = self_costs(_dump(tmp_path / "a.out", own=50, callee=400))
    assert by_function == {"sqlite3_step": 150, "PyErr_Format": 400}
    assert by_object == {"libsqlite3.so.0": 150, "libpython3.11.so": 400}


def test_differences_per_request_largest_first(tmp_path: Path) -> None:
    lines = differences(_dump(tmp_path / "a.out", own=50, callee=400), _dump(tmp_path / "b.out", own=10, callee=200),
                        requests=10)
    assert lines[1].split() == ["20", "40", "20", "libpython3.11.so"]
    assert lines[2].split() == ["4", "15", "11", "libsqlite3.so.0"]
    assert [line.split()[-1] for line in lines[4:]] == ["PyErr_Format", "sqlite3_step"]
