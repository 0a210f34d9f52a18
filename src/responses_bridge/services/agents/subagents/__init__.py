"""A session's subagents as the Agents API reads them (``subagents.py``), the multi-agent tree of a turn told as
those subagents (``tree.py``), and the subagents' contexts kept past the response that opened them.
"""
