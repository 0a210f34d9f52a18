"""The translation of one Responses request and its answer: the translator and its state, the request's
messages, the output and its events, native relays, compaction, profiles and turns.

May use tools and the engine's shared modules (engine/); never agents or containers.
"""
