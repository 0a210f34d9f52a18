"""An ``openai_hosted`` environment's packages on the ``agent-sandbox`` backend (the stack of
test_agent_sandbox_egress.py: the fake Kubernetes API, stand-in pods reaching the bridge's egress door, a real
Envoy): the install runs in a claimed pod through the door to the local indexes of test_agents_packages.py, and a
later call's pod gets the kept tree at ``/mnt/packages``, where ``PYTHONPATH``, ``NODE_PATH`` and ``PATH`` find it
— the scripts executable and npm's ``.bin`` links there, though the pod's file API carries neither modes nor
links."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from responses_bridge.envoy_config import render_bootstrap
from tests.integration.test_agent_sandbox_e2e import pytestmark as pods_marks
from tests.integration.test_agents_api import BETA
from tests.integration.test_agents_packages import Indexes, commands, start
from tests.integration.test_agents_packages import indexes as local_indexes
from tests.support.agent_sandbox import fake_cluster
from tests.support.bridge import running_sidecar
from tests.support.envoy import free_port, start_envoy

pytestmark = pods_marks
indexes = local_indexes


@pytest.fixture(scope="module")
async def base_urls(fake_upstream: str, indexes: Indexes,
                    tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[list[str]]:
    listen_port, door_port = free_port(), free_port()
    data_dir = tmp_path_factory.mktemp("pod-packages")
    base = f"http://127.0.0.1:{indexes.port}"
    async with fake_cluster(network=True) as cluster, running_sidecar(
            str(data_dir), fake_upstream, "--upstream-via", f"http://127.0.0.1:{listen_port}/v1",
            log_file=data_dir / "sidecar.log", own_sqlite=True,
            env={**cluster.settings, "RESPONSES_BRIDGE_CODE_TIMEOUT": "60",
                 "RESPONSES_BRIDGE_AGENT_SANDBOX_PYTHON": "python3",
                 "RESPONSES_BRIDGE_AGENT_SANDBOX_EGRESS_LISTEN": f"127.0.0.1:{door_port}",
                 "RESPONSES_BRIDGE_CODE_EGRESS_ALLOWED_TARGETS": f"127.0.0.1:{indexes.port}",
                 "RESPONSES_BRIDGE_PACKAGE_INDEXES": f"python={base}/simple,npm={base}/npm"}) as sidecar:
        envoy = await start_envoy(render_bootstrap(
            listen_port=listen_port, extproc_port=sidecar.extproc_port,
            http_port=int(sidecar.http_url.rsplit(":", 1)[1]), upstream=fake_upstream, admin_port=0))
        try:
            yield [sidecar.http_url, f"http://127.0.0.1:{listen_port}"]
        finally:
            envoy.stop()


@pytest.mark.parametrize("door", [0, 1], ids=["http", "envoy"])
async def test_packages_installed_in_a_pod_serve_later_pods(base_urls: list[str], door: int,
                                                            indexes: Indexes) -> None:
    async with aiohttp.ClientSession(base_urls[door], timeout=aiohttp.ClientTimeout(total=180)) as http:
        seen = len(indexes.seen)
        events = await start(http, {"packages": {"python": ["tinypkg==1.0"], "npm": ["tinynode@1.0.0"]}},
                             "python3 -c 'import tinypkg; print(tinypkg.WORD)' && tinyword && "
                             "node -e 'console.log(require(\"tinynode\"))' && tinynodebin && ls -A /mnt/data | wc -l")
        kinds = [event["type"] for _, event in events]
        assert kinds[:3] == ["agent.session.created", "agent.session.environment.pending",
                             "agent.session.environment.ready"], events[2][1]["environment"]
        [command] = commands(events)
        assert command["exit_code"] == 0 and command["output"] == "tiny-42\ntiny-42\nnode-42\nbin-42\n0\n", command
        assert {"/simple/tinypkg/", "/npm/tinynode"} <= set(indexes.seen[seen:])
        async with http.delete(f"/v1/agents/sessions/{events[0][1]['session']['id']}", headers=BETA) as answer:
            assert answer.status == 200
