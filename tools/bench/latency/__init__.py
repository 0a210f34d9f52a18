"""``responses-bridge bench`` (``scripts/bench latency``): what the bridge adds over calling the upstream directly —
its requests, the floors (a passthrough proxy, a processor that changes nothing), CPU and ext_proc messages per
request and chunk, memory for large requests, a soak, the report, and the A/B of two trees (``ab.py``) each
installed as a wheel would be (``install.py``).
"""
