"""Translation without I/O: a Responses request into an upstream body, the upstream's headers and chunks into
whole Responses events, through one output builder for every turn. ``responses/`` (the translator, the native
relay, compaction, profiles) and ``tools/`` (client, server and built-in tools, programs, the multi-agent
actions) beside the shared modules at this root (SSE, the wire, event frames, options, chunk values).

Imports protocol/, the sealing of client-carried state and the leaves; never the store, the run, a service, the
runtime or a door.
"""
