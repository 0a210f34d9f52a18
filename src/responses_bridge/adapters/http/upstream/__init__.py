"""The HTTP door's routes that reach the upstreams as they are: Chat Completions passed through, the model list (as
the Codex CLI reads it too) and embeddings (the deployment's embedder, or the upstream serving the model).

Imports the door's plumbing and services/files/ (the embedder vector stores share).
"""
