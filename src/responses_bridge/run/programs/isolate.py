"""One program of programmatic tool calling, run in a fresh V8 isolate (the ``programs`` extra: ``mini-racer``).

A program is the JavaScript a model writes to call the request's tools: top-level ``await``, the tools as
``tools.<name>(args)`` (each a Promise of the tool's output, a string), ``text(...)`` to add to its result. Its
isolate is made for it and closed after it, so nothing one program leaves behind is seen by another; the isolate
is a bare V8 context (no Node, no browser): the few non-standard globals the embedding adds (``console``,
``setTimeout``, ``WebAssembly``, ``SharedArrayBuffer``/``Atomics``, weak references) are removed first, and the
clock and ``Math.random`` are pinned so the same program makes the same calls every time it runs. Every way to
read "now" reads the pinned clock: ``Date`` (constructed without arguments, called as a function, its ``now``,
also reached as ``new Date().constructor``), ``Intl.DateTimeFormat``'s ``format``/``formatToParts`` of no date,
and ``Temporal.Now``; there is no ``performance``.

That determinism is how a program waits for a client's tool: it never stays in memory between requests. Each
run starts the program again from its first line with the results recorded so far (``results``, in call order);
a call beyond them is *pending*, its Promise never settles, and once the program has no more work it can do the
run ends ``suspended`` with the pending calls (all those issued in parallel, ``Promise.all``). When their outputs
arrive, the next run replays the recorded calls, which must be the same (``replay.py`` checks it), and goes on.

Bounds, each ending the program as ``incomplete`` with the limit named in its result (never an exception out of
here, never the bridge's memory or time): ``timeout`` seconds of JavaScript per run (an endless loop, also one
reached after an ``await``), ``max_memory`` bytes of V8 heap (a large allocation fails inside V8, a growing
heap ends the program), ``max_output`` characters of result.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

MISSING_EXTRA = "Programmatic tool calling needs the embedded V8: pip install 'responses-bridge[programs]'"

DEFAULT_TIMEOUT = 5.0
DEFAULT_MAX_MEMORY = 128 << 20
DEFAULT_MAX_OUTPUT = 64 << 10
MAX_CALLS = 1000
"""Tool calls one program may make in all (recorded and new): each is an item of the response."""

Status = Literal["completed", "suspended", "incomplete"]


class ProgramsUnavailable(RuntimeError):
    """The ``programs`` extra is not installed: the request that needs it is refused with this one line."""


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One call a program made: the tool's name and its arguments as JSON text."""

    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Limits:
    timeout: float = DEFAULT_TIMEOUT
    max_memory: int = DEFAULT_MAX_MEMORY
    max_output: int = DEFAULT_MAX_OUTPUT


@dataclass(slots=True)
class ProgramRun:
    """What one run of a program came to. ``calls``: every call it made, the replayed ones first; the last
    ``len(calls) - recorded`` are pending when ``suspended``. ``limit``: which bound ended it (``incomplete``)."""

    status: Status
    result: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    recorded: int = 0
    limit: str | None = None
    answer_bytes: int = 0  # the worker's answer frame, what the calls and result were parsed from (pool.py)
    let_go: Any = None  # gives back the memory budget the answer holds while it is kept (host.py), or None

    def release(self) -> None:
        """The run's answer is let go: what it held of the memory budget comes back (idempotent)."""
        let_go, self.let_go = self.let_go, None
        if let_go is not None:
            let_go()

    @property
    def pending(self) -> list[ToolCall]:
        return self.calls[self.recorded:] if self.status == "suspended" else []


