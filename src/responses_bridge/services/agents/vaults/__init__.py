"""Vaults and credentials, their OAuth refresh, and the MCP secrets a session may read."""
