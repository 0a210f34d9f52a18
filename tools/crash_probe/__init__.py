"""``scripts/crash-probe``: rounds of ``kill -9`` (or a database outage, or a clock ahead) under load, then a count
of every accepted run's end (``probe.py``), the faults it strikes (``faults.py``) and its Agents session that waits
on the client (``waiting.py``).
"""
