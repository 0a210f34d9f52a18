"""A session's ``openai_hosted`` environment and the first-class environments it is made from: templates,
packages, plugins, MCP servers, capability directories, the hosted environments' routes.
"""
