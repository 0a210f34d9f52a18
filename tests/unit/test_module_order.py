"""The order modules are handed to the test workers (tests/conftest.py): the ``runs_first`` ones before the rest,
the rest longest first (by the seconds measured, else estimated from the number of tests), each module's tests in
their own order."""

from __future__ import annotations

from dataclasses import dataclass

from tests.conftest import RUNS_FIRST, _order_modules


@dataclass
class Item:
    nodeid: str
    first: bool = False

    def get_closest_marker(self, name: str) -> object | None:
        return object() if self.first and name == RUNS_FIRST else None


def test_the_marked_modules_go_first_then_the_largest() -> None:
    items = [Item("a.py::one"), Item("b.py::one"), Item("b.py::two"), Item("vm.py::boot", first=True),
             Item("c.py::one"), Item("b.py::three"), Item("vm.py::shapes", first=True)]
    _order_modules(items, "a store no table has")  # type: ignore[arg-type]
    assert [item.nodeid for item in items] == ["vm.py::boot", "vm.py::shapes", "b.py::one", "b.py::two",
                                               "b.py::three", "a.py::one", "c.py::one"]
