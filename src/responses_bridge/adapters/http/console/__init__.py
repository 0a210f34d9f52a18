"""The console: what the bridge did and is doing, in a browser, at ``/console`` of the HTTP door (logs, sessions,
traces, usage, operations), rendered by the server from what the store, the metrics and the runtime hold.

entry.py is all the door imports at start (a route and a setting's check); the pages and their templates load on
the first ``/console`` request, so a deployment whose console is never opened, and every API request, pay nothing
for it."""
