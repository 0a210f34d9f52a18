"""Attribute filters: OpenAI's comparison and compound shapes, their meaning, and that no malformed filter gets
past parsing as anything but a 400."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from responses_bridge.protocol.errors import APIError
from responses_bridge.protocol.files.filters import (
    COMPARISONS,
    MAX_DEPTH,
    Comparison,
    CompoundFilter,
    matches,
    parse_filters,
)

FILE = {"author": "ada", "year": 2021, "score": 4.5, "draft": False, "lang": "en"}


def passes(filter_json: dict[str, Any], attributes: dict[str, Any] = FILE) -> bool:
    return matches(parse_filters(filter_json), attributes)


@pytest.mark.parametrize(("filter_json", "expected"), [
    ({"type": "eq", "key": "author", "value": "ada"}, True),
    ({"type": "eq", "key": "author", "value": "bob"}, False),
    ({"type": "ne", "key": "author", "value": "bob"}, True),
    ({"type": "gt", "key": "year", "value": 2020}, True),
    ({"type": "gt", "key": "year", "value": 2021}, False),
    ({"type": "gte", "key": "year", "value": 2021}, True),
    ({"type": "lt", "key": "score", "value": 5}, True),
    ({"type": "lte", "key": "score", "value": 4.5}, True),
    ({"type": "lt", "key": "author", "value": "bob"}, True),  # strings order as strings
    ({"type": "gt", "key": "author", "value": 3}, False),  # a string is never greater than a number
    ({"type": "in", "key": "lang", "value": ["fr", "en"]}, True),
    ({"type": "nin", "key": "lang", "value": ["fr", "en"]}, False),
    ({"type": "eq", "key": "draft", "value": False}, True),
    ({"type": "eq", "key": "draft", "value": 0}, False),  # booleans are not numbers
    ({"type": "gt", "key": "draft", "value": -1}, False),
    ({"type": "eq", "key": "year", "value": 2021.0}, True),
    ({"type": "eq", "key": "missing", "value": "x"}, False),
    ({"type": "ne", "key": "missing", "value": "x"}, True),
    ({"type": "nin", "key": "missing", "value": ["x"]}, True),
    ({"type": "and", "filters": [{"type": "eq", "key": "author", "value": "ada"},
                                 {"type": "gte", "key": "year", "value": 2022}]}, False),
    ({"type": "or", "filters": [{"type": "eq", "key": "author", "value": "bob"},
                                {"type": "and", "filters": [{"type": "eq", "key": "lang", "value": "en"}]}]}, True),
])
def test_meaning(filter_json: dict[str, Any], expected: bool) -> None:
    assert passes(filter_json) is expected


def test_parsed_shape() -> None:
    parsed = parse_filters({"type": "or", "filters": [{"type": "in", "key": "k", "value": ["a", 1]}]})
    assert parsed == CompoundFilter("or", (Comparison("in", "k", ("a", 1)),))


@pytest.mark.parametrize(("filter_json", "param"), [
    ([], "filters"),
    ({"type": "xor", "filters": []}, "filters.type"),
    ({"key": "a", "value": 1}, "filters.type"),
    ({"type": "eq", "value": 1}, "filters.key"),
    ({"type": "eq", "key": "", "value": 1}, "filters.key"),
    ({"type": "eq", "key": "a"}, "filters.value"),
    ({"type": "eq", "key": "a", "value": None}, "filters.value"),
    ({"type": "eq", "key": "a", "value": {"x": 1}}, "filters.value"),
    ({"type": "eq", "key": "a", "value": [1]}, "filters.value"),
    ({"type": "gt", "key": "a", "value": True}, "filters.value"),
    ({"type": "gt", "key": "a", "value": float("nan")}, "filters.value"),
    ({"type": "in", "key": "a", "value": []}, "filters.value"),
    ({"type": "in", "key": "a", "value": "abc"}, "filters.value"),
    ({"type": "in", "key": "a", "value": [True]}, "filters.value"),
    ({"type": "eq", "key": "a", "value": 1, "extra": 2}, "filters"),
    ({"type": "and", "filters": []}, "filters.filters"),
    ({"type": "and"}, "filters.filters"),
    ({"type": "and", "filters": [{"type": "eq", "key": "a", "value": 1}, {"type": "eq", "key": 5, "value": 1}]},
     "filters.filters[1].key"),
    ({"type": "or", "filters": [{"type": "eq", "key": "a", "value": 1}], "key": "a"}, "filters"),
])
def test_invalid_filters_are_400_naming_the_place(filter_json: Any, param: str) -> None:
    with pytest.raises(APIError) as caught:
        parse_filters(filter_json)
    assert caught.value.status == 400 and caught.value.param == param


def test_nesting_and_size_are_bounded() -> None:
    deep: dict[str, Any] = {"type": "eq", "key": "a", "value": 1}
    for _ in range(MAX_DEPTH + 1):
        deep = {"type": "and", "filters": [deep]}
    with pytest.raises(APIError) as caught:
        parse_filters(deep)
    assert caught.value.status == 400
    wide = {"type": "or", "filters": [{"type": "eq", "key": "a", "value": n} for n in range(1000)]}
    with pytest.raises(APIError):
        parse_filters(wide)


def test_the_param_name_is_the_callers() -> None:
    with pytest.raises(APIError) as caught:
        parse_filters({"type": "eq", "key": 1, "value": 1}, param="tools[0].filters")
    assert caught.value.param == "tools[0].filters.key"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=20)
keys = st.sampled_from(sorted(COMPARISONS | {"and", "or", "xor", ""}))
filterish = st.recursive(
    st.fixed_dictionaries({"type": keys}, optional={"key": json_values | st.text(max_size=3),
                                                    "value": json_values}),
    lambda children: st.fixed_dictionaries({"type": keys}, optional={"filters": st.lists(children, max_size=3)
                                                                     | json_values}),
    max_leaves=10) | json_values


@settings(max_examples=400, deadline=None)
@given(filterish, st.dictionaries(st.sampled_from(["a", "b", "", "key"]), json_values, max_size=4))
def test_any_json_is_a_filter_or_a_400_never_another_failure(value: Any, attributes: dict[str, Any]) -> None:
    try:
        parsed = parse_filters(value)
    except APIError as exc:
        assert exc.status == 400 and exc.param is not None and exc.param.startswith("filters")
        return
    assert isinstance(matches(parsed, attributes), bool)  # a parsed filter always evaluates


scalars = st.one_of(st.booleans(), st.integers(-5, 5), st.floats(-5, 5, allow_nan=False), st.sampled_from("xyz"))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(COMPARISONS - {"in", "nin"})), scalars, st.one_of(st.none(), scalars))
def test_ne_is_the_negation_of_eq_and_orders_agree(kind: str, value: Any, actual: Any) -> None:
    attributes = {} if actual is None else {"k": actual}
    eq = passes({"type": "eq", "key": "k", "value": value}, attributes)
    assert passes({"type": "ne", "key": "k", "value": value}, attributes) is (not eq)
    if not isinstance(value, bool):  # in/nin take strings and numbers only
        assert passes({"type": "in", "key": "k", "value": [value]}, attributes) is eq
        assert passes({"type": "nin", "key": "k", "value": [value]}, attributes) is (not eq)
    if kind in ("gt", "lt") and not isinstance(value, bool):
        strict = passes({"type": kind, "key": "k", "value": value}, attributes)
        loose = passes({"type": kind + "e", "key": "k", "value": value}, attributes)
        assert loose is (strict or (eq and not isinstance(actual, bool)))
