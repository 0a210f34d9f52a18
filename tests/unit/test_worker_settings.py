"""``serve --workers``: how many workers a value means, where each worker's ext_proc door listens, and what Envoy's
processor cluster lists for them."""

from __future__ import annotations

from pathlib import Path

import pytest

from responses_bridge.config.settings import Settings
from responses_bridge.envoy_config import bootstrap_dict
from responses_bridge.process import workers
from responses_bridge.process.workers import WorkerSlot, worker_count
from responses_bridge.serve import extproc_listen, workers_problem


def test_a_count_is_a_positive_number_or_auto() -> None:
    assert worker_count("3") == 3
    assert worker_count(" AUTO ") == workers.usable_cpus() >= 1
    for wrong in ("0", "-1", "two", ""):
        with pytest.raises(ValueError, match="workers must be"):
            worker_count(wrong)


def test_auto_follows_the_cgroup_cpu_quota(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers.os, "sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setattr(workers, "_cgroup_cpu_quota", lambda: 1.5)  # a limit of 1500m on a 64-core node
    assert workers.usable_cpus() == 2
    monkeypatch.setattr(workers, "_cgroup_cpu_quota", lambda: None)
    assert workers.usable_cpus() == 64


def test_the_settings_refuse_a_bad_count_in_one_message() -> None:
    with pytest.raises(ValueError, match="workers must be a whole number or 'auto'"):
        Settings(workers="many")
    assert Settings(workers="2").worker_count() == 2


def test_each_worker_has_its_own_extproc_address_and_the_bootstrap_lists_them_all() -> None:
    settings = Settings(extproc_port=50051, workers="3")
    assert [extproc_listen(settings, WorkerSlot(i, 3))[1:] for i in range(3)] == [
        (50051, None), (50052, None), (50053, None)]
    on_socket = Settings(extproc_uds="/run/rb.sock", workers="2")
    assert [extproc_listen(on_socket, WorkerSlot(i, 2))[2] for i in range(2)] == ["/run/rb.sock", "/run/rb.sock.1"]
    assert extproc_listen(on_socket, None)[2] == "/run/rb.sock"

    def endpoints(**options: object) -> list[dict]:
        clusters = bootstrap_dict(listen_port=10000, extproc_port=50051, http_port=8080,
                                  upstream="http://127.0.0.1:8090/v1", **options)["static_resources"]["clusters"]
        cluster = next(c for c in clusters if c["name"] == "responses_bridge_extproc")
        return [e["endpoint"]["address"] for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]]

    assert endpoints() == [{"socket_address": {"address": "127.0.0.1", "port_value": 50051}}]
    assert [e["socket_address"]["port_value"] for e in endpoints(workers=3)] == [50051, 50052, 50053]
    assert endpoints(extproc_uds="/run/rb.sock", workers=2) == [{"pipe": {"path": "/run/rb.sock"}},
                                                                 {"pipe": {"path": "/run/rb.sock.1"}}]


def test_workers_need_a_database_they_can_share(tmp_path: Path) -> None:
    assert workers_problem(Settings(db=":memory:", workers="2")) is not None
    assert workers_problem(Settings(db=str(tmp_path / "x.db"), workers="2")) is None


def test_the_code_interpreters_sandboxes_are_shared_out_between_workers() -> None:
    assert Settings(code_concurrency=4, workers="2").sandbox_limits().slots == 2
    assert Settings(code_concurrency=1, workers="2").sandbox_limits().slots == 1  # at least one each
    assert Settings(code_concurrency=4).sandbox_limits().slots == 4
