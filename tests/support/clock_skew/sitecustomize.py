"""A process whose wall clock is wrong: ``RESPONSES_BRIDGE_TEST_CLOCK_SKEW`` seconds (may be negative) added to
``time.time``, ``time.time_ns`` and ``datetime.datetime.now`` / ``utcnow`` / ``today``, as a replica on a host whose
clock drifted (or was set wrong) sees the time. ``time.monotonic`` is left alone: a wrong wall clock does not change
how fast time passes, and the event loop's timers keep their pace.

Put this directory first on a process's ``PYTHONPATH`` (tests/support/clock_skew.py's :func:`skewed_env`): Python
imports ``sitecustomize`` at start, before any of the bridge's modules, so every module that reads the time gets the
moved one. A ``PYTHON*`` variable in its environment also keeps the process from being forked from the tests' zygote
(tests/support/zygote.py), whose clock is the right one.
"""

from __future__ import annotations

import datetime as _datetime
import os
import time as _time

_SKEW = float(os.environ.get("RESPONSES_BRIDGE_TEST_CLOCK_SKEW") or 0)

if _SKEW:
    _real_time = _time.time
    _real_time_ns = _time.time_ns
    _skew_ns = int(_SKEW * 1_000_000_000)

    def _skewed_time() -> float:
        return _real_time() + _SKEW

    def _skewed_time_ns() -> int:
        return _real_time_ns() + _skew_ns

    _time.time = _skewed_time
    _time.time_ns = _skewed_time_ns

    _real_datetime = _datetime.datetime
    _delta = _datetime.timedelta(seconds=_SKEW)

    class _SkewedDatetime(_real_datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def,override]
            return _real_datetime.now(tz) + _delta

        @classmethod
        def utcnow(cls):  # type: ignore[no-untyped-def,override]
            return _real_datetime.now(_datetime.UTC).replace(tzinfo=None) + _delta

        @classmethod
        def today(cls):  # type: ignore[no-untyped-def,override]
            return cls.now()

    _datetime.datetime = _SkewedDatetime  # type: ignore[misc]
