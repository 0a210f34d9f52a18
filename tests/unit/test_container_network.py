"""A container's network policy over both stores: made with the container, kept with each secret sealed (the row,
a retrieve and a list hold no secret's value), opened again for the calls that run in it, refused with a 400 where
the deployment allows none, and an ``auto`` container of a conversation reused only under the same policy."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.run.tools.code_interpreter import CodeToolOptions
from responses_bridge.sandbox import Sandbox, SandboxLimits
from responses_bridge.sealing import Sealer
from responses_bridge.services.containers.network import NetworkPolicies
from responses_bridge.services.tools.code_interpreter import CodeInterpreter
from tests.unit.store_kinds import KINDS
from tests.unit.test_containers_service import Clock, service_over

SECRET = "s3cret-never-in-a-row"
POLICY = {"type": "allowlist", "allowed_domains": ["API.example.com", "*.svc.example"],
          "domain_secrets": [{"domain": "api.example.com", "name": "API_KEY", "value": SECRET}]}


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def policies(enabled: bool = True) -> NetworkPolicies:
    return NetworkPolicies(Sealer(os.urandom(32)), enabled=enabled)


async def test_a_policy_is_kept_sealed_and_shown_without_secrets(kind: str, tmp_path: Path,
                                                                 request: pytest.FixtureRequest) -> None:
    async with service_over(kind, tmp_path, request, Clock(), network=policies()) as service:
        made = await service.create({"name": "c", "network_policy": POLICY}, tenant="a")
        assert made["network_policy"] == {"type": "allowlist",
                                          "allowed_domains": ["api.example.com", "*.svc.example"]}
        assert await service.retrieve(made["id"], tenant="a") == made
        listed = await service.list(tenant="a", after=None, limit=10, order="asc")
        assert SECRET not in str(listed) and SECRET not in str(made)
        row = await service.live(made["id"], tenant="a")
        assert row is not None and row.network_policy is not None and SECRET not in row.network_policy
        opened = service.network.opened(row)
        assert opened is not None and [(s.domain, s.name, s.value) for s in opened.secrets] == [
            ("api.example.com", "API_KEY", SECRET)]
        plain = await service.create({"name": "d"}, tenant="a")
        assert plain["network_policy"] == {"type": "disabled"}
        row = await service.live(plain["id"], tenant="a")
        assert row is not None and service.network.opened(row) is None
        assert await service.live(made["id"], tenant="b") is None  # another tenant's, as ever


async def test_a_deployment_without_allowlists_refuses_them_and_takes_disabled(kind: str, tmp_path: Path,
                                                                              request: pytest.FixtureRequest) -> None:
    async with service_over(kind, tmp_path, request, Clock(), network=policies(enabled=False)) as service:
        with pytest.raises(APIError) as refused:
            await service.create({"name": "c", "network_policy": POLICY}, tenant="a")
        assert refused.value.status == 400 and refused.value.param == "network_policy"
        assert refused.value.code == "network_policy_not_allowed"
        made = await service.create({"name": "c", "network_policy": {"type": "disabled"}}, tenant="a")
        assert made["network_policy"] == {"type": "disabled"}
        listed = await service.list(tenant="a", after=None, limit=10, order="asc")
        assert len(listed["data"]) == 1  # the refused one was never made
        interpreter = CodeInterpreter(service, Sandbox(SandboxLimits(), None, unavailable=None))
        options = CodeToolOptions.from_tool({"type": "code_interpreter",
                                             "container": {"type": "auto", "network_policy": POLICY}}, 2)
        with pytest.raises(APIError) as refused:
            await interpreter.check(options, tenant="a")
        assert refused.value.param == "tools[2].container.network_policy"


async def test_another_deployments_key_cannot_open_a_policy(kind: str, tmp_path: Path,
                                                            request: pytest.FixtureRequest) -> None:
    async with service_over(kind, tmp_path, request, Clock(), network=policies()) as service:
        made = await service.create({"name": "c", "network_policy": POLICY}, tenant="a")
        row = await service.live(made["id"], tenant="a")
        assert row is not None
        with pytest.raises(APIError):
            policies().opened(row)


async def test_an_auto_container_is_reused_only_under_the_same_policy(kind: str, tmp_path: Path,
                                                                      request: pytest.FixtureRequest) -> None:
    async with service_over(kind, tmp_path, request, Clock(), network=policies()) as service:
        interpreter = CodeInterpreter(service, Sandbox(SandboxLimits(), None, unavailable=None))

        def options(policy: object) -> CodeToolOptions:
            return CodeToolOptions.from_tool({"type": "code_interpreter", "container": {
                "type": "auto", **({"network_policy": policy} if policy is not None else {})}}, 0)

        first = await interpreter.container_for(options(POLICY), [], tenant="a")
        history = [{"type": "code_interpreter_call", "container_id": first}]
        assert await interpreter.container_for(options(POLICY), history, tenant="a") == first
        other = {**POLICY, "domain_secrets": [{**POLICY["domain_secrets"][0], "value": "another"}]}  # type: ignore[dict-item]
        assert await interpreter.container_for(options(other), history, tenant="a") != first
        assert await interpreter.container_for(options(None), history, tenant="a") != first
