"""Development tooling, in a source checkout only: the benchmarks (``bench/``, run as ``scripts/bench NAME``), the
crash probe (``crash_probe/``), the renderers of the generated docs and deployment examples (``docs/``), and the
doubles only tests and benchmarks start (``fakes/``: a Kubernetes API for agent-sandbox's kinds, its cluster,
stand-in pods; ``process_memory.py``: /proc readings of a process).

Outside ``src/``, so the wheel never holds it (pyproject.toml's package find looks in ``src/`` alone). It imports the
package freely; no module of the package imports it (the ``bench`` command's loader in cli.py aside). Importable with
the checkout's root on ``sys.path``: pytest's ``pythonpath`` and the scripts set it.
"""
