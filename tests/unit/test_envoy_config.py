"""Every Envoy bootstrap in the repository, and freshly rendered ones, must pass ``envoy --mode validate``."""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root, for tests.support

from responses_bridge import envoy_config
from responses_bridge.config.upstreams import UpstreamSpec
from responses_bridge.envoy_config import bootstrap_dict, render_bootstrap, to_yaml
from responses_bridge.envoy_config.names import FILES_CLUSTER, HTTP_CLUSTER, VIA_DOOR
from tests.support.envoy import have_envoy, validate_config
from tools.docs.deploy_examples import (
    BOOTSTRAPS,
    DEMO,
    KUBERNETES,
    PLATFORM_FILES,
    rendered,
)

ROOT = Path(__file__).resolve().parents[2]
ENVOY_DIR = ROOT / "envoy"
needs_envoy = pytest.mark.skipif(not have_envoy(), reason="no envoy binary")

RENDERED = {
    "http-ip": dict(DEMO),
    "https-openai": dict(DEMO, upstream="https://api.openai.com/v1"),
    "https-ip-custom-port": dict(DEMO, upstream="https://10.0.0.7:8443/v1"),
    "http-hostname-root": dict(DEMO, upstream="http://ollama:11434"),
    "https-nested-path": dict(DEMO, upstream="https://gateway.example.com/openai/v1/"),
    "ipv6": dict(DEMO, upstream="http://[::1]:8090/v1", listen_address="::", extproc_address="::1",
                 sidecar_address="::1"),
    "kubernetes": dict(KUBERNETES),
    "workers": dict(DEMO, workers=2),  # one processor endpoint per worker: ports from extproc_port up
    "workers-unix-sockets": dict(DEMO, extproc_uds="/run/responses-bridge/extproc.sock", workers=3),
    "several-upstreams": dict(DEMO, upstreams=[
        UpstreamSpec(name="local", url="http://127.0.0.1:8000/v1"),
        UpstreamSpec(name="cloud", url="https://api.openai.com/v1", mode="native", api_key_env="OPENAI_KEY"),
        UpstreamSpec(name="ollama.box", url="http://ollama:11434"),
        UpstreamSpec(name="n", url="http://127.0.0.1:8001/v1", mode="native"),  # "n": a YAML 1.1 boolean
        UpstreamSpec(name="auto", url="http://127.0.0.1:8002/v1", mode="auto")]),
}


def _validate(path: Path) -> None:
    result = validate_config(path)
    assert result.returncode == 0, f"{path.name}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def _bootstrap_files() -> list[Path]:
    """Every bootstrap file under envoy/ (the Kubernetes manifests hold theirs in a ConfigMap: below)."""
    return sorted(ENVOY_DIR.rglob("*.yaml"))


def test_every_committed_bootstrap_is_listed() -> None:
    """A new file under envoy/ is rendered and checked like the others, or this fails; the Kubernetes pods render
    their Envoy's bootstrap themselves (tests/deploy/test_kubernetes_manifests.py), so none is kept for them."""
    assert set(_bootstrap_files()) == {ROOT / name for name in BOOTSTRAPS}
    assert {ROOT / name for name in PLATFORM_FILES} <= set(rendered(ROOT))


@needs_envoy
@pytest.mark.parametrize("path", _bootstrap_files(), ids=lambda p: str(p.relative_to(ENVOY_DIR)))
def test_repository_configs_validate(path: Path) -> None:
    _validate(path)


