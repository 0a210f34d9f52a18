"""The one replacer of byte sequences across a stream's cuts (net/stream_replace.py): however the pieces are cut, the
output is what replacing in the whole would give; what is held back is at most a proper beginning of a sequence
(none when the stream ends in anything else); a sequence inside another is written over whole; and a stream made to
look like beginnings everywhere is held, not checked byte by byte."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from responses_bridge.net import stream_replace
from responses_bridge.net.stream_replace import EXACT_CHECKS, LEAD, Sequences, StreamReplace


def _whole(pairs: dict[bytes, bytes], data: bytes) -> bytes:
    """The reference: from each position on, the match that ends first (the shortest of those ending there)
    written over, then on after it; a set with one sequence inside another takes the longest at the leftmost."""
    contained = any(a != b and a in b for a in pairs for b in pairs)
    out, at = [], 0
    while True:
        found = [(start, start + len(old), old) for old in pairs if (start := data.find(old, at)) >= 0]
        if not found:
            return b"".join([*out, data[at:]])
        if contained:
            start = min(start for start, _, _ in found)
            _, end, old = max((item for item in found if item[0] == start), key=lambda item: item[1])
        else:
            start, end, old = min(found, key=lambda item: (item[1], -item[0]))
        out += [data[at:start], pairs[old]]
        at = end


def _fed(replace: StreamReplace, data: bytes, cuts: list[int]) -> bytes:
    out, start = [], 0
    for cut in [*sorted({cut % (len(data) + 1) for cut in cuts}), len(data)]:
        out.append(replace.feed(data[start:cut]))
        start = cut
    return b"".join(out) + replace.end()


olds = st.lists(st.binary(min_size=1, max_size=40).map(lambda raw: bytes(b"ab"[byte % 2] for byte in raw)),
                min_size=1, max_size=5)


@given(olds, st.binary(max_size=400), st.lists(st.integers(min_value=0, max_value=500), max_size=30))
def test_every_cut_gives_what_the_whole_gives(found: list[bytes], raw: bytes, cuts: list[int]) -> None:
    pairs = {old: b"<" + old.upper() + b">" for old in found}
    data = bytes(b"abc"[byte % 3] for byte in raw)  # two letters of the sequences and one of neither
    assert _fed(StreamReplace(pairs.items()), data, cuts) == _whole(pairs, data)


def test_what_is_held_back_is_only_a_proper_beginning() -> None:
    secret = b"s3cret-value-0123456789-long-enough"
    replace = StreamReplace([(secret, b"#" * len(secret))])
    assert replace.feed(b"hello s3cret-val") == b"hello "
    assert replace.feed(b"ue-0123456789-long-enough and on") == b"#" * len(secret) + b" and on"
    assert replace.feed(b"an SSE event ends so\n\n") == b"an SSE event ends so\n\n"
    assert replace.feed(b"s3cret-value-0123456789-long-enoug") == b"" and replace.end() == secret[:-1]


def test_a_sequence_inside_another_is_written_over_whole() -> None:
    replace = StreamReplace([(b"inner-secret", b"I" * 12), (b"outer-inner-secret-tail", b"O" * 23)])
    assert _fed(replace, b"x outer-inner-secret-tail y inner-secret z", [9, 14]) == \
        b"x " + b"O" * 23 + b" y " + b"I" * 12 + b" z"


def test_equal_sequences_are_one() -> None:
    replace = StreamReplace([(b"same-value", b"first-mask"), (b"same-value", b"other-mask")])
    assert replace.feed(b"a same-value b") + replace.end() == b"a first-mask b"


def test_a_stream_of_false_beginnings_is_held_after_a_few_checks() -> None:
    """Every position begins with a sequence's lead but none goes on as one: after EXACT_CHECKS positions checked
    whole, the rest is held from the next one (never more than the longest sequence less a byte)."""
    old = b"L" * LEAD + b"x" * 100
    sequences = Sequences([(old, b"#" * len(old))])
    data = b"L" * 5000
    assert sequences.cut(data, 0) == len(data) - len(old) + 1 + EXACT_CHECKS
    replace = sequences.stream()
    assert replace.feed(data) == data[:len(data) - len(old) + 1 + EXACT_CHECKS]
    assert replace.feed(b"\n") + replace.end() == data[len(data) - len(old) + 1 + EXACT_CHECKS:] + b"\n"


def test_no_sequences_pass_everything_on() -> None:
    replace = StreamReplace([])
    assert replace.feed(b"anything") == b"anything" and replace.end() == b""


def test_sequences_over_several_automata_are_written_over_as_over_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past GROUP_BYTES the sequences are split over automata built apart: a stream cut anywhere comes out as with
    one automaton, each sequence written over, one inside another written over whole."""
    pairs = [(b"alpha-secret-one", b"AAAAAAAAAAAAAAAA"), (b"bravo-secret-two!", b"BBBBBBBBBBBBBBBBB"),
             (b"secret", b"SSSSSS"), (b"charlie-3", b"CCCCCCCCC")]
    raw = b"x alpha-secret-one y bravo-secret-two! z secret charlie-3 alpha-secret-on"
    whole = StreamReplace(pairs)
    expected = whole.feed(raw) + whole.end()
    monkeypatch.setattr(stream_replace, "GROUP_BYTES", 20)
    grouped = Sequences(pairs)
    assert len(grouped._automata) == 3
    for cut in range(1, len(raw)):
        stream = grouped.stream()
        assert stream.feed(raw[:cut]) + stream.feed(raw[cut:]) + stream.end() == expected
    assert expected == b"x AAAAAAAAAAAAAAAA y BBBBBBBBBBBBBBBBB z SSSSSS CCCCCCCCC alpha-SSSSSS-on"
