"""Names of the processes that share a database: who holds a background run's lease or an ingestion claim."""

from __future__ import annotations

import os
import socket
import uuid


def new_owner_id() -> str:
    """This process's name in ``background_runs.owner``: the host (the pod), the process and a random part, so a
    restarted process never takes over its predecessor's leases."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
