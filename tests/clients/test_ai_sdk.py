"""The Vercel AI SDK (npm ``ai`` + ``@ai-sdk/openai``, unmodified) against both doors:
``createOpenAI({baseURL}).responses(model)`` with generateText, streamText and a zod ``tool()`` loop. The SDK runs
in node (``node/ai_sdk_check.mjs``), which prints what the SDK returned as one JSON line."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.support.bridge import UpstreamLog

SCRIPT = Path(__file__).parent / "node" / "ai_sdk_check.mjs"


async def run_sdk(node_modules: Path, base_url: str, scenario: str, model: str = "fake-model") -> dict[str, Any]:
    node = shutil.which("node")
    assert node is not None
    result = await asyncio.to_thread(subprocess.run, [node, str(SCRIPT), f"{base_url}/v1", scenario, model],
                                     cwd=SCRIPT.parent, capture_output=True, text=True, timeout=120, check=False)
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines, (result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    out = json.loads(lines[-1])
    assert out["ok"], out
    return out


async def test_generate_text(node_modules: Path, base_url: str, upstream_log: UpstreamLog) -> None:
    out = await run_sdk(node_modules, base_url, "generate")
    assert out["text"] == "Echo: Hello from the AI SDK" and out["finishReason"] == "stop"
    assert out["usage"]["outputTokens"] > 0 and out["responseId"].startswith("resp_")
    messages = (await upstream_log.last_body())["messages"]
    assert messages[0] == {"role": "system", "content": "You are terse."}


async def test_stream_text(node_modules: Path, base_url: str) -> None:
    out = await run_sdk(node_modules, base_url, "stream")
    assert out["deltas"] == ["Echo: ", "Stream ", "me ", "w1 ", "w2"]
    assert out["text"] == "Echo: Stream me w1 w2" and out["finishReason"] == "stop"


async def test_tool_loop(node_modules: Path, base_url: str, upstream_log: UpstreamLog) -> None:
    out = await run_sdk(node_modules, base_url, "tools")
    assert out["calls"] == ["Paris"] and out["steps"] == 2
    assert out["text"] == 'Tool result: {"city":"Paris","forecast":"sunny"}'
    body = await upstream_log.last_body()
    # the zod schema arrives as draft-07 with $schema, and is offered as sent
    assert body["tools"][0]["function"]["parameters"]["$schema"].startswith("http://json-schema.org/draft-07")
    assert body["messages"][-1]["role"] == "tool"


async def test_stream_tool_loop(node_modules: Path, base_url: str) -> None:
    out = await run_sdk(node_modules, base_url, "stream-tools")
    assert out["calls"] == ["Rome"] and out["steps"] == 2 and out["text"] == "Tool result: sunny in Rome"


async def test_stream_failure_reaches_the_caller(node_modules: Path, base_url: str, door: str) -> None:
    out = await run_sdk(node_modules, base_url, "stream-failure")
    assert out["finishReason"] == "error" or out["finishReason"].startswith("rejected"), out
    assert len(out["errors"]) == 1, out
    if door == "http":  # through Envoy a broken upstream may also reach the client as a 502 or a cut body
        assert "upstream" in out["errors"][0], out
