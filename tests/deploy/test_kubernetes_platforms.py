"""The bridge where platform teams' Envoy lives. Every rendering of ``envoy-config --format`` (the bootstrap, the
snippet for an Envoy of your own, Envoy Gateway's objects, Istio's) drives the processor exactly as the bootstrap
does — the same ext_proc filter settings, Envoy Gateway's after its own translation of the policy and the patch
policy — and each rendering's filters, put in a bootstrap, pass ``envoy --mode validate``. The Envoy Gateway and
Istio overlays' objects validate against the CRDs of Gateway API v1.6.1, Envoy Gateway v1.9.0 and Istio 1.30.3
(tests/deploy/crds), and route as the bootstrap does."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from responses_bridge.cli import main
from responses_bridge.envoy_config import EXTPROC_CLUSTER, Auth, bootstrap_dict, to_yaml
from responses_bridge.envoy_config.command import render
from responses_bridge.envoy_config.envoy_gateway_policy import (
    apply_patches,
    comparable,
    filter_name,
    gateway_translation,
    route_processor,
)
from responses_bridge.envoy_config.istio import (
    RESPONSES_ROUTES,
    ROUTE_NAMES,
    ROUTE_SETTINGS,
    TOOL_ROUTES,
    istio_cluster,
)
from responses_bridge.envoy_config.names import DOOR_HEADER
from responses_bridge.envoy_config.targets import Placement, bridge_filters, processor_filter, with_clusters
from responses_bridge.envoy_config.targets import routes as routes_of
from responses_bridge.envoy_config.timeouts import EnvoyTimeouts
from tests.support.cel_rules import cel_results
from tests.support.envoy import have_envoy, validate_config
from tests.support.kube import bridge_container, by_kind, crd_errors, have_kubectl, is_core, one, overlay, settings
from tools import fast_yaml
from tools.docs.deploy_examples import KUBERNETES

needs_envoy = pytest.mark.skipif(not have_envoy(), reason="no envoy binary")
needs_kubectl = pytest.mark.skipif(not have_kubectl(), reason="no kubectl")
PLACEMENT = Placement(namespace="responses-bridge")
OPTIONS = dict(KUBERNETES)
CONFIGS = {  # the settings each rendering is checked under: the defaults, and other timeouts with bridge keys
    "default": OPTIONS,
    "keys-and-timeouts": dict(OPTIONS, auth=Auth(mode="keys"), timeouts=EnvoyTimeouts(message=12, max_message=90)),
}


def bootstrap_filter(options: dict[str, Any]) -> dict[str, Any]:
    return processor_filter(bridge_filters(bootstrap_dict(**options)))


def rendered(target: str, options: dict[str, Any] = OPTIONS) -> Any:
    return list(fast_yaml.load_all(render(target, options, PLACEMENT)))


RESPONSES_POLICY = "responses-bridge-responses"
POLICY_ROUTES = {RESPONSES_POLICY: "responses", "responses-bridge-chat-completions": "chat_completions",
                 "responses-bridge-upstream": "models"}
"""Each Envoy Gateway policy and the bootstrap route whose processor settings it must carry."""


def envoy_gateway_filter(objects: list[dict[str, Any]], policy: str = RESPONSES_POLICY) -> dict[str, Any]:
    """The ext_proc typed_config Envoy Gateway ends up running for ``policy``: its translation of the policy, then
    the patches on that policy's filter."""
    found = one(objects, "EnvoyExtensionPolicy", policy)
    return apply_patches(gateway_translation(found), one(objects, "EnvoyPatchPolicy"), filter_name(PLACEMENT, policy))


