"""The fake model writes a program when the message holds JavaScript and ``program`` is offered."""

from __future__ import annotations

import json

from responses_bridge.demo.fake_programs import requested_program, wanted_call

PROGRAM = {"name": "program", "parameters": {"type": "object", "properties": {"code": {"type": "string"}}}}
OTHER = {"name": "lookup", "parameters": {}}


def test_a_js_line_or_fenced_block_is_the_program() -> None:
    assert requested_program("please\njs: return await tools.a({})") == "return await tools.a({})"
    assert requested_program("```javascript\nconst x = 1;\nreturn x;\n```") == "const x = 1;\nreturn x;"
    assert requested_program("I went for a js: mid-sentence") is None
    assert requested_program("```python\nprint(1)\n```") is None


def test_program_is_called_only_when_offered_and_allowed() -> None:
    called = wanted_call({}, [OTHER, PROGRAM], "js: return 1")
    assert called is not None and called[0] == "program" and json.loads(called[1]) == {"code": "return 1"}
    assert wanted_call({}, [OTHER], "js: return 1") is None
    assert wanted_call({"tool_choice": "none"}, [PROGRAM], "js: return 1") is None
    assert wanted_call({"tool_choice": {"type": "function", "function": {"name": "lookup"}}}, [OTHER, PROGRAM],
                       "js: return 1") is None
    assert wanted_call({}, [PROGRAM], "no code here") is None
