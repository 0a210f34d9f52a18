"""The vendored CRDs' CEL rules (``x-kubernetes-validations``), evaluated offline as the API server evaluates them
on a create: first the schema's defaults filled in (structural defaulting comes before validation: a
``backendRef`` without ``kind`` is a ``Service`` by then), then every rule at every node the object has, with
``self`` that node's value. Transition rules (those reading ``oldSelf``) judge updates only and are skipped. A rule
that does not evaluate to true is an error, with the CRD's message; one that cannot be evaluated is an error too
(nothing passes unchecked). cel-python (``celpy``) is the evaluator: it has CEL's standard functions, ``duration``
and ``timestamp`` among them, which every rule these CRDs put on the rendered objects uses."""

from __future__ import annotations

import copy
import json
from functools import cache
from typing import Any

import celpy

from tests.support.kube import crd_schemas


@cache
def _program(rule: str) -> Any:
    environment = celpy.Environment()
    return environment.program(environment.compile(rule))


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """``value`` with every missing property that has a schema ``default`` set to it, at every depth (in place)."""
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key, sub in properties.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
        for key, item in value.items():
            below = properties.get(key, schema.get("additionalProperties"))
            if isinstance(below, dict):
                with_defaults(below, item)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            with_defaults(schema["items"], item)
    return value


def _rules(schema: dict[str, Any], value: Any, path: str, found: list[tuple[str, dict[str, Any], Any]]) -> None:
    for rule in schema.get("x-kubernetes-validations") or ():
        found.append((path, rule, value))
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key, item in value.items():
            below = properties.get(key, schema.get("additionalProperties"))
            if isinstance(below, dict):
                _rules(below, item, f"{path}.{key}", found)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            _rules(schema["items"], item, f"{path}[{index}]", found)


def cel_results(obj: dict[str, Any]) -> tuple[int, list[str]]:
    """How many rules were evaluated on ``obj``, and what the failed ones say (``path: message``)."""
    schema = crd_schemas()[(obj["apiVersion"], obj["kind"])]
    found: list[tuple[str, dict[str, Any], Any]] = []
    _rules(schema, with_defaults(schema, json.loads(json.dumps(obj))), obj["kind"], found)
    evaluated, errors = 0, []
    for path, rule, value in found:
        if "oldSelf" in rule["rule"]:
            continue
        try:
            result = _program(rule["rule"]).evaluate({"self": celpy.json_to_cel(value)})
        except (celpy.CELParseError, celpy.CELEvalError, TypeError, ValueError) as exc:  # not whole: an error
            errors.append(f"{path}: {rule['rule']!r} could not be evaluated: {exc}")
            continue
        evaluated += 1
        if not isinstance(result, celpy.celtypes.BoolType) or not result:
            errors.append(f"{path}: {rule.get('message') or rule['rule']}")
    return evaluated, errors
