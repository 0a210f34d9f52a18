"""Options and fixtures every suite shares: which store the store and integration suites run on (``--store``),
and the session's PostgreSQL server (tests/support/postgres.py), stopped when the session ends."""

from __future__ import annotations

import os

import pytest

from tests.support.postgres import STORE_ENV, postgres_server, postgres_url, stop_shared_server

__all__ = ["postgres_server", "postgres_url"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--store", choices=("sqlite", "postgres"), default=None,
                     help=f"the store the store and integration tests run on (default: ${STORE_ENV} or sqlite)")


def pytest_configure(config: pytest.Config) -> None:
    chosen = config.getoption("--store")
    if chosen:  # sidecars started by the tests read it (tests/support/bridge.py)
        os.environ[STORE_ENV] = chosen


def pytest_sessionfinish(session: pytest.Session) -> None:
    stop_shared_server()