def istio_filters(objects: list[dict[str, Any]], context: str) -> list[dict[str, Any]]:
    [envoy_filter] = [o for o in by_kind(objects, "EnvoyFilter")
                      if o["spec"]["configPatches"][0]["match"]["context"] == context]
    return [p["patch"]["value"] for p in envoy_filter["spec"]["configPatches"] if p["applyTo"] == "HTTP_FILTER"]


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_every_rendering_drives_the_processor_as_the_bootstrap(config: str) -> None:
    options = CONFIGS[config]
    want = bootstrap_filter(options)
    [document] = rendered("http-filter", options)
    assert processor_filter(document["http_filters"]) == want
    objects = rendered("envoy-gateway", options)
    assert comparable(envoy_gateway_filter(objects)) == comparable(want["typed_config"])
    # every route the processor runs on, with that route's own settings (Chat Completions: stored chats; the
    # sidecar's own upstream calls: the key check with bridge keys), and none where the bootstrap has it off
    routes = routes_of(bootstrap_dict(**options))
    expected = {name: route_processor(want["typed_config"], routes[route]) for name, route in POLICY_ROUTES.items()}
    assert {p["metadata"]["name"] for p in by_kind(objects, "EnvoyExtensionPolicy")} == {
        name for name, processor in expected.items() if processor is not None}
    for policy in by_kind(objects, "EnvoyExtensionPolicy"):
        name = policy["metadata"]["name"]
        assert policy["spec"]["targetRefs"][0]["name"] == name
        assert comparable(envoy_gateway_filter(objects, name)) == comparable(expected[name] or {})
    for context in ("GATEWAY", "SIDECAR_OUTBOUND"):
        found = processor_filter(istio_filters(rendered("istio", options), context))
        assert found == with_clusters(want, {EXTPROC_CLUSTER: istio_cluster(50051, PLACEMENT.host)})


def test_the_comparison_sees_a_difference() -> None:
    """Envoy Gateway's translation alone differs from the bootstrap (it sends request headers, has no
    max_message_timeout): the patch policy is what makes them equal, and dropping one patch shows."""
    objects = rendered("envoy-gateway")
    want = comparable(bootstrap_filter(OPTIONS)["typed_config"])
    policy = one(objects, "EnvoyExtensionPolicy", RESPONSES_POLICY)
    assert comparable(gateway_translation(policy)) != want
    patch = one(objects, "EnvoyPatchPolicy")
    patch["spec"]["jsonPatches"] = patch["spec"]["jsonPatches"][1:]
    assert comparable(apply_patches(gateway_translation(policy), patch, filter_name(PLACEMENT, RESPONSES_POLICY))) != (
        want)


def test_a_changed_bootstrap_filter_reaches_every_rendering(monkeypatch: pytest.MonkeyPatch) -> None:
    """What keeps the four from drifting: a change to the bootstrap's filter (here its processing mode) shows in
    every rendering without an edit to them."""
    from responses_bridge.envoy_config import filters

    original = filters._ext_proc_filter

    def changed(*args: Any, **kwargs: Any) -> dict[str, Any]:
        result = original(*args, **kwargs)
        result["typed_config"]["processing_mode"]["response_header_mode"] = "SKIP"
        result["typed_config"]["processing_mode"]["request_header_mode"] = "SEND"
        return result

    monkeypatch.setattr("responses_bridge.envoy_config.listeners._ext_proc_filter", changed)
    [document] = rendered("http-filter")
    assert processor_filter(document["http_filters"])["typed_config"]["processing_mode"]["response_header_mode"] == (
        "SKIP")
    objects = rendered("envoy-gateway")
    assert comparable(envoy_gateway_filter(objects)) == comparable(bootstrap_filter(OPTIONS)["typed_config"])
    assert processor_filter(istio_filters(rendered("istio"), "GATEWAY"))["typed_config"]["processing_mode"][
        "response_header_mode"] == "SKIP"


def _bootstrap_with(filters: list[dict[str, Any]], clusters: dict[str, str]) -> dict[str, Any]:
    """The Kubernetes bootstrap with ``filters`` before its router and its clusters named as ``clusters`` says."""
    bootstrap = with_clusters(bootstrap_dict(**OPTIONS), clusters)
    kept: dict[str, dict[str, Any]] = {}
    for cluster in bootstrap["static_resources"]["clusters"]:  # two of ours may be one of the platform's
        cluster["name"] = clusters.get(cluster["name"], cluster["name"])
        kept.setdefault(cluster["name"], cluster)
    bootstrap["static_resources"]["clusters"] = list(kept.values())
    manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    manager["http_filters"] = [*filters, manager["http_filters"][-1]]
    result: dict[str, Any] = bootstrap
    return result


