"""The Agents API's benchmarks: a session's turn against a plain response (``sessions.py``, ``scripts/bench
agents``), an MCP call held for approval (``approvals.py``), subagents (``multi_agent.py``).
"""
