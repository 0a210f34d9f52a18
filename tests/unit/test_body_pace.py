"""The pace a request body must arrive at (services/tenancy/body_pace.py): a grace, extended by what has arrived; the
bridge's own waits not counted; no bound when the timeout is 0. The doors' use of it:
tests/integration/test_memory_fairness.py."""

from __future__ import annotations

import math

from responses_bridge.services.tenancy.body_pace import BodyPace


def test_a_body_has_the_timeout_plus_one_second_per_min_rate_bytes_received() -> None:
    pace = BodyPace(30.0, 1000, now=100.0)
    assert pace.deadline(0) == 130.0 and pace.deadline(5000) == 135.0
    assert not pace.late(5000, 134.9) and pace.late(5000, 135.0)
    assert pace.late(1, 131.0)  # one byte earns a millisecond


def test_the_bridge_s_own_waits_stop_the_clock() -> None:
    pace = BodyPace(10.0, 0, now=0.0)
    pace.pause(5.0)
    assert pace.deadline(0) == math.inf  # not read meanwhile: never late
    pace.resume(25.0)
    assert pace.deadline(0) == 30.0 and pace.elapsed(25.0) == 5.0


def test_no_timeout_is_no_bound_and_the_408_names_both_settings() -> None:
    assert BodyPace(0.0, 1000, now=0.0).deadline(0) == math.inf
    error = BodyPace(2.0, 500, now=0.0).too_slow(1, 64 << 20, 3.0)
    assert (error.status, error.code, error.type) == (408, "request_timeout", "invalid_request_error")
    assert "RESPONSES_BRIDGE_REQUEST_BODY_TIMEOUT" in error.message
    assert "RESPONSES_BRIDGE_REQUEST_BODY_MIN_RATE" in error.message and "1 of 67108864 bytes" in error.message