@needs_envoy
@pytest.mark.parametrize("name", sorted(RENDERED))
def test_rendered_configs_validate(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(render_bootstrap(**RENDERED[name]))  # type: ignore[arg-type]
    _validate(path)


def test_repository_configs_are_current() -> None:
    """The committed files are exactly what the renderer makes today (regenerate them when this fails)."""
    for path, text in rendered(ROOT).items():
        assert path.read_text() == text, f"{path.relative_to(ROOT)} is stale: run scripts/render-envoy-examples"


def _routes(config: dict) -> list[dict]:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["route_config"]["virtual_hosts"][0]["routes"]


def _clusters(config: dict) -> dict[str, dict]:
    return {c["name"]: c for c in config["static_resources"]["clusters"]}


def test_routes_and_processor_settings() -> None:
    config = bootstrap_dict(**RENDERED["https-nested-path"])  # type: ignore[arg-type]
    routes = {r["name"]: r for r in _routes(config)}
    assert list(routes) == ["responses_encoded", "responses_unversioned_encoded", "sidecar_tools",
                            "sidecar_tools_unversioned", "responses", "responses_unversioned", "sidecar_files",
                            "sidecar_files_unversioned", "sidecar_uploads", "sidecar_uploads_unversioned",
                            "sidecar_containers", "sidecar_containers_unversioned",
                            "sidecar_skills", "sidecar_skills_unversioned",
                            "sidecar_batches", "sidecar_batches_unversioned",
                            "sidecar_vector_stores", "sidecar_vector_stores_unversioned",
                            "sidecar_agents", "sidecar_agents_unversioned",
                            "sidecar_vaults", "sidecar_vaults_unversioned",
                            "models_codex", "models", "embeddings", "models_list", "images_generations",
                            "chat_completions", "sidecar"]
    for name, path in (("sidecar_tools", "/v1/responses"), ("sidecar_tools_unversioned", "/responses")):
        # marked by the processor (server-side tools): to the HTTP door, unchanged, never seen by the processor
        # again; the mark is dynamic metadata, which no client can send
        assert routes[name]["match"]["path"] == path
        assert routes[name]["match"]["dynamic_metadata"] == [{
            "filter": "responses_bridge.route", "path": [{"key": "to"}],
            "value": {"string_match": {"exact": "sidecar"}}}]
        assert routes[name]["route"] == {"cluster": envoy_config.HTTP_CLUSTER, "timeout": "0s"}
        assert routes[name]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["disabled"] is True
    for name in ("responses_encoded", "responses_unversioned_encoded"):  # a compressed create: 415 from Envoy
        assert routes[name]["direct_response"]["status"] == 415
        assert routes[name]["match"]["headers"][1] == {"name": "content-encoding", "present_match": True}
    assert routes["responses"]["match"]["path"] == "/v1/responses"
    assert routes["responses_unversioned"]["match"]["path"] == "/responses"
    for name in ("responses", "responses_unversioned"):
        assert routes[name]["route"]["cluster"] == envoy_config.UPSTREAM_CLUSTER
        assert routes[name]["route"]["prefix_rewrite"] == "/openai/v1/chat/completions"
        assert routes[name]["route"]["timeout"] == "0s"
        # the processor is off by default (Envoy's own early replies never wait on it) and on for these routes
        per_route = routes[name]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]
        assert per_route["disabled"] is False
        # the headers wait for the processor's answer to the body: the route may change then
        assert routes[name]["typed_per_filter_config"]["envoy.filters.http.buffer"]["disabled"] is False
    # the sidecar's own calls (--upstream-via, marked with ROUTE_HEADER) for the model list and for an upstream's
    # embeddings go to the upstream; a client's fall to the sidecar's catch-all, whose door lists the upstream's
    # models with the embedder and embeds or passes on (one model, /v1/models/{id}, is the sidecar's too)
    own = {"name": envoy_config.ROUTE_HEADER, "string_match": {"exact": "default"}}
    for name, method, path in (("models", "GET", "models"), ("embeddings", "POST", "embeddings")):
        assert routes[name]["route"]["prefix_rewrite"] == f"/openai/v1/{path}"
        assert routes[name]["match"]["path"] == f"/v1/{path}"
        assert routes[name]["match"]["headers"] == [{"name": ":method", "string_match": {"exact": method}}, own]
        assert routes[name]["route"]["host_rewrite_literal"] == "gateway.example.com"
        assert routes[name]["route"]["cluster"] == envoy_config.UPSTREAM_CLUSTER
    assert "path_separated_prefix" not in routes["models"]["match"]
    # ... and never reaches the upstream (removed once the route is chosen)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["route_config"]["request_headers_to_remove"] == [envoy_config.ROUTE_HEADER]
    # the Codex CLI's catalog request (?client_version=) goes to the sidecar, whose door adds Codex's ``models``
    assert routes["models_codex"]["match"]["path"] == "/v1/models"
    assert routes["models_codex"]["match"]["query_parameters"] == [{"name": "client_version", "present_match": True}]
    assert routes["models_codex"]["route"] == {"cluster": envoy_config.HTTP_CLUSTER, "timeout": "0s"}
    # the image generation tool's calls through --upstream-via reach the upstream's Images API, as it is
    assert routes["images_generations"]["match"]["path"] == "/v1/images/generations"
    assert routes["images_generations"]["route"]["cluster"] == envoy_config.UPSTREAM_CLUSTER
    assert routes["images_generations"]["route"]["prefix_rewrite"] == "/openai/v1/images/generations"
    for name in ("models", "embeddings", "images_generations", "sidecar"):
        per_route = routes[name]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]
        assert per_route["disabled"] is True
    # the model list, whichever door answers it, passes the processor (its request headers only): a smoke test of
    # it fails when the processor is out of reach; to the HTTP door, the processor is told to change nothing
    for name, hands_off in (("models_list", True), ("models_codex", True)):
        per_route = routes[name]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]
        assert per_route["disabled"] is False
        overrides = per_route["config"]["overrides"]
        assert overrides["processing_mode"]["request_header_mode"] == "SEND"
        assert overrides["processing_mode"]["request_body_mode"] == "NONE"
        assert ("grpc_initial_metadata" in overrides) is hands_off
        if hands_off:
            assert overrides["grpc_initial_metadata"] == [{"key": envoy_config.HANDS_OFF_METADATA, "value": "1"}]
    # chat completions: the processor reads the request (``store``), every answer's headers (an error made OpenAI's)
    # and only a stored request's answer body, streamed
    chat = routes["chat_completions"]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]
    assert chat["disabled"] is False
    assert chat["config"]["overrides"]["processing_mode"] == {
        "request_header_mode": "SEND", "request_body_mode": "BUFFERED", "request_trailer_mode": "SKIP",
        "response_header_mode": "SEND", "response_body_mode": "STREAMED", "response_trailer_mode": "SKIP"}
    assert routes["sidecar"]["route"]["cluster"] == envoy_config.HTTP_CLUSTER
    for name, path in (("sidecar_containers", "/v1/containers"), ("sidecar_containers_unversioned", "/containers"),
                       ("sidecar_skills", "/v1/skills"), ("sidecar_skills_unversioned", "/skills"),
                       ("sidecar_batches", "/v1/batches"), ("sidecar_batches_unversioned", "/batches")):
        # the Containers and Skills APIs stream uploads like the Files API (and the Batch API goes where the Files
        # API goes): the files cluster, no body limit
        assert routes[name]["match"] == {"path_separated_prefix": path}
        assert routes[name]["route"]["cluster"] == envoy_config.FILES_CLUSTER
        assert "request_body_buffer_limit" not in routes[name]
    for name, path in (("sidecar_vector_stores", "/v1/vector_stores"),
                       ("sidecar_vector_stores_unversioned", "/vector_stores"),
                       ("sidecar_agents", "/v1/agents"), ("sidecar_agents_unversioned", "/agents"),
                       ("sidecar_vaults", "/v1/vaults"), ("sidecar_vaults_unversioned", "/vaults")):
        # the Vector Stores and Agents APIs: the sidecar's HTTP door, never the processor, every method
        # (the Agents API also codex exec-server's websocket: adapters/http/agents/executor_routes.py)
        assert routes[name]["match"] == {"path_separated_prefix": path}
        upgrade = {"upgrade_configs": [{"upgrade_type": "websocket"}]} if "vector" not in name else {}
        assert routes[name]["route"] == {"cluster": envoy_config.HTTP_CLUSTER, "timeout": "0s", **upgrade}
        assert routes[name]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["disabled"] is True
    assert routes["sidecar"]["route"]["upgrade_configs"] == [{"upgrade_type": "websocket"}]

    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ext_proc = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")["typed_config"]
    assert next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")["disabled"] is True
    assert ext_proc["failure_mode_allow"] is False
    assert ext_proc["processing_mode"]["request_body_mode"] == "BUFFERED"
    # no processor round trip waits on the response headers; the processor can end a stream on its own
    assert ext_proc["processing_mode"]["response_body_mode"] == "FULL_DUPLEX_STREAMED"
    assert ext_proc["processing_mode"]["response_trailer_mode"] == "SEND"  # required by that mode
    assert ext_proc["route_cache_action"] == "DEFAULT"  # only the processor's clear_route_cache re-routes
    assert ext_proc["metadata_options"]["receiving_namespaces"] == {
        "untyped": ["responses_bridge.route", "responses_bridge.upstream"]}
    # the configured upstream key and the trace context: from the processor's metadata onto Envoy's translated
    # call only, and nothing (the client's own header) when the processor sets none
    for name in ("responses", "responses_unversioned"):
        assert routes[name]["request_headers_to_add"] == [{
            "header": {"key": header, "value": f"%DYNAMIC_METADATA(responses_bridge.upstream:{header})%"},
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD", "keep_empty_value": False}
            for header in ("authorization", "traceparent", "tracestate")]
    via = {"header": {"key": "via", "value": VIA_DOOR}, "append_action": "APPEND_IF_EXISTS_OR_ADD"}
    assert [name for name, route in routes.items()
            if [added for added in route.get("request_headers_to_add", []) if added != via]] == [
        "responses", "responses_unversioned"]
    # what goes to the HTTP door says it came through Envoy (a browser cannot send Via: adapters/http/hosts.py),
    # and nothing else does
    door = (HTTP_CLUSTER, FILES_CLUSTER)
    assert all((via in route.get("request_headers_to_add", [])) == (route.get("route", {}).get("cluster") in door)
               for route in routes.values())
    assert any(route.get("route", {}).get("cluster") == FILES_CLUSTER for route in routes.values())
    assert ext_proc["metadata_options"]["forwarding_namespaces"] == {
        "untyped": ["responses_bridge", "responses_bridge.route"]}
    names = [f["name"] for f in hcm["http_filters"]]
    # the processor learns that this bootstrap has the route for server-side tools
    assert names.index("envoy.filters.http.set_metadata") < names.index("envoy.filters.http.ext_proc")
    assert names.index("envoy.filters.http.buffer") == names.index("envoy.filters.http.ext_proc") + 1
    assert hcm["request_timeout"] == "0s"
    assert config["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] >= 64 * 1024 * 1024


def test_files_go_to_the_http_door_unbuffered() -> None:
    """Uploads stream through to the door: ext_proc off, no route body buffer (a buffered 200 MB upload would
    pass Envoy's buffer limit and be a 413), and the ``sidecar`` name that makes Envoy's 5xx name the door."""
    routes = {r["name"]: r for r in _routes(bootstrap_dict(**DEMO))}  # type: ignore[arg-type]
    for name, prefix in (("sidecar_files", "/v1/files"), ("sidecar_files_unversioned", "/files")):
        assert routes[name]["match"] == {"path_separated_prefix": prefix}
        assert routes[name]["route"] == {"cluster": envoy_config.FILES_CLUSTER, "timeout": "0s"}
        assert routes[name]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["disabled"] is True
        assert "envoy.filters.http.buffer" not in routes[name]["typed_per_filter_config"]
        assert "request_body_buffer_limit" not in routes[name]
    # the same door as the other sidecar routes, with a connection buffer of 1 MiB rather than 65 MiB: Envoy
    # holds little of an upload the door writes slower than the client sends
    clusters = _clusters(bootstrap_dict(**DEMO))  # type: ignore[arg-type]
    files, door = clusters[envoy_config.FILES_CLUSTER], clusters[envoy_config.HTTP_CLUSTER]
    assert files["load_assignment"]["endpoints"] == door["load_assignment"]["endpoints"]
    assert files["per_connection_buffer_limit_bytes"] == 1024 * 1024
    assert door["per_connection_buffer_limit_bytes"] == envoy_config.BUFFER_LIMIT_BYTES


def test_upstream_cluster_tls() -> None:
    cluster = _clusters(bootstrap_dict(**RENDERED["https-openai"]))[envoy_config.UPSTREAM_CLUSTER]  # type: ignore[arg-type]
    assert cluster["type"] == "STRICT_DNS"
    tls = cluster["transport_socket"]["typed_config"]
    assert tls["sni"] == "api.openai.com"
    validation = tls["common_tls_context"]["validation_context"]
    assert validation["match_typed_subject_alt_names"] == [{"san_type": "DNS", "matcher": {"exact": "api.openai.com"}}]
    assert validation["trusted_ca"]["filename"]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert endpoint == {"address": "api.openai.com", "port_value": 443}

    plain = _clusters(bootstrap_dict(**RENDERED["http-ip"]))  # type: ignore[arg-type]
    assert plain[envoy_config.UPSTREAM_CLUSTER]["type"] == "STATIC"
    assert "transport_socket" not in plain[envoy_config.UPSTREAM_CLUSTER]
    assert "grpc_health_check" in plain[envoy_config.EXTPROC_CLUSTER]["health_checks"][0]
    assert plain[envoy_config.HTTP_CLUSTER]["health_checks"][0]["http_health_check"]["path"] == "/health"


def test_bad_upstream_is_refused() -> None:
    for bad in ("127.0.0.1:8090/v1", "ftp://host/v1", "http:///v1"):
        with pytest.raises(ValueError):
            render_bootstrap(**dict(DEMO, upstream=bad))  # type: ignore[arg-type]


def test_yaml_round_trips_tricky_scalars() -> None:
    value = {"a": "yes", "b": "%X%", "c": "*", "d": None, "e": True, "f": 3, "g": "plain_word", "h": [], "i": {},
             "j": [{"k": 1, "l": [2]}], "m": "it's: tricky #1", "@type": "type.googleapis.com/x"}
    assert yaml.safe_load(to_yaml(value)) == value


def test_cli_prints_the_bootstrap() -> None:
    parser = argparse.ArgumentParser()
    envoy_config.add_parser(parser.add_subparsers())
    args = parser.parse_args(["envoy-config", "--listen-port", "10000", "--extproc-port", "50051", "--http-port",
                              "8080", "--upstream", "http://127.0.0.1:8090/v1", "--admin-port", "9901"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    assert out.getvalue() == render_bootstrap(**DEMO)  # type: ignore[arg-type]


def test_several_upstreams_get_one_cluster_each_and_routes_on_the_processors_choice() -> None:
    config = envoy_config.bootstrap_dict(**RENDERED["several-upstreams"])  # type: ignore[arg-type]
    clusters = _clusters(config)
    assert {"upstream_local", "upstream_cloud", "upstream_ollama.box", "upstream_n"} <= set(clusters)
    assert envoy_config.UPSTREAM_CLUSTER not in clusters
    assert clusters["upstream_cloud"]["transport_socket"]["typed_config"]["sni"] == "api.openai.com"
    routes = {route["name"]: route for route in _routes(config)}
    chosen = routes["cloud_native_responses"]
    assert chosen["match"]["dynamic_metadata"][0]["value"]["string_match"]["exact"] == "cloud:native"
    assert chosen["route"]["cluster"] == "upstream_cloud"
    assert chosen["route"]["prefix_rewrite"] == "/v1/responses"  # native: its own /v1/responses
    assert routes["local_responses"]["route"]["prefix_rewrite"] == "/v1/chat/completions"
    assert routes["ollama.box_chat_completions"]["route"]["prefix_rewrite"] == "/chat/completions"
    # the sidecar's own calls name their upstream in a header, matched only on the internal listener (loopback,
    # the next port): on the client-facing one no route looks at it, and it is stripped
    assert not any(header.get("name") == envoy_config.ROUTE_HEADER for route in routes.values()
                   for header in route["match"].get("headers", []))
    public, internal = config["static_resources"]["listeners"]
    assert public["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "request_headers_to_remove"] == [envoy_config.ROUTE_HEADER]
    assert internal["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": DEMO["listen_port"] + 1}
    hcm = internal["filter_chains"][0]["filters"][0]["typed_config"]
    assert [f["name"] for f in hcm["http_filters"]] == ["envoy.filters.http.router"]  # no processor there
    via = {route["name"]: route for route in hcm["route_config"]["virtual_hosts"][0]["routes"]}
    assert via["local_via_sidecar"]["match"]["headers"][0] == {"name": "x-responses-bridge-upstream",
                                                               "string_match": {"exact": "local"}}
    assert via["local_via_sidecar"]["route"]["cluster"] == "upstream_local"
    assert via["no_upstream_named"]["direct_response"]["status"] == 404
    # the models list merges every upstream's: the sidecar's HTTP door answers it, past a processor that changes
    # nothing (it is there so that the list fails when the processor is out of reach)
    assert "models" not in routes
    assert routes["sidecar_models"]["route"] == {"cluster": envoy_config.HTTP_CLUSTER, "timeout": "0s"}
    overrides = routes["sidecar_models"]["typed_per_filter_config"]["envoy.filters.http.ext_proc"]["config"][
        "overrides"]
    assert overrides["grpc_initial_metadata"] == [{"key": envoy_config.HANDS_OFF_METADATA, "value": "1"}]
    names = list(routes)
    assert names.index("cloud_native_responses") < names.index("responses")  # the processor's choice first
    assert "cloud_responses" not in routes and "local_native_responses" not in routes
    assert {"auto_responses", "auto_native_responses"} <= set(routes)  # probed at start: either may be chosen


def _processing_mode(config: dict) -> dict:
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    ext_proc = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")
    return ext_proc["typed_config"]["processing_mode"]


def test_the_processor_sets_each_upstreams_key_through_the_route() -> None:
    config = envoy_config.bootstrap_dict(**RENDERED["several-upstreams"])  # type: ignore[arg-type]
    assert _processing_mode(config)["request_header_mode"] == "SKIP"  # still one round trip less per request
    routes = {route["name"]: route for route in _routes(config)}
    added = {entry["header"]["key"]: entry["header"]["value"]
             for entry in routes["cloud_native_responses"]["request_headers_to_add"]}
    assert added["authorization"] == "%DYNAMIC_METADATA(responses_bridge.upstream:authorization)%"


def test_cli_renders_the_upstreams_of_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("RESPONSES_BRIDGE_UPSTREAMS", json.dumps([{"name": "x", "url": "http://127.0.0.1:9/v1"}]))
    parser = argparse.ArgumentParser()
    envoy_config.add_parser(parser.add_subparsers())
    args = parser.parse_args(["envoy-config"])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    assert "name: upstream_x" in out.getvalue()
def test_a_plain_get_on_responses_reaches_the_http_door() -> None:
    """``GET /v1/responses`` (the list, or a WebSocket upgrade) must not match a create route: every route for that
    exact path is for POST, so the GET falls through to the sidecar route, which also carries upgrades."""
    routes = _routes(bootstrap_dict(**RENDERED["https-nested-path"]))  # type: ignore[arg-type]
    for route in routes:
        if route["match"].get("path") in ("/v1/responses", "/responses"):
            methods = [h for h in route["match"]["headers"] if h["name"] == ":method"]
            assert methods == [{"name": ":method", "string_match": {"exact": "POST"}}], route["name"]
    catch_all = routes[-1]
    assert catch_all["name"] == "sidecar" and catch_all["match"] == {"prefix": "/"}
    assert catch_all["route"]["cluster"] == envoy_config.HTTP_CLUSTER


def _ext_proc(route: dict) -> dict:
    return route["typed_per_filter_config"]["envoy.filters.http.ext_proc"]


@pytest.mark.parametrize("mode", ["none", "keys"])
def test_without_stored_chats_the_chat_route_reaches_the_processor_only_to_route_or_check_a_key(mode: str) -> None:
    """``store_chat_completions: false``: one upstream, no keys, the processor never sees a chat request (no round
    trip); with keys only its headers; with several upstreams only its body (the model picks the route), and
    nothing of any answer."""
    auth = envoy_config.Auth(mode=mode)
    single = {r["name"]: r for r in _routes(bootstrap_dict(**DEMO, auth=auth, chat_store=False))}  # type: ignore[arg-type]
    chat = _ext_proc(single["chat_completions"])
    if mode == "none":
        assert chat["disabled"] is True
    else:
        assert chat["config"]["overrides"]["processing_mode"]["request_body_mode"] == "NONE"
        assert chat["config"]["overrides"]["processing_mode"]["response_body_mode"] == "NONE"
    several = {r["name"]: r for r in _routes(bootstrap_dict(
        **RENDERED["several-upstreams"], auth=auth, chat_store=False))}  # type: ignore[arg-type]
    routing = _ext_proc(several["chat_completions"])["config"]["overrides"]["processing_mode"]
    assert routing["request_body_mode"] == "BUFFERED" and routing["response_body_mode"] == "NONE"
    assert _ext_proc(several["ollama.box_chat_completions"])["disabled"] is True
    stored = {r["name"]: r for r in _routes(bootstrap_dict(**DEMO, auth=auth))}  # type: ignore[arg-type]
    assert _ext_proc(stored["chat_completions"])["config"]["overrides"]["processing_mode"][
        "response_body_mode"] == "STREAMED"


def test_the_sidecars_own_calls_carry_the_mark_the_one_upstream_routes_match() -> None:
    """With one upstream, the sidecar's calls through Envoy (``--upstream-via``) name it in ROUTE_HEADER: the models
    and embeddings routes send exactly those to the upstream (a client's go to the sidecar); without Envoy, none."""
    from responses_bridge.adapters.upstream_client import ROUTE_HEADER, AiohttpUpstreamClient
    from responses_bridge.config.settings import Settings
    from responses_bridge.config.upstreams import SINGLE_UPSTREAM
    from responses_bridge.envoy_config.names import OWN_CALL_VALUE

    via = AiohttpUpstreamClient(Settings(upstream="http://127.0.0.1:9/v1", upstream_via="http://127.0.0.1:10000/v1"))
    assert via._headers[ROUTE_HEADER] == OWN_CALL_VALUE == SINGLE_UPSTREAM
    assert ROUTE_HEADER == envoy_config.ROUTE_HEADER
    direct = AiohttpUpstreamClient(Settings(upstream="http://127.0.0.1:9/v1"))
    assert ROUTE_HEADER not in direct._headers


def test_a_processor_failure_names_where_the_bootstrap_looked() -> None:
    """``processor_unavailable`` says where the processor was looked for and the flags that put it there, as
    ``sidecar_unavailable`` names the HTTP door's address and ``--http-port``."""
    def message(**changes: object) -> str:
        config = bootstrap_dict(**dict(DEMO, **changes))  # type: ignore[arg-type]
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        return next(mapper["body_format_override"]["json_format"]["error"]["message"]
                    for mapper in hcm["local_reply_config"]["mappers"]
                    if mapper["body_format_override"]["json_format"]["error"]["code"] == "processor_unavailable")

    assert "door at 127.0.0.1:50051) is unavailable" in message() and "with --extproc-port 50051?" in message()
    workers = message(workers=3)
    assert "127.0.0.1:50051 to 50053" in workers and "--extproc-port 50051 --workers 3?" in workers
    uds = message(extproc_uds="/run/b%x.sock")
    assert "unix:/run/b%%x.sock" in uds and "--extproc-uds /run/b%%x.sock?" in uds  # % is Envoy's: doubled


def test_the_rendered_timeouts_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every timeout the bootstrap sets is a setting with the default the renderer uses (docs/configuration.md
    lists them), given by the environment, the configuration file or an ``envoy-config`` flag; and the HTTP
    door's keep-alive of a long JSON answer stays under the idle timeout those settings render."""
    from responses_bridge.config.settings import Settings, load_settings
    from responses_bridge.envoy_config.timeouts import EnvoyTimeouts

    assert EnvoyTimeouts.from_settings(Settings()) == EnvoyTimeouts()

    def rendered(*argv: str) -> dict:
        parser = argparse.ArgumentParser()
        envoy_config.add_parser(parser.add_subparsers())
        args = parser.parse_args(["envoy-config", *argv])
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            assert args.func(args) == 0
        return yaml.safe_load(out.getvalue())

    def timeouts(config: dict) -> tuple[str, str, str, set[str]]:
        hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ext_proc = next(f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")["typed_config"]
        return (hcm["stream_idle_timeout"], ext_proc["message_timeout"], ext_proc["max_message_timeout"],
                {cluster["connect_timeout"] for cluster in config["static_resources"]["clusters"]})

    assert timeouts(rendered()) == ("300s", "30s", "300s", {"5s"})
    monkeypatch.setenv("RESPONSES_BRIDGE_ENVOY_STREAM_IDLE_TIMEOUT", "2.5")
    monkeypatch.setenv("RESPONSES_BRIDGE_ENVOY_CONNECT_TIMEOUT", "1")
    assert timeouts(rendered("--message-timeout", "45", "--max-message-timeout", "600")) == (
        "2.5s", "45s", "600s", {"1s"})
    # the idle timeout's answer names what fired, its setting and what to do instead
    hcm = rendered()["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    idle = next(mapper["body_format_override"]["json_format"]["error"] for mapper in hcm["local_reply_config"][
        "mappers"] if "stream_idle_timeout" in str(mapper["filter"]))
    assert idle["code"] == "gateway_timeout" and "after 2.5 s" in idle["message"]
    assert "envoy_stream_idle_timeout" in idle["message"] and "background: true" in idle["message"]
    # the keep-alive: at most half the idle timeout, never when off
    assert load_settings().json_keepalive_interval() == 1.25
    assert load_settings(json_keepalive_seconds=1).json_keepalive_interval() == 1
    assert load_settings(json_keepalive_seconds=0).json_keepalive_interval() == 0


def _rendered_command(*argv: str) -> dict:
    parser = argparse.ArgumentParser()
    envoy_config.add_parser(parser.add_subparsers())
    args = parser.parse_args(["envoy-config", *argv])
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert args.func(args) == 0
    return yaml.safe_load(out.getvalue())


def _breakers(config: dict) -> dict[str, tuple[int, int, int]]:
    """(max_requests, max_pending_requests, max_connections) of each cluster, by name."""
    found = {}
    for cluster in config["static_resources"]["clusters"]:
        (threshold,) = cluster["circuit_breakers"]["thresholds"]
        assert threshold["priority"] == "DEFAULT"
        found[cluster["name"]] = (threshold["max_requests"], threshold["max_pending_requests"],
                                  threshold["max_connections"])
    return found


def test_every_cluster_s_circuit_breakers_hold_the_streams_the_sidecar_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Envoy's default breakers (1,024 requests a cluster) answered the 1,025th concurrent stream a 503: every
    cluster the bootstrap renders (the upstream's, the processor's, the HTTP door's) holds 10,000 per worker by
    default, or what ``envoy_max_requests`` / ``--max-requests`` says."""
    names = {"llm_upstream", "responses_bridge_extproc", "responses_bridge_http", "responses_bridge_files"}
    assert _breakers(_rendered_command()) == dict.fromkeys(names, (10_000, 10_000, 10_000))
    assert set(_breakers(_rendered_command("--workers", "3")).values()) == {(30_000, 30_000, 30_000)}
    monkeypatch.setenv("RESPONSES_BRIDGE_ENVOY_MAX_REQUESTS", "4000")
    assert set(_breakers(_rendered_command()).values()) == {(4000, 4000, 4000)}
    assert set(_breakers(_rendered_command("--max-requests", "25000")).values()) == {(25_000, 25_000, 25_000)}
    several = bootstrap_dict(**dict(DEMO, upstreams=[UpstreamSpec(name="a", url="http://10.0.0.1:8000/v1"),
                                                     UpstreamSpec(name="b", url="http://10.0.0.2:8000/v1")]),
                             max_requests=7)
    assert len(_breakers(several)) == 5 and set(_breakers(several).values()) == {(7, 7, 7)}


def test_the_head_deadline_and_the_door_s_keepalive_are_the_http_door_s_settings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Envoy cuts a slow request head at the HTTP door's ``http_head_timeout`` (its 408 in the door's words), and
    drops its idle connections to the door at half the door's ``http_keepalive_timeout``, so the door never
    closes one Envoy is about to reuse."""
    monkeypatch.setenv("RESPONSES_BRIDGE_HTTP_HEAD_TIMEOUT", "7")
    monkeypatch.setenv("RESPONSES_BRIDGE_HTTP_KEEPALIVE_TIMEOUT", "30")
    config = _rendered_command()
    for listener in config["static_resources"]["listeners"]:
        hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
        assert hcm["request_headers_timeout"] == "7s"
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    head = next(mapper["body_format_override"]["json_format"]["error"] for mapper in hcm["local_reply_config"][
        "mappers"] if "request_header_timeout" in str(mapper["filter"]))
    assert head["code"] == "request_timeout" and "within 7 s" in head["message"]
    clusters = {cluster["name"]: cluster for cluster in config["static_resources"]["clusters"]}
    for name in ("responses_bridge_http", "responses_bridge_files"):
        options = clusters[name]["typed_extension_protocol_options"]
        assert next(iter(options.values()))["common_http_protocol_options"]["idle_timeout"] == "15s"
