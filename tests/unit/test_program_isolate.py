"""Programs of programmatic tool calling in their V8 isolate: deterministic replay of tool calls, no I/O of any
kind, nothing kept between programs, and every bound (time, memory, output) ending the program, not the bridge."""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from responses_bridge.run.programs.isolate import Limits, ProgramRun, ToolCall, run_program

pytest.importorskip("py_mini_racer")

PARALLEL = """
const first = await tools.lookup({city: "Oslo"});
const [a, b] = await Promise.all([tools.lookup({city: first}), tools.weather({at: Date.now()})]);
text("got", a, b);
return {r: Math.random()};
"""


def test_a_program_stops_at_its_first_unanswered_calls_and_replays_the_answered_ones() -> None:
    first = run_program(PARALLEL, ["lookup", "weather"], [], seed=7, clock_ms=1234)
    assert first.status == "suspended" and first.pending == [ToolCall("lookup", '{"city":"Oslo"}')]
    second = run_program(PARALLEL, ["lookup", "weather"], ["Bergen"], seed=7, clock_ms=1234)
    # both calls of the Promise.all are pending together, after the replayed one
    assert second.status == "suspended" and second.recorded == 1
    assert second.pending == [ToolCall("lookup", '{"city":"Bergen"}'), ToolCall("weather", '{"at":1234}')]
    done = run_program(PARALLEL, ["lookup", "weather"], ["Bergen", "sunny", "12C"], seed=7, clock_ms=1234)
    assert done.status == "completed" and done.result.startswith("got sunny 12C\n")
    again = run_program(PARALLEL, ["lookup", "weather"], ["Bergen", "sunny", "12C"], seed=7, clock_ms=1234)
    assert again.result == done.result  # the clock and Math.random are the same on every replay
    other_seed = run_program(PARALLEL, ["lookup", "weather"], ["Bergen", "sunny", "12C"], seed=8, clock_ms=1234)
    assert other_seed.result != done.result


@pytest.mark.parametrize("name", ["console", "setTimeout", "setInterval", "fetch", "XMLHttpRequest", "WebSocket",
                                  "require", "process", "Deno", "Bun", "module", "WebAssembly",
                                  "SharedArrayBuffer", "Atomics", "importScripts", "navigator", "Worker"])
def test_a_program_has_no_io_global(name: str) -> None:
    run = run_program(f"return typeof {name}", [], [])
    assert run == ProgramRun("completed", result="undefined")


def test_a_program_cannot_import_a_module_or_reach_a_file_or_the_network(tmp_path: object) -> None:
    for code in ('const fs = await import("fs"); return fs.readFileSync("/etc/passwd", "utf8")',
                 'const m = await import("https://example.com/x.js"); return String(m)',
                 'return require("child_process").execSync("id").toString()',
                 'return await fetch("http://127.0.0.1:1/")'):
        run = run_program(code, [], [])
        assert run.status == "incomplete" and "root:" not in run.result and "uid=" not in run.result, run


def test_no_connection_reaches_a_listening_socket() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.settimeout(0.5)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x.js"
        for code in (f'return String(await import("{url}"))', f'return String(await fetch("{url}"))',
                     f'const x = new XMLHttpRequest(); x.open("GET", "{url}"); x.send(); return 1'):
            assert run_program(code, [], []).status == "incomplete"
        with pytest.raises(TimeoutError):
            listener.accept()


def test_a_program_never_sees_what_another_left() -> None:
    assert run_program("globalThis.secret = 'mine'; Object.prototype.leak = 1; return 'set'", [], []).result == "set"
    assert run_program("return [typeof secret, typeof ({}).leak].join()", [], []).result == "undefined,undefined"


def test_a_program_calls_only_the_tools_it_was_given() -> None:
    run = run_program("return Object.keys(tools).join()", ["a", "b"], [])
    assert run.result == "a,b"
    forged = run_program("__program_read = null; tools.c = () => 1; return typeof tools.c", ["a"], [])
    assert forged.result == "undefined" and forged.calls == []


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")  # no late answer into a closed loop
def test_an_endless_loop_ends_the_program_not_the_bridge() -> None:
    for code in ("while (true) {}", "await tools.a({}); while (true) {}"):
        started = time.monotonic()
        run = run_program(code, ["a"], ["x"], limits=Limits(timeout=1))
        assert run.status == "incomplete" and run.limit == "time", run
        assert time.monotonic() - started < 30  # generous: it is stopped, not waited for


