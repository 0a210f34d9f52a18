"""Tools as the chat model is offered them and their calls read back: client, server and built-in tools,
programs (programmatic tool calling), the multi-agent beta's actions, tools described in the prompt, each
turn's tool set and what it produced.

Below responses; may use the engine's shared modules (engine/).
"""
