"""The asynchronous run of one response: history, upstream turns, server-side tools, persistence.

Imports the engine, the sealing, the sandbox, the store, the pools' rule, observability, protocol and the leaves;
never a service (shared shapes live in protocol/), the runtime or a door.
"""
