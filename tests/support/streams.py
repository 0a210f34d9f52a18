"""A streamed response held open by a test: the fake upstream stalls after its first chunk (``[stall_after=…]`` in
the input), so the request keeps whatever it holds (a tenant's place, the memory budget) while the test goes on."""

from __future__ import annotations

from typing import Any

import openai


async def held_stream(client: openai.AsyncOpenAI, model: str, text: str) -> Any:
    """The stream, once its first text delta has arrived."""
    stream = await client.responses.create(model=model, input=text, stream=True)
    async for event in stream:
        if event.type == "response.output_text.delta":
            return stream
    raise AssertionError("the held stream ended early")
