"""The order the suite's modules are handed out in: measured seconds, estimates for modules not measured."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support import module_times


def test_a_module_not_measured_is_given_its_tests_times_the_measured_seconds_per_test() -> None:
    measured = {"tests/a.py": 30.0, "tests/b.py": 10.0}
    sizes = {"tests/a.py": 2, "tests/b.py": 8, "tests/new.py": 5}
    assert module_times.estimates(measured, sizes) == {"tests/a.py": 30.0, "tests/b.py": 10.0, "tests/new.py": 20.0}
    assert module_times.estimates({}, {"tests/a.py": 3}) == {"tests/a.py": 3.0}


def test_the_table_is_read_per_store_the_sqlite_pass_where_the_store_has_none(tmp_path: Path) -> None:
    table = tmp_path / "times.json"
    table.write_text(json.dumps({"sqlite": {"tests/a.py": 1.0, "tests/b.py": 2.0}, "postgres": {"tests/b.py": 5.0}}))
    assert module_times.load("postgres", table) == {"tests/a.py": 1.0, "tests/b.py": 5.0}
    assert module_times.load("sqlite", table) == {"tests/a.py": 1.0, "tests/b.py": 2.0}
    assert module_times.load("sqlite", tmp_path / "none.json") == {}


def test_a_junit_report_is_summed_per_module_classes_folded_into_their_module(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text("""<testsuites><testsuite>
        <testcase classname="tests.integration.test_x" name="test_one" time="1.25"/>
        <testcase classname="tests.integration.test_x.TestGroup" name="test_two" time="2.5"/>
        <testcase classname="tests.unit.test_y" name="test_three" time="0.5"/>
    </testsuite></testsuites>""")
    assert module_times.from_junit([report]) == {"tests/integration/test_x.py": 3.8, "tests/unit/test_y.py": 0.5}


def test_every_module_the_table_names_exists() -> None:
    """A module renamed or removed leaves the table: re-run scripts/module-times."""
    stores = json.loads(module_times.TABLE.read_text())
    root = module_times.TABLE.parent.parent
    missing = [module for times in stores.values() for module in times if not (root / module).exists()]
    assert not missing, f"tests/module_times.json names modules that are gone (run scripts/module-times): {missing}"
