"""The hosted shell and Skills on the ``agent-sandbox`` backend, end to end through the HTTP door and a real Envoy
(the stack of test_agent_sandbox_e2e.py: the fake Kubernetes API, stand-in pods, the real ``openai`` SDK): each
shell call claims a pod, runs its commands one by one through the runtime's process API with their own timeouts and
output limits, keeps the files for the next command and the next call, and streams the same events as on
bubblewrap; a container's skills are laid out at ``/mnt/skills/<name>/``, run from there, are not writable and are
never collected as the container's files."""

from __future__ import annotations

import aiohttp
import openai

from tests.integration import test_agent_sandbox_e2e as pods
from tests.integration.test_agent_sandbox_e2e import Stack, no_claims_left
from tests.integration.test_agents_api import BETA, frames, read_until_idle
from tests.integration.test_agents_hosted import commands
from tests.integration.test_shell_e2e import AUTO, _call_and_output, run_action
from tests.integration.test_skills import skill_zip
from tests.integration.test_skills_shell import INLINE, with_skills
from tests.support.schema import check_stream
from tests.unit.test_server_tool_turns import check_event, check_item_order

pytestmark = pods.pytestmark
stack = pods.stack
base_url = pods.base_url
client = pods.client


async def test_commands_run_in_a_pod_and_the_answer_uses_their_output(client: openai.AsyncOpenAI,
                                                                      stack: Stack) -> None:
    response = await client.responses.create(model="fake-model", input="sh: pwd && ls /mnt && id -u",
                                             tools=[AUTO])  # type: ignore[list-item]
    call, output = _call_and_output(response)
    assert call.status == "completed" and output.status == "completed"
    [command] = output.output
    assert command.outcome.type == "exit" and command.outcome.exit_code == 0  # type: ignore[union-attr]
    lines = command.stdout.splitlines()
    assert lines[:2] == ["/mnt/data", "data"] and lines[2] != "0"
    assert await no_claims_left(stack.cluster) == []


async def test_the_stream_has_the_shell_events_in_order(base_url: str) -> None:
    body = {"model": "fake-model", "stream": True, "tools": [AUTO],
            "input": run_action(commands=["echo one", "echo two >&2; exit 2"])}
    async with aiohttp.ClientSession() as session, session.post(f"{base_url}/v1/responses", json=body) as reply:
        assert reply.status == 200
        events = check_stream(await reply.read())
    for event in events:
        check_event(event)
    per_item = check_item_order(events)
    assert per_item[1] == ["shell_call_output", *(["response.shell_call_output_content.delta",
                                                   "response.shell_call_output_content.done"] * 2),
                           "response.output_item.done"]
    deltas = [event["delta"] for event in events if event["type"] == "response.shell_call_output_content.delta"]
    assert deltas == [{"stdout": "one\n", "stderr": ""}, {"stdout": "", "stderr": "two\n"}]
    done = [event for event in events if event["type"] == "response.shell_call_output_content.done"]
    assert done[1]["output"] == [{"stdout": "", "stderr": "two\n", "outcome": {"type": "exit", "exit_code": 2}}]


async def test_a_non_zero_exit_a_timeout_and_the_output_limit_are_outputs(client: openai.AsyncOpenAI) -> None:
    response = await client.responses.create(
        model="fake-model", tools=[AUTO],  # type: ignore[list-item]
        # the sleep's 1 s leaves the echo most of the call's time: after a 3 s one, a loaded machine (a full run's)
        # had the echo's pod exec start too late for what the call had left
        input=run_action(commands=["ls /nowhere", "sleep 30", "echo still here"], timeout_ms=1000,
                         max_output_length=7))
    _, output = _call_and_output(response)
    missing, slow, after = output.output
    assert missing.outcome.type == "exit" and missing.outcome.exit_code == 2 and len(missing.stderr) == 7
    assert slow.outcome.type == "timeout"
    assert after.stdout == "still h" and after.outcome.type == "exit"
    assert response.status == "completed" and output.status == "completed"


