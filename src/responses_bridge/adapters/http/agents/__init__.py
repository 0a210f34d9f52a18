"""The Agents API's routes on the HTTP door (``client.beta.agents``): agents, sessions' subagents and traces,
environments, vaults, automations, the exec-server's registry and rendezvous, and watching a session's desktop.

Imports the door's plumbing and services/agents/ with what the agents may use.
"""
