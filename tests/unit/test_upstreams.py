"""The ``upstreams`` / ``models`` / ``default_upstream`` keys: validation, routing by model, credentials."""

from __future__ import annotations

import pytest

from responses_bridge.config.settings import Settings, SettingsError, load_settings
from responses_bridge.config.upstreams import ModelRoute, Router, UpstreamSpec, unrouted
from responses_bridge.protocol.errors import APIError

ISSUE_EXAMPLE = {
    "upstreams": [{"name": "local", "url": "http://127.0.0.1:8000/v1", "mode": "translate", "profile": "vllm",
                   "api_key_env": "LOCAL_KEY"}],
    "models": [{"match": "qwen*", "upstream": "local", "upstream_model": "Qwen/Qwen2.5-7B-Instruct"}],
    "default_upstream": "local",
}


def _two() -> Router:
    return Router(
        [UpstreamSpec(name="a", url="http://127.0.0.1:1/v1/"), UpstreamSpec(name="b", url="http://h:2/v1",
                                                                             mode="native", api_key="forward")],
        [ModelRoute(match="qwen*", upstream="a", upstream_model="Qwen/Qwen2.5"),
         ModelRoute(match="qwen-exact", upstream="b"), ModelRoute(match="llama", upstream="b")],
        None)


def test_the_issue_example_is_accepted_as_written(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCAL_KEY", "sk-local")
    settings = Settings(**ISSUE_EXAMPLE)
    router = settings.router()
    route = router.route("qwen-7b")
    assert (route.upstream.name, route.upstream_model, route.upstream.profile) == ("local", "Qwen/Qwen2.5-7B-Instruct",
                                                                                   "vllm")
    assert router.route("anything-else").upstream.name == "local"  # default_upstream
    assert router.authorization(route.upstream, "Bearer client") == "Bearer sk-local"


def test_the_environment_takes_the_same_structure_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    monkeypatch.setenv("RESPONSES_BRIDGE_UPSTREAMS", json.dumps(ISSUE_EXAMPLE["upstreams"]))
    monkeypatch.setenv("RESPONSES_BRIDGE_MODELS", json.dumps(ISSUE_EXAMPLE["models"]))
    monkeypatch.setenv("RESPONSES_BRIDGE_DEFAULT_UPSTREAM", "local")
    settings = load_settings()
    assert [spec.name for spec in settings.upstreams] == ["local"]
    assert settings.models[0].match == "qwen*"


def test_exact_names_win_over_earlier_globs_and_globs_go_in_order() -> None:
    router = _two()
    assert router.route("qwen-exact").upstream.name == "b"
    assert router.route("qwen-exact").upstream_model is None
    assert router.route("qwen-14b").upstream.name == "a"
    assert router.route("qwen-14b").upstream_model == "Qwen/Qwen2.5"
    assert router.route("llama").upstream.url == "http://h:2/v1"


def test_an_unknown_model_without_a_default_is_a_404_model_not_found() -> None:
    with pytest.raises(APIError) as caught:
        _two().route("gpt-9")
    assert (caught.value.status, caught.value.code, caught.value.param) == (404, "model_not_found", "model")


def test_forward_and_no_key_send_the_clients_own_authorization() -> None:
    router = _two()
    assert router.authorization(router.upstreams["b"], "Bearer client") == "Bearer client"
    assert router.authorization(router.upstreams["a"], None) is None


def test_a_literal_key_replaces_the_clients() -> None:
    router = Router([UpstreamSpec(name="p", url="https://api.example.com/v1", api_key="sk-x")], [], "p")
    assert router.authorization(router.upstreams["p"], "Bearer client") == "Bearer sk-x"


def test_api_key_env_naming_an_unset_variable_fails_when_routes_are_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE_KEY", raising=False)
    settings = Settings(upstreams=[{"name": "x", "url": "http://127.0.0.1:1/v1", "api_key_env": "NOPE_KEY"}])
    with pytest.raises(ValueError, match="NOPE_KEY"):
        settings.router()


@pytest.mark.parametrize(("config", "named"), [
    ({"upstreams": [{"name": "a", "url": "http://x/v1"}, {"name": "a", "url": "http://y/v1"}]}, "used twice"),
    ({"upstreams": [{"name": "a", "url": "http://x/v1"}], "models": [{"match": "m", "upstream": "b"}]},
     "models[0].upstream"),
    ({"upstreams": [{"name": "a", "url": "http://x/v1"}], "default_upstream": "z"}, "default_upstream"),
    ({"upstreams": [{"name": "a", "url": "ftp://x/v1"}]}, "http"),
    ({"upstreams": [{"name": "a", "url": "http://x/v1", "mode": "magic"}]}, "mode"),
    ({"upstreams": [{"name": "a", "url": "http://x/v1", "profile": "nope"}]}, "profile"),
    ({"upstreams": [{"name": "a", "url": "http://x/v1", "colour": "red"}]}, "colour"),
])
def test_a_bad_configuration_fails_naming_what_is_wrong(config: dict, named: str) -> None:
    with pytest.raises(SettingsError, match=named.replace("[", r"\[").replace("]", r"\]")):
        load_settings(**config)


def test_the_single_upstream_serves_every_model_unchanged() -> None:
    router = Settings(upstream="http://127.0.0.1:9/v1", api_key="sk-one").router()
    assert router.single
    route = router.route("whatever")
    assert (route.upstream.url, route.upstream_model) == ("http://127.0.0.1:9/v1", None)
    assert router.authorization(route.upstream, "Bearer client") == "Bearer sk-one"
    assert Settings(upstream="http://127.0.0.1:9/v1").router().authorization(route.upstream, "Bearer c") == "Bearer c"


def test_a_bad_secret_is_named_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESPONSES_BRIDGE_UPSTREAMS", '[{"name": "a", "url": "http://x/v1", "api_key": 12345678}]')
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert str(caught.value) == ("RESPONSES_BRIDGE_UPSTREAMS: upstreams[0].api_key='********': Input should be a "
                                 "valid string")


def test_a_404_says_which_routing_rule_failed() -> None:
    spec = UpstreamSpec(name="local", url="http://127.0.0.1:9/v1")
    with pytest.raises(APIError) as caught:
        Router([spec], [], None).route("gpt-5")
    assert caught.value.message.endswith(": this bridge routes no model to its upstreams (its `models` list is empty) "
                                         "and has no `default_upstream`.")
    many = [ModelRoute(match=f"m{index}", upstream="local") for index in range(10)]
    with pytest.raises(APIError) as caught:
        Router([spec], many, None).route("gpt-5")
    assert "(m0, m1, m2, m3, m4, m5, m6, m7 and 2 more)" in caught.value.message
    assert caught.value.status == 404 and caught.value.code == "model_not_found"
    assert unrouted([spec, UpstreamSpec(name="b", url="http://h/v1")], many[:1], None) == ["b"]
    assert unrouted([spec], [], "local") == []