def _envoy_gateway_chain(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The filters Envoy Gateway runs for the bridge: the patch's, then the policy's processor (named as the
    bootstrap's routes name it, off until a route turns it on, as Envoy Gateway attaches it per route)."""
    patch = one(objects, "EnvoyPatchPolicy")
    before = [p["operation"]["value"] for p in patch["spec"]["jsonPatches"]
              if p["operation"]["jsonPath"] == "..http_filters"]
    processor = {"name": "envoy.filters.http.ext_proc", "disabled": True, "typed_config": {
        **envoy_gateway_filter(objects), "grpc_service": {"envoy_grpc": {"cluster_name": EXTPROC_CLUSTER}}}}
    return [*reversed(before), processor]


@needs_envoy
@pytest.mark.parametrize("target", ["http-filter", "envoy-gateway", "istio-gateway", "istio-sidecar"])
def test_each_renderings_filters_pass_envoy_validate(target: str, tmp_path: Path) -> None:
    if target == "http-filter":
        [document] = rendered("http-filter")
        bootstrap = _bootstrap_with(document["http_filters"], {})
    elif target == "envoy-gateway":
        bootstrap = _bootstrap_with(_envoy_gateway_chain(rendered("envoy-gateway")), {})
    else:
        context = "GATEWAY" if target == "istio-gateway" else "SIDECAR_OUTBOUND"
        names = {EXTPROC_CLUSTER: istio_cluster(50051, PLACEMENT.host)}
        bootstrap = _bootstrap_with(istio_filters(rendered("istio"), context), names)
    path = tmp_path / "envoy.yaml"
    path.write_text(to_yaml(bootstrap))
    result = validate_config(path)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_envoy
def test_the_istio_route_patches_pass_envoy_validate(tmp_path: Path) -> None:
    """The routes as Istio's patches leave them (each bootstrap route's settings merged into the VirtualService route
    of its name, the marked-request routes ahead of the Responses routes), in a bootstrap with Istio's cluster
    names."""
    objects = rendered("istio")
    [envoy_filter] = [o for o in by_kind(objects, "EnvoyFilter") if o["metadata"]["name"].endswith("-gateway")]
    door = istio_cluster(8081, PLACEMENT.host)
    names = {EXTPROC_CLUSTER: istio_cluster(50051, PLACEMENT.host), "responses_bridge_http": door,
             "responses_bridge_files": door}
    bootstrap = _bootstrap_with(istio_filters(objects, "GATEWAY"), names)
    manager = bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    host = manager["route_config"]["virtual_hosts"][0]
    # what Istio makes of the VirtualService's routes: the match and the destination, no filter settings; then the
    # patches: the bootstrap route's settings merged into each, the marked-request routes inserted ahead
    bare = {route["name"]: {"name": route["name"], "match": copy.deepcopy(route["match"]),
                            "route": copy.deepcopy(route["route"])}
            for route in host["routes"] if route["name"] in ROUTE_NAMES}
    patched: list[dict[str, Any]] = []
    for name in ROUTE_NAMES:
        for patch in envoy_filter["spec"]["configPatches"]:
            if patch["applyTo"] == "HTTP_ROUTE" and patch["match"]["routeConfiguration"]["vhost"]["route"][
                    "name"] == name:
                if patch["patch"]["operation"] == "INSERT_BEFORE":
                    patched.append(patch["patch"]["value"])
                else:
                    assert patch["patch"]["operation"] == "MERGE"
                    bare[name].update(patch["patch"]["value"])
        patched.append(bare[name])
    host["routes"] = patched
    assert [r["name"] for r in patched][:4] == [TOOL_ROUTES[0], RESPONSES_ROUTES[0], TOOL_ROUTES[1],
                                                RESPONSES_ROUTES[1]]
    # every route runs the processor exactly as the bootstrap's route of its name
    expected = routes_of(with_clusters(bootstrap_dict(**OPTIONS), names))
    for route in patched:
        assert {k: route.get(k) for k in ROUTE_SETTINGS} == {k: expected[route["name"]].get(k) for k in ROUTE_SETTINGS}
    path = tmp_path / "envoy.yaml"
    path.write_text(to_yaml(bootstrap))
    result = validate_config(path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("target", ["bootstrap", "http-filter", "envoy-gateway", "istio"])
def test_the_command_renders_each_format(target: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    output = tmp_path / "out.yaml"
    assert main(["envoy-config", "--format", target, "--upstream", "http://vllm:8000/v1", "--namespace", "llm",
                 "--output", str(output)]) == 0
    documents = [d for d in fast_yaml.load_all(output.read_text()) if d]
    assert documents and capsys.readouterr().out == ""
    if target == "envoy-gateway":
        assert {d["metadata"]["namespace"] for d in documents} == {"llm"}
    if target == "istio":  # the EnvoyFilters in Istio's root namespace, where they reach every namespace's gateway
        assert {(d["kind"], d["metadata"]["namespace"]) for d in documents} == {
            ("EnvoyFilter", "istio-system"), ("VirtualService", "llm"), ("ServiceEntry", "llm")}


def test_the_default_format_is_todays_bootstrap(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["envoy-config", "--upstream", "http://vllm:8000/v1"]) == 0
    plain = capsys.readouterr().out
    assert main(["envoy-config", "--format", "bootstrap", "--upstream", "http://vllm:8000/v1"]) == 0
    assert capsys.readouterr().out == plain and "static_resources:" in plain


def test_several_upstreams_are_refused_by_the_platform_formats(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("upstreams:\n  - {name: a, url: 'http://a:8000/v1'}\n  - {name: b, url: 'http://b:8000/v1'}\n")
    assert main(["envoy-config", "--format", "istio", "--config", str(config)]) == 2
    assert "one upstream" in capsys.readouterr().err


@needs_kubectl
@pytest.mark.parametrize("name", ["envoy-gateway", "istio"])
def test_platform_objects_pass_their_crd_schemas(name: str) -> None:
    custom = [o for o in overlay(name) if not is_core(o)]
    assert custom
    for obj in custom:
        assert crd_errors(obj) == [], (obj["kind"], obj["metadata"]["name"])


@needs_kubectl
@pytest.mark.parametrize("name", ["envoy-gateway", "istio"])
def test_platform_objects_pass_their_crds_cel_rules(name: str) -> None:
    """The CRDs' x-kubernetes-validations, as the API server evaluates them on a create (tests/support/cel_rules.py):
    Istio 1.30 refused the overlay's VirtualServices for their ``timeout: 0s``, which the schemas alone let pass."""
    evaluated = 0
    for obj in overlay(name):
        if is_core(obj):
            continue
        count, errors = cel_results(obj)
        assert errors == [], (obj["kind"], obj["metadata"]["name"])
        evaluated += count
    assert evaluated > (100 if name == "envoy-gateway" else 10)  # the rules were reached, not skipped


@needs_kubectl
def test_the_cel_check_is_live() -> None:
    """A route timeout of 0s (what the overlay had), a backend of a kind Envoy Gateway cannot use: each refused."""
    service = copy.deepcopy(by_kind(overlay("istio"), "VirtualService")[0])
    service["spec"]["http"][0]["timeout"] = "0s"
    assert any("1ms" in error for error in cel_results(service)[1])
    policy = copy.deepcopy(one(overlay("envoy-gateway"), "EnvoyExtensionPolicy", RESPONSES_POLICY))
    policy["spec"]["extProc"][0]["backendRefs"][0]["kind"] = "Deployment"
    assert any("BackendRefs only supports" in error for error in cel_results(policy)[1])


@needs_kubectl
def test_the_crd_check_is_live() -> None:
    """A misspelt field, a body mode Envoy Gateway does not know and a kind with no CRD each fail it."""
    objects = overlay("envoy-gateway")
    policy = copy.deepcopy(one(objects, "EnvoyExtensionPolicy", RESPONSES_POLICY))
    policy["spec"]["extProc"][0]["procesingMode"] = policy["spec"]["extProc"][0].pop("processingMode")
    assert crd_errors(policy)
    policy = copy.deepcopy(one(objects, "EnvoyExtensionPolicy", RESPONSES_POLICY))
    policy["spec"]["extProc"][0]["processingMode"]["request"]["body"] = "Whole"
    assert any("Whole" in error for error in crd_errors(policy))
    assert crd_errors({"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "x"}})
    envoy_filter = copy.deepcopy(one(overlay("istio"), "EnvoyFilter", "responses-bridge-gateway"))
    envoy_filter["spec"]["configPatches"][0]["applyTo"] = "HTTP_FILTERS"
    assert crd_errors(envoy_filter)


@needs_kubectl
def test_envoy_gateway_routes_as_the_bootstrap() -> None:
    objects = overlay("envoy-gateway")
    routes = {r["metadata"]["name"]: r for r in by_kind(objects, "HTTPRoute")}
    policy = one(objects, "EnvoyExtensionPolicy", RESPONSES_POLICY)
    [target] = policy["spec"]["targetRefs"]
    responses = routes[target["name"]]["spec"]["rules"]
    # the processor's door is the bridge's Service, fail-closed; the Responses routes go to the upstream Backend
    assert policy["spec"]["extProc"][0]["backendRefs"] == [{"name": "responses-bridge", "port": 50051}]
    assert policy["spec"]["extProc"][0]["failOpen"] is False
    assert {m["path"]["value"] for rule in responses for m in rule["matches"]} == {"/v1/responses", "/responses"}
    assert responses[0]["backendRefs"][0]["kind"] == "Backend"
    backend = one(objects, "Backend")
    assert backend["spec"]["endpoints"] == [{"fqdn": {"hostname": "vllm.llm.svc.cluster.local", "port": 8000}}]
    # everything else the sidecar serves goes to its HTTP door through the Service
    tool_loop, sidecar = routes["responses-bridge-sidecar"]["spec"]["rules"]
    assert sidecar["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert sidecar["backendRefs"] == tool_loop["backendRefs"] == [{"name": "responses-bridge", "port": 8081}]
    # a request for the tool loop says so with a header, and its more specific match wins over the processor's
    assert [(m["path"]["value"], m["headers"]) for m in tool_loop["matches"]] == [
        (path, [{"type": "Exact", "name": DOOR_HEADER[0], "value": DOOR_HEADER[1]}])
        for path in ("/v1/responses", "/responses")]
    # the processor's upstream headers are set on the Responses routes, as the bootstrap's route sets them
    headers = {p["operation"]["path"]: p["operation"] for p in one(objects, "EnvoyPatchPolicy")["spec"]["jsonPatches"]
               if p["type"].endswith(".RouteConfiguration")}
    route = routes_of(bootstrap_dict(**OPTIONS))["responses"]
    assert headers["/request_headers_to_add"]["value"] == route["request_headers_to_add"]
    assert f"/{target['name']}/rule/" in headers["/request_headers_to_add"]["jsonPath"]
    service_ports = {p["port"]: p for p in one(objects, "Service")["spec"]["ports"]}
    assert service_ports[50051]["appProtocol"] == "kubernetes.io/h2c" and 8081 in service_ports
    # the patch policy targets the Gateway and listener the routes attach to, and the policy's own filter
    patch = one(objects, "EnvoyPatchPolicy")
    gateway = one(objects, "Gateway")
    assert patch["spec"]["targetRef"]["name"] == gateway["metadata"]["name"]
    assert {p["name"] for p in patch["spec"]["jsonPatches"]} == {
        f"responses-bridge/{gateway['metadata']['name']}/{gateway['spec']['listeners'][0]['name']}"}
    assert filter_name(PLACEMENT, RESPONSES_POLICY) in patch["spec"]["jsonPatches"][0]["operation"]["jsonPath"]
    # the Gateway's listener holds a whole Responses request while the processor reads it, as the bootstrap's does
    traffic = one(objects, "ClientTrafficPolicy")["spec"]
    assert traffic["targetRefs"][0]["name"] == gateway["metadata"]["name"]
    listener = bootstrap_dict(**OPTIONS)["static_resources"]["listeners"][0]
    assert int(traffic["connection"]["bufferLimit"].removesuffix("Mi")) * 2**20 == listener[
        "per_connection_buffer_limit_bytes"]
    # the sidecar's own model turns go through the Gateway's Envoy, whose Service the EnvoyProxy names
    proxy = one(objects, "EnvoyProxy")["spec"]["provider"]["kubernetes"]["envoyService"]["name"]
    assert settings(objects)["RESPONSES_BRIDGE_UPSTREAM_VIA"].startswith(f"http://{proxy}.envoy-gateway-system.")
    env = settings(objects)
    assert env["RESPONSES_BRIDGE_HTTP_HOST"] == env["RESPONSES_BRIDGE_EXTPROC_HOST"] == "0.0.0.0"
    assert "envoy" not in {c["name"] for c in one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]}
    assert bridge_container(objects)["image"].startswith("ghcr.io/")


@needs_kubectl
def test_istio_routes_as_the_bootstrap() -> None:
    objects = overlay("istio")
    services = {v["metadata"]["name"]: v for v in by_kind(objects, "VirtualService")}
    gateway = one(objects, "Gateway")
    assert services["responses-bridge-gateway"]["spec"]["gateways"] == [gateway["metadata"]["name"]]
    assert services["responses-bridge-mesh"]["spec"]["hosts"] == [PLACEMENT.host]
    routes = {r["name"]: r for r in services["responses-bridge-gateway"]["spec"]["http"]}
    # the EnvoyFilters' route patches find the routes by these names
    assert set(RESPONSES_ROUTES) <= set(routes)
    assert routes["responses"]["rewrite"]["uri"] == "/v1/chat/completions"
    assert routes["responses"]["route"] == [{"destination": {"host": "vllm.llm.svc.cluster.local",
                                                             "port": {"number": 8000}}}]
    assert routes["sidecar"]["route"] == [{"destination": {"host": PLACEMENT.host, "port": {"number": 8081}}}]
    assert list(routes)[-1] == "sidecar"  # the catch-all comes last
    # Istio's CRD refuses a route timeout of 0s ("must be a valid duration greater than 1ms"); none is its default
    for service in services.values():
        for route in service["spec"]["http"]:
            assert "timeout" not in route or route["timeout"] not in ("0s", "0", "0ms"), route["name"]
    sidecar_filter = one(objects, "EnvoyFilter", "responses-bridge-sidecar")
    assert sidecar_filter["spec"]["workloadSelector"]["labels"] == {"responses-bridge.io/ext-proc": "enabled"}
    # the marked-request routes reach the sidecar's HTTP door by Istio's name for it
    inserted = [p["patch"]["value"] for p in sidecar_filter["spec"]["configPatches"]
                if p["patch"]["operation"] == "INSERT_BEFORE" and p["applyTo"] == "HTTP_ROUTE"]
    assert [r["route"]["cluster"] for r in inserted] == [istio_cluster(8081, PLACEMENT.host)] * 2
    assert not [o for o in objects if o["kind"] in ("ServiceEntry", "DestinationRule")]  # a Service, over http


@pytest.mark.parametrize("target", ["envoy-gateway", "istio"])
def test_an_external_https_upstream(target: str) -> None:
    """Named to the mesh (ServiceEntry) and reached over TLS Envoy opens itself, checking the name, as the
    bootstrap's cluster does; every object still passes its CRD."""
    objects = rendered(target, dict(OPTIONS, upstream="https://api.openai.com/v1"))
    for obj in objects:
        assert crd_errors(obj) == [], (obj["kind"], obj["metadata"]["name"])
    if target == "istio":
        entry = one(objects, "ServiceEntry")["spec"]
        assert entry["hosts"] == ["api.openai.com"] and entry["ports"][0]["number"] == 443
        [port] = one(objects, "DestinationRule")["spec"]["trafficPolicy"]["portLevelSettings"]
        assert port == {"port": {"number": 443}, "tls": {"mode": "SIMPLE", "sni": "api.openai.com"}}
    else:
        backend = one(objects, "Backend")["spec"]
        assert backend["tls"] == {"wellKnownCACertificates": "System", "sni": "api.openai.com"}
        assert backend["endpoints"] == [{"fqdn": {"hostname": "api.openai.com", "port": 443}}]
