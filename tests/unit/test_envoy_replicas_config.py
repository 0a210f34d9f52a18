"""``envoy-config`` with replicas of an upstream: one cluster of every replica whose load balancer honours the
replica the sidecar names in ``x-gateway-destination-endpoint`` (envoy_config/replica_cluster.py), the routes and
timeouts as with one URL, and a single URL rendered exactly as before."""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for tests.support

from responses_bridge.config.upstreams import UpstreamSpec
from responses_bridge.envoy_config import UPSTREAM_CLUSTER, bootstrap_dict, render_bootstrap
from responses_bridge.envoy_config.command import render
from responses_bridge.envoy_config.names import DESTINATION_ENDPOINT_HEADER
from responses_bridge.envoy_config.targets import Placement
from tests.support.envoy import have_envoy, validate_config
from tests.support.kube import crd_errors, crd_schemas, have_kubectl
from tools import fast_yaml
from tools.docs.deploy_examples import DEMO, KUBERNETES

needs_envoy = pytest.mark.skipif(not have_envoy(), reason="no envoy binary")

REPLICAS = ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/v1", "http://10.0.0.3:8000/v1"]
OVERRIDE_HOST = "envoy.load_balancing_policies.override_host"


def _clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def _routes(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return {route["name"]: route for route in hcm["route_config"]["virtual_hosts"][0]["routes"]}


def _endpoints(cluster: dict[str, Any]) -> list[tuple[str, int]]:
    return [(e["endpoint"]["address"]["socket_address"]["address"], e["endpoint"]["address"]["socket_address"][
        "port_value"]) for group in cluster["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]


def _honours_the_pick(cluster: dict[str, Any]) -> None:
    [policy] = cluster["load_balancing_policy"]["policies"]
    config = policy["typed_extension_config"]
    assert config["name"] == OVERRIDE_HOST
    assert config["typed_config"]["override_host_sources"] == [  # the processor's pick, then the HTTP door's
        {"metadata": {"key": "responses_bridge.upstream", "path": [{"key": DESTINATION_ENDPOINT_HEADER}]}},
        {"header": DESTINATION_ENDPOINT_HEADER}]
    [fallback] = config["typed_config"]["fallback_policy"]["policies"]
    assert fallback["typed_extension_config"]["name"] == "envoy.load_balancing_policies.least_request"
    assert "lb_policy" not in cluster  # the policy above decides, alone


def test_several_urls_make_one_cluster_honouring_the_picked_replica() -> None:
    one = bootstrap_dict(**dict(DEMO, chat_store=False))
    several = bootstrap_dict(**dict(DEMO, chat_store=False, upstream_urls=REPLICAS))
    cluster = _clusters(several)[UPSTREAM_CLUSTER]
    assert cluster["type"] == "STATIC"
    assert _endpoints(cluster) == [("10.0.0.1", 8000), ("10.0.0.2", 8000), ("10.0.0.3", 8000)]
    _honours_the_pick(cluster)
    before = _clusters(one)[UPSTREAM_CLUSTER]
    for key in ("connect_timeout", "per_connection_buffer_limit_bytes", "typed_extension_protocol_options",
                "circuit_breakers"):
        assert cluster[key] == before[key], key
    assert "load_balancing_policy" not in before
    # every route as with one URL (cluster, rewrites, timeouts) but for what replicas add: a route to the cluster
    # retries once a call that reached no replica (on the next one the processor named), the processor of a route
    # that sees answers is told which replica answered, and the chat route is read by the processor (to pick by
    # the prompt's prefix) as it is for stored chats
    routes, routes_before = _routes(several), _routes(one)
    # the HTTP door's own chat calls (naming the upstream in its route header) on a copy of the chat route of their
    # own, just before it, whose answers name the replica that answered; a client's chat is not told
    own = routes.pop("chat_completions_own")
    assert list(routes_before).index("chat_completions") == list(_routes(several)).index("chat_completions_own")
    assert own["match"]["headers"][-1] == {"name": "x-responses-bridge-upstream", "string_match": {"exact": "default"}}
    assert own.pop("response_headers_to_add") == [{
        "header": {"key": "x-responses-bridge-replica", "value": "%UPSTREAM_HOST%"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    own["match"]["headers"].pop()
    assert {**own, "name": "chat_completions"} == routes["chat_completions"]
    assert "response_headers_to_add" not in routes["chat_completions"]
    assert list(routes) == list(routes_before)
    stored = _routes(bootstrap_dict(**DEMO))
    retried, told = set(), set()
    for name, route in routes.items():
        route, before = copy.deepcopy(route), copy.deepcopy(routes_before[name])
        if name == "chat_completions":
            before["typed_per_filter_config"] = copy.deepcopy(stored[name]["typed_per_filter_config"])
        action = route.get("route", {})
        if action.get("cluster") == UPSTREAM_CLUSTER:
            assert action.pop("retry_policy") == {
                "retry_on": "connect-failure,refused-stream,reset-before-request", "num_retries": 1}, name
            retried.add(name)
        else:
            assert "retry_policy" not in action, name
        overrides = route.get("typed_per_filter_config", {}).get("envoy.filters.http.ext_proc", {}).get(
            "config", {}).get("overrides", {})
        if "response_attributes" in overrides:
            assert overrides.pop("response_attributes") == ["upstream.address"]
            told.add(name)
        assert route == before, name
    assert {"responses", "responses_unversioned", "chat_completions", "models", "embeddings",
            "images_generations"} <= retried
    assert told == {"responses", "responses_unversioned", "chat_completions"}
    assert routes["responses"]["route"]["cluster"] == UPSTREAM_CLUSTER
    assert routes["responses"]["route"]["timeout"] == "0s"


def test_one_url_renders_exactly_as_before() -> None:
    assert render_bootstrap(**dict(DEMO, upstream_urls=[DEMO["upstream"]])) == render_bootstrap(**DEMO)
    alone = UpstreamSpec(name="local", url="http://127.0.0.1:8000/v1")
    listed = UpstreamSpec(name="local", urls=["http://127.0.0.1:8000/v1"])
    assert render_bootstrap(**dict(DEMO, upstreams=[listed])) == render_bootstrap(**dict(DEMO, upstreams=[alone]))
    assert "load_balancing_policy" not in render_bootstrap(**DEMO)


def test_the_door_is_told_which_replica_answered_its_own_calls_with_several_upstreams() -> None:
    """Several upstreams: the HTTP door's own calls take the internal listener, whose route to a replicated
    upstream's cluster names the replica that answered in the answer; the client-facing listener gets no own route,
    and a route to an upstream with one server stays as it was."""
    config = bootstrap_dict(**dict(DEMO, upstreams=[UpstreamSpec(name="pool", urls=REPLICAS[:2]),
                                                    UpstreamSpec(name="one", url=REPLICAS[2])]))
    listeners = config["static_resources"]["listeners"]
    assert "chat_completions_own" not in _routes(config)
    internal = listeners[1]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
    routes = {route["name"]: route for route in internal["virtual_hosts"][0]["routes"]}
    assert routes["pool_via_sidecar"]["response_headers_to_add"] == [{
        "header": {"key": "x-responses-bridge-replica", "value": "%UPSTREAM_HOST%"},
        "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    assert "response_headers_to_add" not in routes["one_via_sidecar"]
    assert "retry_policy" not in routes["one_via_sidecar"]["route"]


def test_named_replicas_and_a_headless_service_are_resolved_by_envoy() -> None:
    named = _clusters(bootstrap_dict(**dict(DEMO, upstream_urls=[
        "http://vllm-0.vllm:8000/v1", "http://vllm-1.vllm:8000/v1"])))[UPSTREAM_CLUSTER]
    assert named["type"] == "STRICT_DNS"
    assert _endpoints(named) == [("vllm-0.vllm", 8000), ("vllm-1.vllm", 8000)]
    _honours_the_pick(named)
    headless = UpstreamSpec(name="vllm", url="http://vllm.llm.svc.cluster.local:8000/v1", discover="dns",
                            dns_refresh_seconds=7)
    plain = UpstreamSpec(name="cloud", url="https://api.openai.com/v1")
    clusters = _clusters(bootstrap_dict(**dict(DEMO, upstreams=[headless, plain])))
    cluster = clusters["upstream_vllm"]
    assert cluster["type"] == "STRICT_DNS"  # every address of the name an endpoint
    assert cluster["dns_refresh_rate"] == "7s"  # re-resolved as often as the sidecar does it
    assert _endpoints(cluster) == [("vllm.llm.svc.cluster.local", 8000)]
    _honours_the_pick(cluster)
    assert "load_balancing_policy" not in clusters["upstream_cloud"]  # one server: as always


def test_https_replicas_check_each_certificate() -> None:
    cluster = _clusters(bootstrap_dict(**dict(DEMO, upstream_urls=[
        "https://10.0.0.1:8443/v1", "https://10.0.0.2:8443/v1"])))[UPSTREAM_CLUSTER]
    validation = cluster["transport_socket"]["typed_config"]["common_tls_context"]["validation_context"]
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "IP_ADDRESS", "matcher": {"exact": "10.0.0.1"}},
        {"san_type": "IP_ADDRESS", "matcher": {"exact": "10.0.0.2"}}]


@pytest.mark.parametrize("urls", [
    ["http://10.0.0.1:8000/v1", "http://10.0.0.2:8000/api/v1"],  # the routes rewrite to one path
    ["http://10.0.0.1:8000/v1", "https://10.0.0.2:8000/v1"],  # one cluster, one transport
    ["https://a.example.com/v1", "https://b.example.com/v1"],  # one cluster sends one SNI
])
def test_replicas_that_one_cluster_cannot_serve_are_refused(urls: list[str]) -> None:
    with pytest.raises(ValueError, match="replicas of one upstream"):
        bootstrap_dict(**dict(DEMO, upstream_urls=urls))


@needs_envoy
def test_envoy_accepts_the_replicas_clusters(tmp_path: Path) -> None:
    headless = UpstreamSpec(name="vllm", url="http://vllm.llm.svc.cluster.local:8000/v1", discover="dns")
    several = UpstreamSpec(name="pool", urls=REPLICAS[:2])
    renderings = {
        "urls": dict(DEMO, upstream_urls=REPLICAS),
        "named-tls": dict(DEMO, upstream_urls=["https://[::1]:8443/v1", "https://127.0.0.1:8443/v1"]),
        "upstreams": dict(DEMO, upstreams=[headless, several, UpstreamSpec(name="one", url=REPLICAS[2])]),
    }
    for name, options in renderings.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(render_bootstrap(**options))
        result = validate_config(path)
        assert result.returncode == 0, f"{name}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


PLACEMENT = Placement(namespace="llm")
NAMED = ["http://vllm-0.vllm.llm.svc.cluster.local:8000/v1", "http://vllm-1.vllm.llm.svc.cluster.local:8000/v1"]


def _platform(target: str, urls: list[str]) -> list[dict[str, Any]]:
    options = dict(KUBERNETES, upstream=urls[0], upstream_urls=urls)
    return [document for document in fast_yaml.load_all(render(target, options, PLACEMENT)) if document]


def test_envoy_gateway_balances_the_backends_replicas_on_the_picked_one() -> None:
    objects = _platform("envoy-gateway", NAMED)
    [backend] = [o for o in objects if o["kind"] == "Backend"]
    assert backend["spec"]["endpoints"] == [{"fqdn": {"hostname": "vllm-0.vllm.llm.svc.cluster.local", "port": 8000}},
                                            {"fqdn": {"hostname": "vllm-1.vllm.llm.svc.cluster.local", "port": 8000}}]
    [policy] = [o for o in objects if o["kind"] == "BackendTrafficPolicy"]
    assert policy["spec"]["loadBalancer"] == {"type": "LeastRequest", "endpointOverride": {
        "extractFrom": [{"header": DESTINATION_ENDPOINT_HEADER}]}}
    upstream_routes = {o["metadata"]["name"] for o in objects if o["kind"] == "HTTPRoute"
                       and o["spec"]["rules"][0]["backendRefs"][0].get("kind") == "Backend"}
    assert {ref["name"] for ref in policy["spec"]["targetRefs"]} == upstream_routes
    assert len(upstream_routes) == 3
    one = _platform("envoy-gateway", NAMED[:1])  # one URL: as before, no policy
    assert not [o for o in one if o["kind"] == "BackendTrafficPolicy"]
    if have_kubectl():
        assert crd_errors(backend) == []
        # BackendTrafficPolicy's CRD is not vendored; its ``loadBalancer`` is Envoy Gateway's one LoadBalancer type
        # (ClusterSettings), which the vendored EnvoyExtensionPolicy carries for its processor's cluster
        extension = crd_schemas()[("gateway.envoyproxy.io/v1alpha1", "EnvoyExtensionPolicy")]
        balancer = extension["properties"]["spec"]["properties"]["extProc"]["items"]["properties"][
            "backendSettings"]["properties"]["loadBalancer"]
        assert list(jsonschema.Draft7Validator(balancer).iter_errors(policy["spec"]["loadBalancer"])) == []
        retry = extension["properties"]["spec"]["properties"]["extProc"]["items"]["properties"][
            "backendSettings"]["properties"]["retry"]
        assert list(jsonschema.Draft7Validator(retry).iter_errors(policy["spec"]["retry"])) == []
        for extension_policy in [o for o in objects if o["kind"] == "EnvoyExtensionPolicy"]:
            assert crd_errors(extension_policy) == [], extension_policy["metadata"]["name"]
    assert policy["spec"]["retry"] == {"numRetries": 1, "retryOn": {
        "triggers": ["connect-failure", "refused-stream", "reset-before-request"]}}
    # the processor is told which replica answered, as on the bootstrap's routes
    [responses] = [o for o in objects if o["kind"] == "EnvoyExtensionPolicy"
                   and o["metadata"]["name"] == "responses-bridge-responses"]
    assert responses["spec"]["extProc"][0]["processingMode"]["response"]["attributes"] == ["upstream.address"]


def test_istio_adds_the_bootstraps_replicas_cluster_and_routes_the_upstream_to_it() -> None:
    objects = _platform("istio", NAMED)
    bootstrap = bootstrap_dict(**dict(KUBERNETES, upstream=NAMED[0], upstream_urls=NAMED))
    [replicas] = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == UPSTREAM_CLUSTER]
    for envoy_filter in [o for o in objects if o["kind"] == "EnvoyFilter"]:
        patches = envoy_filter["spec"]["configPatches"]
        [added] = [p for p in patches if p["applyTo"] == "CLUSTER"]
        assert added["patch"] == {"operation": "ADD", "value": replicas}  # the bootstrap's, byte for byte
        merged = {p["match"]["routeConfiguration"]["vhost"]["route"]["name"]: p["patch"]["value"]
                  for p in patches if p["applyTo"] == "HTTP_ROUTE" and p["patch"]["operation"] == "MERGE"}
        for name in ("responses", "responses_unversioned", "chat_completions", "models", "embeddings"):
            assert merged[name]["route"] == {"cluster": UPSTREAM_CLUSTER, "retry_policy": {
                "retry_on": "connect-failure,refused-stream,reset-before-request", "num_retries": 1}}, name
        assert "route" not in merged["sidecar"]
        if have_kubectl():
            assert crd_errors(envoy_filter) == []
    [service] = [o for o in objects if o["kind"] == "VirtualService" and "mesh" in o["spec"]["gateways"]]
    assert service["spec"]["http"][0]["route"][0]["destination"]["host"] == "vllm-0.vllm.llm.svc.cluster.local"
    one = _platform("istio", NAMED[:1])
    assert not [p for o in one if o["kind"] == "EnvoyFilter" for p in o["spec"]["configPatches"]
                if p["applyTo"] == "CLUSTER"]


@pytest.mark.parametrize("target", ["bootstrap", "envoy-gateway", "istio"])
def test_the_command_takes_upstream_several_times(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    from responses_bridge.cli import main

    assert main(["envoy-config", "--format", target, *(arg for url in NAMED for arg in ("--upstream", url))]) == 0
    text = capsys.readouterr().out
    expected = {"bootstrap": "envoy.load_balancing_policies.override_host", "envoy-gateway": "endpointOverride",
                "istio": "envoy.load_balancing_policies.override_host"}[target]
    assert expected in text and "vllm-1.vllm.llm.svc.cluster.local" in text
    assert main(["envoy-config", "--format", target, "--upstream", NAMED[0]]) == 0
    assert expected not in capsys.readouterr().out  # one URL: as before
