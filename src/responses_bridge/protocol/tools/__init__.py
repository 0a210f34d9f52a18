"""Tool definitions and tool items as the wire carries them: function, computer, MCP and built-in tools, call
outputs, programs, the multi-agent beta, ``additional_tools``.

Below responses; may use files and the protocol's shared modules (protocol/).
"""
