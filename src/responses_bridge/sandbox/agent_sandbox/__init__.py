"""The ``agent-sandbox`` sandbox backend: calls in pods claimed from kubernetes-sigs/agent-sandbox warm pools
(backend.py), each call's files and processes through the pod's runtime APIs (session.py, transfer.py, process.py).
Needs the ``agent-sandbox`` extra; refused.py is what runs in its place without it."""
