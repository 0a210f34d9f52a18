"""One MCP operation made from inside an agent environment's sandbox call: the source of a Python job
(mcp.py runs it, with ``run(<spec>)`` appended), never imported by the bridge's own code.

It runs where the environment's commands run — the bubblewrap sandbox's interpreter (the bridge's virtual
environment, which has the ``mcp`` package), or an agent-sandbox pod's Python (which needs it) — under the call's
limits (time, memory, processes, output) and its network policy (the egress proxy, which ``HTTP(S)_PROXY`` name and
the MCP client's HTTP stack honours). The ``mcp`` library's client speaks the protocol: to a server over ``stdio``
started as a child process (its stdin and stdout the client's; its stderr dropped), or to a server over HTTP
(Streamable HTTP, or SSE for a URL ending in ``/sse``) reached through the environment's proxy.

One line goes to stdout, after :data:`MARK`: ``{"result": …}`` (the ``tools/list`` pages' tools, or the
``tools/call`` result, as MCP's JSON), ``{"error": "…"}`` (the first line of what went wrong), or
``{"too_large": <bytes>}`` when the answer would not fit the bytes the bridge reads back. Each request's params carry
the tool's ``request_metadata`` as their ``_meta``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

MARK = "@responses-bridge-mcp-result@ "
"""What precedes the answer's line (anything else the job printed is not it)."""
LIST_PAGES = 100


def run(spec: dict[str, Any]) -> None:
    import anyio

    anyio.run(_answer, spec)


def _say(spec: dict[str, Any], answer: dict[str, Any]) -> None:
    """Write the answer and end the job at once: a ``stdio`` server is not waited for to close (the sandbox ends
    every process of the call with it), which would cost seconds a call for nothing."""
    text = json.dumps(answer, separators=(",", ":"))
    if len(text.encode()) > spec["max_bytes"]:
        text = json.dumps({"too_large": len(text.encode())})
    sys.stdout.write(MARK + text + "\n")
    sys.stdout.flush()
    os._exit(0)


async def _answer(spec: dict[str, Any]) -> None:
    import anyio

    try:
        with anyio.fail_after(spec["seconds"]):
            await _operate(spec)
    except TimeoutError:
        _say(spec, {"error": f"no answer within {spec['seconds']:g} s", "timeout": True})
    except Exception as error:  # noqa: BLE001 -- every failure is the bridge's to report, by its first line
        _say(spec, {"error": _first_line(error)})


async def _operate(spec: dict[str, Any]) -> None:
    """The operation, its answer said (:func:`_say`) while the connection is still open."""
    from mcp.client import Client
    from mcp_types import Implementation

    meta = spec.get("meta") or None
    client = Client(_transport(spec["transport"]), mode="auto", cache=None,
                    client_info=Implementation(name="responses-bridge", version="0.1.0"))
    async with client:
        if spec["operation"] == "list":
            tools: list[Any] = []
            cursor = None
            for _ in range(LIST_PAGES):
                page = await client.list_tools(cursor=cursor, meta=meta)
                tools += [tool.model_dump(by_alias=True, mode="json", exclude_none=True) for tool in page.tools]
                cursor = page.next_cursor
                if not cursor:
                    break
            _say(spec, {"result": tools})
        called = await client.call_tool(spec["name"], spec["arguments"], meta=meta)
        _say(spec, {"result": called.model_dump(by_alias=True, mode="json", exclude_none=True)})


def _transport(transport: dict[str, Any]) -> Any:
    if transport["type"] == "stdio":
        from mcp.client.stdio import StdioServerParameters, stdio_client

        env = {name: value for name in transport["env_vars"]
               if (value := transport["env"].get(name, os.environ.get(name))) is not None}
        server = StdioServerParameters(command=transport["command"], args=transport["args"], env=env,
                                       cwd=transport["cwd"] or None)
        return stdio_client(server, errlog=open(os.devnull, "w"))
    from mcp.shared._httpx_utils import create_mcp_http_client

    headers = dict(transport["headers"])
    if transport["url"].rstrip("/").endswith("/sse"):
        from mcp.client.sse import sse_client

        return sse_client(transport["url"], headers=headers)
    from mcp.client.streamable_http import streamable_http_client

    return streamable_http_client(transport["url"], http_client=create_mcp_http_client(headers=headers))


def _first_line(error: BaseException) -> str:
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    message = str(error).strip().split("\n", 1)[0][:300]
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