_PRELUDE = r"""
(() => {
  for (const name of ["console", "setTimeout", "clearTimeout", "setInterval", "clearInterval", "__timer_manager",
                      "WebAssembly", "SharedArrayBuffer", "Atomics", "WeakRef", "FinalizationRegistry"]) {
    try { delete globalThis[name]; } catch (e) {}
    if (name in globalThis) {
      try { Object.defineProperty(globalThis, name, {value: undefined, writable: false, configurable: false}); }
      catch (e) { globalThis[name] = undefined; }
    }
  }
  const config = __CONFIG__;
  const clock = config.clock;
  let seed = config.seed >>> 0;
  Math.random = () => {  // mulberry32: the same sequence on every replay
    seed = (seed + 0x6D2B79F5) >>> 0;
    let t = seed;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  // every source of "now" gives the pinned clock: Date (as a constructor without arguments, as a function, its
  // now(), also reached as new Date().constructor), Intl's formatting of "now", and Temporal.Now
  const RealDate = Date;
  const pinnedNow = () => clock;
  const PinnedDate = new Proxy(RealDate, {
    construct(target, args, newTarget) {
      return Reflect.construct(target, args.length ? args : [clock], newTarget === PinnedDate ? target : newTarget);
    },
    apply() { return new RealDate(clock).toString(); },
    get(target, key) { return key === "now" ? pinnedNow : Reflect.get(target, key); },
  });
  Object.defineProperty(RealDate, "now", {value: pinnedNow, writable: false, configurable: false});
  Object.defineProperty(RealDate.prototype, "constructor", {value: PinnedDate, writable: false, configurable: false});
  globalThis.Date = PinnedDate;
  const pinFormat = (proto, key) => {
    const described = Object.getOwnPropertyDescriptor(proto, key);
    if (!described) return;
    if (described.get) {  // Intl.DateTimeFormat.prototype.format: a getter of a bound function
      const get = described.get;
      Object.defineProperty(proto, key, {configurable: false, get() {
        const format = get.call(this);
        return (date) => format(date === undefined ? clock : date);
      }});
    } else if (typeof described.value === "function") {
      const method = described.value;
      Object.defineProperty(proto, key, {writable: false, configurable: false, value: function (date, ...rest) {
        return method.call(this, date === undefined ? clock : date, ...rest);
      }});
    }
  };
  pinFormat(Intl.DateTimeFormat.prototype, "format");
  pinFormat(Intl.DateTimeFormat.prototype, "formatToParts");
  if (typeof Temporal === "object" && Temporal !== null) {
    const zone = () => new Intl.DateTimeFormat().resolvedOptions().timeZone;
    const instant = () => Temporal.Instant.fromEpochMilliseconds(clock);
    const zoned = (tz) => instant().toZonedDateTimeISO(tz === undefined ? zone() : tz);
    const now = Object.freeze({
      instant, timeZoneId: zone, zonedDateTimeISO: zoned,
      plainDateTimeISO: (tz) => zoned(tz).toPlainDateTime(), plainDateISO: (tz) => zoned(tz).toPlainDate(),
      plainTimeISO: (tz) => zoned(tz).toPlainTime(),
    });
    Object.defineProperty(Temporal, "Now", {value: now, writable: false, configurable: false});
  }
  const {results, names, maxOutput, maxCalls} = config;
  const stringify = JSON.stringify;  // the program may replace the global one: the bridge's reads do not use it
  const state = {done: false, error: null, result: null, over: false, calls: [], output: ""};
  const settle = (error, value) => {
    if (state.done) return;
    state.done = true;
    if (error !== null) { state.error = String(error && error.stack || error); return; }
    try { state.result = value === undefined ? null : (typeof value === "string" ? value : stringify(value)); }
    catch (e) { state.result = String(value); }
  };
  Object.defineProperty(globalThis, "__program_settle", {value: settle});  // callable, not replaceable
  Object.defineProperty(globalThis, "__program_read", {value: () => stringify(state)});
  const never = new Promise(() => {});
  const tools = {};
  for (const name of names) {
    tools[name] = (args) => {
      if (state.calls.length >= maxCalls) { state.over = "calls"; throw new Error("too many tool calls"); }
      const index = state.calls.length;
      state.calls[index] = [name, String(stringify(args === undefined ? {} : args))];
      return index < results.length ? Promise.resolve(results[index]) : never;
    };
  }
  Object.freeze(tools);
  Object.defineProperty(globalThis, "tools", {value: tools});
  Object.defineProperty(globalThis, "text", {value: (...parts) => {
    const piece = parts.map((part) => typeof part === "string" ? part : String(stringify(part))).join(" ");
    if (state.output.length + piece.length > maxOutput) {
      state.over = "output";
      throw new Error("the program's output is over its limit");
    }
    state.output += piece;
  }});
})();
"""

_START = r"""
(async () => {
__CODE__
})().then((value) => __program_settle(null, value), (error) => __program_settle(error, undefined));
"""

_READ = "__program_read()"


