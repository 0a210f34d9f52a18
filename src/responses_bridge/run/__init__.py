"""The asynchronous run of one response: model turns, server-side tools, persistence."""
