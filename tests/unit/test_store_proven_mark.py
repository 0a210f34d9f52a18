"""The ``store_proven`` mark's check (tests/conftest.py): the modules it names must exist and run on PostgreSQL, so
a module can leave the PostgreSQL pass only for modules that stay there (or open PostgreSQL in the sqlite pass)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import _check_proof


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "tests" / "integration").mkdir(parents=True)
    (tmp_path / "tests" / "unit").mkdir()
    files = {
        "tests/integration/test_runs_there.py": "async def test_one(client): ...\n",
        "tests/integration/test_free.py": "pytestmark = pytest.mark.store_free\n",
        "tests/integration/test_proven.py": 'pytestmark = pytest.mark.store_proven("x", reason="y")\n',
        "tests/integration/test_replicas.py": "pytestmark = pytest.mark.store_free\n"
                                              "async def test_one(postgres_url): ...\n",
        "tests/unit/test_contract.py": "async def test_one(postgres_url): ...\n",
        "tests/unit/test_sqlite_only.py": "def test_one(tmp_path): ...\n",
        "tests/support/helpers.py": "from tests.support.postgres import postgres_url\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


@pytest.mark.parametrize("named", ["tests/integration/test_runs_there.py", "tests/unit/test_contract.py",
                                   "tests/integration/test_replicas.py"])  # store_free, on PostgreSQL by itself
def test_a_module_that_runs_on_postgres_may_be_named(root: Path, named: str) -> None:
    _check_proof(root, "tests/integration/test_marked.py", named)


@pytest.mark.parametrize(("named", "said"), [
    ("tests/integration/test_free.py", "leaves it out"),  # not on PostgreSQL in the pass
    ("tests/integration/test_proven.py", "leaves it out"),  # itself proven elsewhere: no chain of marks
    ("tests/unit/test_sqlite_only.py", "does not open PostgreSQL"),
    ("tests/integration/test_gone.py", "not another test module"),
    ("tests/support/helpers.py", "not another test module"),
    ("tests/integration/test_marked.py", "not another test module"),  # itself
])
def test_a_module_that_does_not_run_on_postgres_may_not(root: Path, named: str, said: str) -> None:
    with pytest.raises(pytest.UsageError, match=said):
        _check_proof(root, "tests/integration/test_marked.py", named)
