"""The shared pools' one rule and the memory budget's mechanics: service over time (``share.py``, ``tenure.py``),
unit pools (``slots.py``), the two cases that still end held work (``reclaim.py``, ``preemption.py``), what a
request will hold, judged before it holds it (``memory_charge.py``), how much memory the process may use
(``memory_limits.py``, ``program_memory.py``) and giving memory back (``allocator.py``).

Imports observability, the process's periodic jobs, protocol's errors and the leaves; the sandbox, the store, the
run and the services build on it.
"""
