"""Programs of programmatic tool calling: a fresh V8 isolate per run (isolate.py), replay bound by a fingerprint
(replay.py)."""
