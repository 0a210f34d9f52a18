"""The console's views of stored items (adapters/http/console/items.py) on any shape a store may hold: every kind it
knows, with fields of any JSON type, becomes a view of plain strings without raising (a page never fails on an odd
item), masks credential-shaped text, never shows sealed state, and shows an image only as a raster ``data:`` URL."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from responses_bridge.adapters.http.console.items import _BUILDERS, pretty, summary_text, tools_used, view

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                                 max_size=4), max_leaves=20)
FIELDS = st.sampled_from(["content", "summary", "arguments", "output", "outputs", "action", "results", "code",
                          "name", "status", "role", "result", "request", "title", "command", "annotations",
                          "encrypted_content", "tool_calls", "image_url", "exit_code", "queries"])


@settings(max_examples=300, deadline=None)
@given(kind=st.sampled_from([*sorted(_BUILDERS), "unknown_kind"]), fields=st.dictionaries(FIELDS, JSON, max_size=6))
def test_any_item_of_any_shape_becomes_a_view_of_strings(kind: str, fields: dict[str, Any]) -> None:
    shown = view({**fields, "type": kind})
    assert isinstance(shown.title, str) and all(isinstance(text, str) for text in shown.text)
    assert all(isinstance(label, str) and isinstance(block, str) for label, block in shown.blocks)
    assert all(image.startswith("data:image/") for image in shown.images)
    response = {"output": [{**fields, "type": kind}], "tools": [fields], "instructions": fields.get("code")}
    assert isinstance(summary_text(response), str)
    assert all(isinstance(name, str) for name in tools_used(response))


def test_secrets_and_sealed_state_are_not_shown() -> None:
    call = view({"type": "function_call", "name": "f", "arguments": '{"api_key": "sk-abcdefghijklmnopqrstuvwx", '
                 '"note": "use rbk_0123456789ab_' + "A" * 43 + '"}'})
    shown = "\n".join(block for _, block in call.blocks)
    assert "sk-abcdefghijklmnopqrstuvwx" not in shown and "rbk_0123456789ab_" + "A" * 43 not in shown
    reasoning = view({"type": "reasoning", "summary": [{"type": "summary_text", "text": "thought"}],
                      "encrypted_content": "rb1.SECRETSEALED"})
    assert reasoning.text == ["thought"] and "SECRETSEALED" not in str(reasoning)
    assert "SECRETSEALED" not in pretty({"nested": {"encrypted_content": "rb1.SECRETSEALED"}})


def test_an_image_is_shown_only_as_a_raster_data_url() -> None:
    shot = "data:image/png;base64,iVBORw0KGgo="
    shown = view({"type": "message", "role": "user", "content": [
        {"type": "input_image", "image_url": shot}, {"type": "input_image", "image_url": "https://x.example/a.png"},
        {"type": "input_image", "image_url": "data:image/svg+xml;base64,PHN2Zz4="}]})
    assert shown.images == [shot]
    assert [block for _, block in shown.blocks] == ["https://x.example/a.png", "data:image/svg+xml;base64,PHN2Zz4="]
