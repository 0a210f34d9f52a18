"""The asynchronous run of one response: history, upstream turns, server-side tools, persistence."""
