"""The benchmarks, one module each (``scripts/bench NAME``): what the bridge costs beside a plain request or its
floor, as ratios measured in one run — Agents sessions, the agent-sandbox backend, cgroups, the code interpreter,
desktops, the egress proxy, fairness, retrieval, the store, streams, instructions per request. ``latency/`` is
``responses-bridge bench`` (``scripts/bench latency``).
"""
