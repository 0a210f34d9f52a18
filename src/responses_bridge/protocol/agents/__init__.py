"""Agents, sessions' inputs and events, approvals, automations and vaults, as the Agents API's wire carries them.

The top capability: may use every other.
"""
