"""The HTTP door's Batch API: ``/v1/batches`` (batches_routes.py), each line served by the route code of its
endpoint (line_server.py), the runner started and drained with the door (capability.py)."""
