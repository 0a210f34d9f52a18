"""Tools the server runs for the model (remote MCP servers, …), each without knowledge of the engine or store."""
