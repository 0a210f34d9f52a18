"""A ``POST /v1/responses`` body parsed and checked: the request, its input items, item references and
configuration updates.

May use tools, files and the protocol's shared modules (protocol/); never agents or containers.
"""
