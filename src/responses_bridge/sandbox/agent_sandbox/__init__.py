"""The ``agent-sandbox`` sandbox backend: calls in pods claimed from kubernetes-sigs/agent-sandbox warm pools
(backend.py), each call's files and processes through the pod's runtime APIs (session.py, transfer.py, process.py).
Needs the ``agent-sandbox`` extra; refused.py is what runs in its place without it."""

MISSING_EXTRA = ("RESPONSES_BRIDGE_CODE_SANDBOX_BACKEND=agent-sandbox needs the agent-sandbox extra, which is not "
                 "installed: pip install 'responses-bridge[agent-sandbox]'")
"""The one line that says so, at start-up (backends.py) and in ``doctor`` (checks.py); here, where importing it
needs none of the extra."""