def test_a_huge_allocation_ends_the_program_and_the_bridge_keeps_its_memory() -> None:
    rss_before = _rss()
    growing = run_program("const a = []; while (true) a.push(new Array(1e6).fill(1.5));", [], [],
                          limits=Limits(max_memory=64 << 20))
    assert growing.status == "incomplete" and growing.limit == "memory", growing
    at_once = run_program("const b = new ArrayBuffer(2 * 1024 * 1024 * 1024); return b.byteLength", [], [])
    assert at_once.status == "incomplete" and "RangeError" in at_once.result
    text = run_program("return 'x'.repeat(2 ** 31)", [], [])
    assert text.status == "incomplete"
    assert _rss() - rss_before < 512 << 20


def test_output_past_its_bound_ends_the_program() -> None:
    run = run_program("while (true) text('x'.repeat(1000))", [], [], limits=Limits(max_output=10_000))
    assert run.status == "incomplete" and run.limit == "output" and len(run.result) < 11_000
    returned = run_program("return 'y'.repeat(20000)", [], [], limits=Limits(max_output=10_000))
    assert returned.status == "incomplete" and returned.limit == "output"


def test_a_failing_or_stuck_program_says_why() -> None:
    assert "SyntaxError" in run_program("this is not javascript(", [], []).result
    thrown = run_program("text('before'); throw new Error('boom')", [], [])
    assert thrown.status == "incomplete" and "before" in thrown.result and "boom" in thrown.result
    stuck = run_program("await new Promise(() => {})", [], [])
    assert stuck.status == "incomplete" and stuck.limit == "deadlock"


def test_programs_run_side_by_side_in_threads() -> None:
    results: list[str] = []

    def one(n: int) -> None:
        results.append(run_program(f"return JSON.stringify({n} * 2)", [], []).result)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == ["0", "2", "4", "6"]


def test_tool_arguments_are_json() -> None:
    run = run_program("await tools.t({a: [1, 'two', null]})", ["t"], [])
    assert json.loads(run.pending[0].arguments) == {"a": [1, "two", None]}


def _rss() -> int:
    with open(f"/proc/{os.getpid()}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


YEAR_MS = 365 * 86_400_000  # 1971-01-01T00:00:00Z: far from the real time, on every clock
CLOCKS = {
    "Date.now()": str(YEAR_MS),
    "new Date().getTime()": str(YEAR_MS),
    "new Date().constructor.now()": str(YEAR_MS),
    "new (new Date().constructor)().getTime()": str(YEAR_MS),
    "Object.getPrototypeOf(new Date()).constructor.now()": str(YEAR_MS),
    "Reflect.construct(Date, []).getTime()": str(YEAR_MS),
    "new (class Later extends Date {})().getTime()": str(YEAR_MS),
    "Date().slice(0, 15)": "Fri Jan 01 1971",
    "new Intl.DateTimeFormat('en', {timeZone: 'UTC', year: 'numeric'}).format()": "1971",
    "Intl.DateTimeFormat('en', {timeZone: 'UTC', year: 'numeric'}).formatToParts()[0].value": "1971",
    "new Date().toLocaleString('en', {timeZone: 'UTC'})": "1/1/1971, 12:00:00 AM",
    "Temporal.Now.instant().epochMilliseconds": str(YEAR_MS),
    "Temporal.Now.plainDateISO('UTC').toString()": "1971-01-01",
    "Temporal.Now.zonedDateTimeISO('UTC').year": "1971",
    "typeof performance": "undefined",
    "new Date(5).getTime()": "5",  # a given time is that time
    "Date.UTC(2000, 1)": "949363200000",
}


@pytest.mark.parametrize("source", list(CLOCKS))
def test_every_clock_gives_the_pinned_time(source: str) -> None:
    """Whatever way a program reads "now", it reads the clock it was given: a replay makes the same calls."""
    run = run_program(f"return String({source})", [], [], clock_ms=YEAR_MS)
    assert run.status == "completed" and run.result == CLOCKS[source], run