def run_program(code: str, tool_names: list[str], results: list[str], *, seed: int = 0, clock_ms: int = 0,
                limits: Limits = Limits()) -> ProgramRun:
    """Run ``code`` from its start with ``results`` as the outputs of its first calls (blocking: call it from a
    worker thread). Never raises for anything the program does; :class:`ProgramsUnavailable` without the extra."""
    try:
        from py_mini_racer import JSEvalException, JSOOMException, JSTimeoutException, mini_racer
    except ImportError as error:
        from ...extras import explain  # the extra not installed, or installed and its import broken: which

        raise ProgramsUnavailable(explain("programs", "py_mini_racer", error, MISSING_EXTRA, public=True)) from None
    config = {"clock": int(clock_ms), "seed": int(seed) & 0xFFFFFFFF, "results": results, "names": tool_names,
              "maxOutput": limits.max_output, "maxCalls": MAX_CALLS}
    prelude = _PRELUDE.replace("__CONFIG__", json.dumps(config))
    deadline = time.monotonic() + limits.timeout
    with mini_racer(_event_loop()) as racer:  # a new isolate, freed on leaving
        racer.set_hard_memory_limit(limits.max_memory)
        try:
            racer.eval(prelude, timeout_sec=limits.timeout)
            racer.eval(_START.replace("__CODE__", code), timeout_sec=max(0.01, deadline - time.monotonic()))
            # queued behind the program's microtasks: it returns once the program can go no further (or times out)
            raw = racer.eval(_READ, timeout_sec=max(0.01, deadline - time.monotonic()))
        except JSTimeoutException:
            return _ended("time", f"the program ran past its time limit ({limits.timeout:g} s)")
        except JSOOMException:
            return _ended("memory", f"the program used more than its memory limit ({limits.max_memory >> 20} MiB)")
        except JSEvalException as exc:  # a syntax error: the program never started
            if racer.was_hard_memory_limit_reached():
                return _ended("memory", f"the program used more than its memory limit ({limits.max_memory >> 20} MiB)")
            return ProgramRun("incomplete", result=_first_lines(str(exc)), limit=None)
        return _read_state(json.loads(str(raw)), tool_names, len(results), limits)


_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def _event_loop() -> asyncio.AbstractEventLoop:
    """The one event loop (in a thread of its own) that relays every isolate's answers to the thread waiting for
    them. Shared and never stopped: a stopped program's late answer lands in a running loop that ignores it, not in
    the closed loop of a per-program thread ("Exception ignored … Event loop is closed" for every timeout)."""
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="program-isolates", daemon=True).start()
            _loop = loop
        return _loop


def _ended(limit: str, message: str) -> ProgramRun:
    return ProgramRun("incomplete", result=f"Program stopped: {message}.", limit=limit)


def _read_state(state: dict[str, Any], names: list[str], recorded: int, limits: Limits) -> ProgramRun:
    calls = [ToolCall(str(name), str(arguments)) for name, arguments in state.get("calls") or ()][:MAX_CALLS]
    # the program can write only through tools.<name>, but a name it was not given is never passed on
    calls = [call for call in calls if call.name in names]
    output = str(state.get("output") or "")
    over = state.get("over")
    if over == "output":
        return ProgramRun("incomplete", result=output[:limits.max_output]
                          + f"\nProgram stopped: its output passed its limit ({limits.max_output} characters).",
                          calls=calls, recorded=recorded, limit="output")
    if over == "calls":
        return ProgramRun("incomplete", result=f"Program stopped: more than {MAX_CALLS} tool calls.", calls=calls,
                          recorded=recorded, limit="calls")
    if not state.get("done"):
        if len(calls) > recorded:
            return ProgramRun("suspended", result=output, calls=calls, recorded=recorded)
        return ProgramRun("incomplete", result=output + "Program stopped: it awaits something that never comes "
                                                         "(no tool call is pending).", calls=calls,
                          recorded=recorded, limit="deadlock")
    if state.get("error") is not None:
        return ProgramRun("incomplete", result=(output + "\n" if output else "") + _first_lines(state["error"]),
                          calls=calls, recorded=recorded)
    value = state.get("result")
    if value is not None:
        value = str(value)
        output = f"{output}\n{value}" if output else value
    if len(output) > limits.max_output:
        return ProgramRun("incomplete", result=output[:limits.max_output]
                          + f"\nProgram stopped: its output passed its limit ({limits.max_output} characters).",
                          calls=calls, recorded=recorded, limit="output")
    return ProgramRun("completed", result=output, calls=calls, recorded=recorded)


def _first_lines(text: str, lines: int = 6) -> str:
    return "\n".join(text.splitlines()[:lines])[:2000]
