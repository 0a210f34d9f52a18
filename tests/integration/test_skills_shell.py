"""Skills in the hosted shell, end to end with the real ``openai`` SDK through the HTTP door and a real Envoy (the
fixtures of test_shell_e2e.py): a skill uploaded as a zip with its ``SKILL.md`` is listed, and a shell tool whose
``container_auto`` names it (a ``skill_reference``, with or without a version) or carries one inline (a base64
zip) finds each laid out read-only at ``/mnt/skills/<name>/``, runs its script from there, and cannot write there;
the tool's description names the skills for the model; an unknown skill is refused before anything is made.

Skills reach the shell the way they reach the code interpreter: the one container → sandbox path
(services/containers/runs.py) lays out a container's skills for every call in it.
"""

from __future__ import annotations

import base64

import aiohttp
import openai
import orjson

from tests.integration import test_shell_e2e as shell_e2e
from tests.integration.test_shell_e2e import AUTO, Gateway, _call_and_output, run_action
from tests.integration.test_skills import MANIFEST, skill_zip
from tests.support.bridge import UpstreamLog
from tests.support.sdk import async_sdk

pytestmark = shell_e2e.pytestmark  # the same skips: envoy, bubblewrap, a cgroup per call
gateway = shell_e2e.gateway  # the same stack: a sidecar and a real Envoy, each test through both doors
base_url = shell_e2e.base_url
client = shell_e2e.client

INLINE = {"type": "inline", "name": "inline-tool", "description": "An inline tool.",
          "source": {"type": "base64", "media_type": "application/zip",
                     "data": base64.b64encode(skill_zip(MANIFEST.replace("csv-insights", "inline"))).decode()}}


def with_skills(*skills: dict) -> dict:
    return {"type": "shell", "environment": {"type": "container_auto", "skills": list(skills)}}


async def test_an_uploaded_skill_is_listed_laid_out_read_only_and_runs_from_the_shell(
        client: openai.AsyncOpenAI) -> None:
    made = await client.skills.create(files=("s.zip", skill_zip(), "application/zip"))
    assert made.name == "csv-insights" and made.id in [skill.id async for skill in client.skills.list()]
    commands = ["sed -s -n 2p /mnt/skills/csv-insights/SKILL.md /mnt/skills/inline-tool/SKILL.md",
                "python3 /mnt/skills/csv-insights/scripts/run.py",
                "cd /mnt/skills/csv-insights && python3 scripts/run.py > /mnt/data/out.txt && cat /mnt/data/out.txt",
                "echo x > /mnt/skills/csv-insights/new.txt",
                "echo x >> /mnt/skills/csv-insights/SKILL.md",
                "rm /mnt/skills/csv-insights/scripts/run.py",
                "mkdir /mnt/skills/other",
                "ls /mnt/skills"]
    response = await client.responses.create(
        model="fake-model", input=run_action(commands=commands),
        tools=[with_skills({"type": "skill_reference", "skill_id": made.id, "version": "1"}, INLINE)])  # type: ignore[list-item]
    call, output = _call_and_output(response)
    assert call.status == "completed" and output.status == "completed"
    names, ran, ran_there, *writes, listed = output.output
    assert names.stdout == "name: csv-insights\nname: inline\n", names
    assert ran.stdout == "the skill ran\n" and ran.outcome.type == "exit" and ran.outcome.exit_code == 0
    assert ran_there.stdout == "the skill ran\n" and ran_there.outcome.exit_code == 0  # type: ignore[union-attr]
    for write in writes:  # the tree is read-only whatever the command tries
        assert write.outcome.type == "exit" and write.outcome.exit_code != 0, write
        # refused: the bind is read-only, and the files are not the sandbox uid's (root made them)
        assert "Read-only file system" in write.stderr or "Permission denied" in write.stderr, write
    assert listed.stdout == "csv-insights\ninline-tool\n"
    container_id = call.environment.container_id  # type: ignore[union-attr]
    files = await client.containers.files.list(container_id)
    assert [file.path for file in files.data] == ["/mnt/data/out.txt"]  # the skills are not the container's files
    await client.skills.delete(made.id)


