"""What the product runs that is not serving: ``responses-bridge demo`` (``command.py``: Envoy, the sidecar and the
fake model on this machine; ``banner.py``: what it prints), the fake model ``responses-bridge fake-upstream`` serves
(``fake_server.py`` over ``fake_upstream.py``, its Responses, Images and Embeddings APIs, backends' quirks, and the
ways it plays code, programs and subagents), and the child processes the demo, the tests and the benchmarks
start (``procs.py``).

The sidecar never imports it; cli.py does, for those two commands. It may import the settings, Envoy's
configuration, the sandbox's checks and the rooms below them. What only tests and benchmarks use is not here but in
the checkout's ``tools/`` (tests/unit/test_installed_tooling.py keeps it so).
"""
