"""The fake model runs code asked for as a person asks (demo/fake_code.py): a fenced ```python block or
``run: <code>`` in the message, with the code interpreter's ``python`` function offered, is a call to it with that
code; ``sh: <command>`` or a fenced ```sh block, with the ``shell`` function offered, a call to it with that
command; everything else about tool calls stays as it was."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from responses_bridge.demo import fake_server
from responses_bridge.demo.fake_code import requested_code, requested_command
from responses_bridge.engine.tools.builtin import (
    CODE_DESCRIPTION,
    CODE_NAME,
    CODE_PARAMETERS,
    HOSTED_SHELL_DESCRIPTION,
    SHELL_PARAMETERS,
)

PYTHON = {"type": "function", "function": {"name": CODE_NAME, "description": CODE_DESCRIPTION,
                                           "parameters": CODE_PARAMETERS}}
OTHER = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string"}}}}}


@pytest.fixture(scope="module")
async def base_url() -> AsyncIterator[str]:
    runner, port = await fake_server.start()
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


async def _answer(base_url: str, text: str, tools: list[dict[str, Any]] | None = None, **extra: Any
                  ) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "fake-model", "messages": [{"role": "user", "content": text}], **extra}
    if tools is not None:
        body["tools"] = tools
    async with aiohttp.ClientSession() as session, session.post(f"{base_url}/v1/chat/completions",
                                                                json=body) as response:
        assert response.status == 200, await response.text()
        return dict((await response.json())["choices"][0]["message"])


def _code_called(message: dict[str, Any]) -> str:
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == CODE_NAME
    return str(orjson.loads(call["function"]["arguments"])["code"])


@pytest.mark.parametrize(("text", "code"), [
    ("run: print(2 + 2)", "print(2 + 2)"),
    ("Please run: `print(2 + 2)`", "print(2 + 2)"),
    ("Compute this:\n```python\nimport math\nfor i in range(2):\n    print(math.pi * i)\n```\nthanks",
     "import math\nfor i in range(2):\n    print(math.pi * i)"),
    ("```py\nprint('x')\n```", "print('x')"),
    ("```\nprint(1)\n```", "print(1)"),
    ("Run: x = [1, 2]; print(x)", "x = [1, 2]; print(x)"),  # brackets that are no directive stay
    ("Here is my question.\nrun: print(len('abc'))", "print(len('abc'))"),
])
def test_the_code_a_person_asks_to_run(text: str, code: str) -> None:
    assert requested_code(text) == code


@pytest.mark.parametrize("text", ["Compute 2+2 in Python", "run:", "```javascript\nalert(1)\n```",
                                  "I went for a run: it was great"])
def test_no_code_no_call(text: str) -> None:
    assert requested_code(text) is None


async def test_run_calls_the_code_interpreter_with_that_code(base_url: str) -> None:
    message = await _answer(base_url, "run: print(2 + 2)", [PYTHON])
    assert message["content"] is None and _code_called(message) == "print(2 + 2)"


async def test_a_fenced_block_is_the_code(base_url: str) -> None:
    text = "What does this print?\n```python\nprint(sum(range(5)))\n```"
    assert _code_called(await _answer(base_url, text, [OTHER, PYTHON])) == "print(sum(range(5)))"


async def test_call_python_takes_the_code_in_the_message(base_url: str) -> None:
    """The guess a newcomer makes first: not the placeholder ``test`` (a NameError), the code given."""
    assert _code_called(await _answer(base_url, "call python\n```python\nprint(3)\n```", [PYTHON])) == "print(3)"
    assert _code_called(await _answer(base_url, "run: print(1)", [PYTHON], tool_choice="required")) == "print(1)"


async def test_without_the_tool_or_when_refused_the_prompt_is_echoed(base_url: str) -> None:
    assert (await _answer(base_url, "run: print(2 + 2)"))["content"] == "Echo: run: print(2 + 2)"
    assert (await _answer(base_url, "run: print(2 + 2)", [OTHER]))["content"] == "Echo: run: print(2 + 2)"
    refused = await _answer(base_url, "run: print(2 + 2)", [PYTHON], tool_choice="none")
    assert refused["content"] == "Echo: run: print(2 + 2)"
    forced = await _answer(base_url, "run: print(2 + 2)", [OTHER, PYTHON],
                           tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert [call["function"]["name"] for call in forced["tool_calls"]] == ["get_time"]


async def test_explicit_directives_still_win(base_url: str) -> None:
    named = await _answer(base_url, "call get_time UTC\nrun: print(1)", [OTHER, PYTHON])
    assert [call["function"]["name"] for call in named["tool_calls"]] == ["get_time"]
    scripted = await _answer(base_url, 'run: print(1) [args={"code": "print(9)"}]', [PYTHON])
    assert _code_called(scripted) == "print(9)"


async def test_the_tool_result_is_the_answer(base_url: str) -> None:
    messages = [{"role": "user", "content": "run: print(2 + 2)"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "call_python_0", "type": "function",
                     "function": {"name": CODE_NAME, "arguments": '{"code":"print(2 + 2)"}'}}]},
                {"role": "tool", "tool_call_id": "call_python_0", "content": "4\n"}]
    async with aiohttp.ClientSession() as session, session.post(
            f"{base_url}/v1/chat/completions",
            json={"model": "fake-model", "messages": messages, "tools": [PYTHON]}) as response:
        message = (await response.json())["choices"][0]["message"]
    assert message["content"] == "Tool result: 4\n" and "tool_calls" not in message


SHELL = {"type": "function", "function": {"name": "shell", "description": HOSTED_SHELL_DESCRIPTION,
                                          "parameters": SHELL_PARAMETERS}}


@pytest.mark.parametrize(("text", "command"), [
    ("sh: ls -la /mnt/data && python3 --version", "ls -la /mnt/data && python3 --version"),
    ("Please sh: `wc -l *.csv`", "wc -l *.csv"),
    ("$ echo hi | tr a-z A-Z", "echo hi | tr a-z A-Z"),
    ("List them:\n```bash\nfor f in *; do\n  echo $f\ndone\n```", "for f in *; do\n  echo $f\ndone"),
    ("```sh\nls\n```", "ls"),
])
def test_the_command_a_person_asks_to_run(text: str, command: str) -> None:
    assert requested_command(text) == command


@pytest.mark.parametrize("text", ["list the files", "sh:", "```python\nprint(1)\n```", "It costs $5 a month",
                                  "Use the shell: ls"])
def test_no_command_no_shell_call(text: str) -> None:
    assert requested_command(text) is None


async def test_sh_calls_the_shell_with_that_command_and_code_still_goes_to_python(base_url: str) -> None:
    message = await _answer(base_url, "sh: ls -la", [PYTHON, SHELL])
    (call,) = message["tool_calls"]
    assert call["function"]["name"] == "shell" and orjson.loads(call["function"]["arguments"]) == {
        "commands": ["ls -la"]}
    assert _code_called(await _answer(base_url, "run: print(1)", [PYTHON, SHELL])) == "print(1)"
    assert not (await _answer(base_url, "sh: ls", [PYTHON, SHELL], tool_choice="none")).get("tool_calls")
