"""The sandbox's benchmarks: a code interpreter call end to end (``code_interpreter.py``), its cgroup
(``cgroup.py``), the agent-sandbox backend against bubblewrap (``agent_sandbox.py``), the egress proxy's masking
(``egress.py``) and a computer-use desktop (``desktop.py``).
"""
