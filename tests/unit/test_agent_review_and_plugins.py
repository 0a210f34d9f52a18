"""The automatic review's reading of its model's answer (anything but a readable decision denies) and a plugin zip's
skills (the manifest's skills directory, inside the plugin only) and apps (servers of the operator's connector
registry)."""

from __future__ import annotations

import base64
import io
import zipfile

import orjson
import pytest

from responses_bridge.protocol.errors import APIError
from responses_bridge.services.agents.auto_review import DECISION_FUNCTION, decision_answer, read_decision
from responses_bridge.services.agents.environments.plugins import plugin_skills

SKILL = b"---\nname: greet\ndescription: Says hello.\n---\nbody\n"


def _call(arguments: str) -> dict[str, object]:
    return {"status": "completed", "output": [
        {"type": "function_call", "name": DECISION_FUNCTION, "arguments": arguments, "call_id": "c"}]}


def test_a_review_decides_only_by_its_call() -> None:
    assert read_decision(_call('{"decision": "approve", "reason": "fine"}')) == ("approve", "fine")
    assert read_decision(_call('{"decision": "deny", "reason": "' + "x" * 5000 + '"}'))[1] == "x" * 1000
    for unreadable in ('{"decision": "maybe"}', "not json", '["approve"]', "{}"):
        assert read_decision(_call(unreadable)) == ("deny", "the review gave no decision")
    assert read_decision({"status": "completed", "output": [{"type": "message", "content": []}]})[0] == "deny"
    assert read_decision({"status": "failed"}) == ("deny", "the review did not complete (failed)")


def test_a_denial_tells_the_model_and_makes_no_call() -> None:
    request = {"id": "mcpr_1", "name": "echo", "server_label": "tools", "arguments": '{"a": 1}'}
    assert decision_answer(request, "approve", "ok") == [
        {"type": "mcp_approval_response", "approval_request_id": "mcpr_1", "approve": True}]
    denied, note = decision_answer(request, "deny", "risky")
    assert denied["approve"] is False
    assert note["role"] == "developer" and "automatic review denied it (risky)" in note["content"][0]["text"]


def _plugin(files: dict[str, bytes], skills: str | None = "./skills") -> dict[str, object]:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        manifest = {"name": "p", "description": "d", **({"skills": skills} if skills else {})}
        archive.writestr(".codex-plugin/plugin.json", orjson.dumps(manifest))
        for path, data in files.items():
            archive.writestr(path, data)
    return {"type": "inline", "name": "p", "description": "d",
            "source": {"type": "base64", "media_type": "application/zip",
                       "data": base64.b64encode(out.getvalue()).decode()}}


def test_a_plugins_skills_are_its_skill_directories() -> None:
    [skill] = plugin_skills([_plugin({"skills/greet/SKILL.md": SKILL, "skills/other/notes.txt": b"no"})],
                            "environment.plugins")
    assert (skill.name, skill.description) == ("greet", "Says hello.")
    with zipfile.ZipFile(io.BytesIO(skill.data or b"")) as archive:
        assert archive.namelist() == ["SKILL.md"]
    assert [s.name for s in plugin_skills([_plugin({"tools/greet/SKILL.md": SKILL}, "./tools")], "p")] == ["greet"]
    assert [s.name for s in plugin_skills([_plugin({"skills/greet/SKILL.md": SKILL}, None)], "p")] == ["greet"]


@pytest.mark.parametrize(("plugin", "param"), [
    (_plugin({"skills/greet/SKILL.md": SKILL}, "../outside"), "p[0]"),
    (_plugin({"skills/greet/SKILL.md": SKILL}, "./a/../../b"), "p[0]"),
    (_plugin({"skills/greet/SKILL.md": SKILL, ".app.json": b'{"apps": {"mail": {"id": "connector_1"}}}'}), "p[0]"),
    (_plugin({"skills/greet/SKILL.md": SKILL, ".mcp.json": b'{"mcpServers": {"x": {"url": 5}}}'}), "p[0]"),
    (_plugin({"SKILL.md": SKILL}), "p[0]"),
])
def test_a_plugin_outside_what_is_served_is_refused(plugin: dict[str, object], param: str) -> None:
    with pytest.raises(APIError) as refused:
        plugin_skills([plugin], "p")
    assert refused.value.status == 400 and refused.value.param == param


def test_a_plugins_app_mapped_by_the_registry_is_a_connector_server() -> None:
    from responses_bridge.protocol.agents.inputs import response_tools
    from responses_bridge.services.agents.environments.plugins import plugin_contents

    apps = _plugin({".app.json": b'{"apps": {"notes": {"id": "asdk_app_notes"}}}'})
    skills, servers = plugin_contents([apps], "environment.plugins", frozenset({"asdk_app_notes"}))
    assert skills == [] and servers.files == {}  # nothing of the app is laid out in the container
    [tool] = servers.tools
    assert (tool["server_label"], tool["transport"], tool["plugin"]) == (
        "notes", {"type": "connector", "connector_id": "asdk_app_notes"}, "p")
    [sent] = response_tools(servers.tools)  # the turn's response: the id, resolved as a request's connector_id
    assert sent["connector_id"] == "asdk_app_notes" and "server_url" not in sent and sent["server_label"] == "notes"
    with pytest.raises(APIError) as refused:  # the registry does not map it: the setting is named
        plugin_contents([apps], "environment.plugins", frozenset({"connector_gmail"}))
    assert refused.value.code == "unsupported_value" and refused.value.param == "environment.plugins[0]"
    assert "notes (asdk_app_notes)" in refused.value.message
    assert "RESPONSES_BRIDGE_MCP_CONNECTORS" in refused.value.message