async def test_a_file_is_there_for_the_next_command_and_the_next_call(client: openai.AsyncOpenAI) -> None:
    container = await client.containers.create(name="pod shell state")
    tools = [{"type": "shell", "environment": {"type": "container_reference", "container_id": container.id}}]
    first = await client.responses.create(model="fake-model", tools=tools,  # type: ignore[arg-type]
                                          input=run_action(commands=["echo remembered > state.txt", "cat state.txt"]))
    assert _call_and_output(first)[1].output[1].stdout == "remembered\n"
    second = await client.responses.create(model="fake-model", tools=tools,  # type: ignore[arg-type]
                                           input="sh: cat /mnt/data/state.txt")
    assert _call_and_output(second)[1].output[0].stdout == "remembered\n"
    files = await client.containers.files.list(container.id)
    assert [file.path for file in files.data] == ["/mnt/data/state.txt"]


async def test_skills_are_laid_out_read_only_run_from_the_shell_and_not_kept(client: openai.AsyncOpenAI) -> None:
    made = await client.skills.create(files=("s.zip", skill_zip(), "application/zip"))
    commands = ["sed -s -n 2p /mnt/skills/csv-insights/SKILL.md /mnt/skills/inline-tool/SKILL.md",
                "cd /mnt/skills/csv-insights && python3 scripts/run.py > /mnt/data/out.txt && cat /mnt/data/out.txt",
                "echo x > /mnt/skills/csv-insights/new.txt",
                "echo x >> /mnt/skills/csv-insights/SKILL.md",
                "rm /mnt/skills/csv-insights/scripts/run.py",
                "mkdir /mnt/skills/other",
                "ls /mnt/skills"]
    response = await client.responses.create(
        model="fake-model", input=run_action(commands=commands),
        tools=[with_skills({"type": "skill_reference", "skill_id": made.id}, INLINE)])  # type: ignore[list-item]
    call, output = _call_and_output(response)
    names, ran_there, *writes, listed = output.output
    assert names.stdout == "name: csv-insights\nname: inline\n", names
    assert ran_there.stdout == "the skill ran\n" and ran_there.outcome.exit_code == 0  # type: ignore[union-attr]
    for write in writes:
        assert write.outcome.type == "exit" and write.outcome.exit_code != 0, write
        assert "Permission denied" in write.stderr or "Read-only file system" in write.stderr, write
    assert listed.stdout == "csv-insights\ninline-tool\n"
    files = await client.containers.files.list(call.environment.container_id)  # type: ignore[union-attr]
    assert [file.path for file in files.data] == ["/mnt/data/out.txt"]
    await client.skills.delete(made.id)


async def test_an_agent_environments_files_setup_and_env_on_pods(client: openai.AsyncOpenAI, base_url: str,
                                                                stack: Stack) -> None:
    """A session from a template on the pod backend: its files in the pod's /mnt/data, its setup commands run there
    before the first turn, its env given to them and to the agent's own commands."""
    template = await client.beta.agents.environments.templates.create(
        files=[{"type": "inline", "path": "/workspace/in/a.txt", "data": "YWxwaGEK"}],  # alpha
        env={"WHO": "pods"}, setup_commands=[{"command": "cat a.txt > b.txt && echo \"$WHO\" >> b.txt",
                                              "cwd": "/workspace/in"}])
    agent = await client.beta.agents.create(model="fake-model")
    body = {"agent_id": agent.id, "stream": True, "input": "sh: cat /mnt/data/in/b.txt && echo \"$WHO\"",
            "environment": {"type": "openai_hosted", "environment_template_id": template.id}}
    async with aiohttp.ClientSession(base_url) as http, \
            http.post("/v1/agents/sessions", json=body, headers=BETA) as answer:
        assert answer.status == 200, await answer.text()
        events = frames(await read_until_idle(answer))
    [command] = commands(events)
    assert command["exit_code"] == 0 and command["output"] == "alpha\npods\npods\n", command
    await client.beta.agents.sessions.delete(events[0][1]["session"]["id"])
    assert await no_claims_left(stack.cluster) == []
