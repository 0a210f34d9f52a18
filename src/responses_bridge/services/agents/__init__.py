"""The Agents API (``client.beta.agents``): agents, sessions and their turns, events, leases, traces and subagents.

The top capability: it may use every other (responses, tools, containers, files, tenancy), and none uses it.
"""
