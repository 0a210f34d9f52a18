"""The bridge's side of ``codex exec-server --remote``: the hub, the JSON-RPC relay and its signing."""
