"""The doubles only tests and benchmarks start: a Kubernetes API server for agent-sandbox's four kinds and its
controller (``kube.py``), a cluster of it in one process (``cluster.py``), stand-in pods on this machine that
serve the sandbox runtime's real APIs (``standin_pod.py``), and simulated vLLM replicas with vLLM's prefix cache,
queues and metrics for ``scripts/bench routing`` (``vllm_replica.py``, ``vllm_cache.py``, ``vllm_model.py``).
"""
