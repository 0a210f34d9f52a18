"""A cgroup per sandbox call where this process may make one (``per_call.py``: memory, processes, CPU), why it may
not (``grants.py``: the cgroup and the grant missing, in words), and a root-started bridge handing its cgroup to
the uid it runs as (``delegation.py``).
"""