async def test_the_shell_tool_s_description_names_the_container_s_skills(
        client: openai.AsyncOpenAI, fake_upstream: str) -> None:
    upstream = UpstreamLog(fake_upstream.removesuffix("/v1"))
    made = await client.skills.create(files=("s.zip", skill_zip(), "application/zip"))
    await client.responses.create(model="fake-model", input="sh: ls /mnt/skills",
                                  tools=[with_skills({"type": "skill_reference", "skill_id": made.id}, INLINE)])  # type: ignore[list-item]
    offered = next(entry["body"] for entry in reversed(await upstream.entries())
                   if "inline-tool" in orjson.dumps(entry["body"].get("tools", [])).decode())
    [description] = [tool["function"]["description"] for tool in offered["tools"]
                     if tool["function"]["name"] == "shell"]
    assert "- csv-insights: Summarise a CSV file with pandas. (/mnt/skills/csv-insights/SKILL.md)" in description
    assert "- inline-tool: An inline tool. (/mnt/skills/inline-tool/SKILL.md)" in description
    await client.skills.delete(made.id)


async def test_the_conversation_keeps_its_container_while_its_skills_stay_the_same(
        client: openai.AsyncOpenAI) -> None:
    first = await client.responses.create(model="fake-model", input="sh: echo kept > note.txt",
                                          tools=[with_skills(INLINE)])  # type: ignore[list-item]
    same = await client.responses.create(model="fake-model", input="sh: cat note.txt; ls /mnt/skills",
                                         tools=[with_skills(INLINE)], previous_response_id=first.id)  # type: ignore[list-item]
    _, output = _call_and_output(same)
    assert output.output[0].stdout == "kept\ninline-tool\n"
    assert same.output[0].environment == first.output[0].environment  # type: ignore[union-attr]
    other = await client.responses.create(model="fake-model", input="sh: ls /mnt/skills | wc -l; ls",
                                          tools=[AUTO], previous_response_id=same.id)  # type: ignore[list-item]
    _, output = _call_and_output(other)
    assert output.output[0].stdout == "0\n"  # no skills asked for: a new container, without them
    assert other.output[0].environment != first.output[0].environment  # type: ignore[union-attr]


async def test_an_unknown_or_bad_skill_is_refused_before_anything_is_made(base_url: str) -> None:
    cases = [
        ({"type": "skill_reference", "skill_id": "skill_nope"}, 404, "tools[0].environment.skills[0].skill_id"),
        ({**INLINE, "source": {**INLINE["source"], "data": base64.b64encode(b"not a zip").decode()}},  # type: ignore[dict-item]
         400, "tools[0].environment.skills[0].source.data"),
        ({**INLINE, "name": "../up"}, 400, "tools[0].environment.skills[0].name"),
    ]
    async with aiohttp.ClientSession(base_url) as http:
        async with http.get("/v1/containers?limit=100") as reply:
            before = len((await reply.json())["data"])
        for skill, status, param in cases:
            body = {"model": "fake-model", "input": "sh: ls", "tools": [with_skills(skill)]}
            async with http.post("/v1/responses", json=body) as reply:
                assert reply.status == status, (skill, await reply.text())
                assert (await reply.json())["error"]["param"] == param
        async with http.get("/v1/containers?limit=100") as reply:
            assert len((await reply.json())["data"]) == before


async def test_envoy_routes_the_skills_api_and_the_shell_with_skills_to_the_bridge(gateway: Gateway) -> None:
    before = await gateway.sidecar_requests()
    async with async_sdk(base_url=f"{gateway.url}/v1", api_key="sk-client", max_retries=0,
                                  timeout=60) as sdk:
        made = await sdk.skills.create(files=("s.zip", skill_zip(), "application/zip"))
        response = await sdk.responses.create(
            model="fake-model", input="sh: python3 /mnt/skills/csv-insights/scripts/run.py",
            tools=[with_skills({"type": "skill_reference", "skill_id": made.id, "version": "latest"})])  # type: ignore[list-item]
        _, output = _call_and_output(response)
        assert output.output[0].stdout == "the skill ran\n"
        await sdk.skills.delete(made.id)
    assert await gateway.sidecar_requests() > before  # the response, to the HTTP door (the Skills API's own route
    # goes to the files cluster, as in test_skills.py)

