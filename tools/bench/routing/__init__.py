"""``scripts/bench routing``: the bridge's replica picking on simulated vLLM replicas (``__main__.py``)."""
