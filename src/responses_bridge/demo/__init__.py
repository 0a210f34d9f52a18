"""Tooling kept apart from the serving code: the demo, the benchmark, the fake upstream and process helpers.

The sidecar never imports this package; the ``demo``, ``bench`` and ``fake-upstream`` commands and the tests do.
Installed is only what the ``demo`` and ``fake-upstream`` commands import; what only tests and benchmarks use is in
``checkout/``, which the wheel leaves out.
"""
