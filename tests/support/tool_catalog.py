"""A realistic catalogue of deferred tools, as a client with many MCP servers sends them (Codex: one
``namespace`` per server), for tool search tests and its benchmark.

A handful of hand-written tools have distinctive descriptions (the ones the tests look for); the rest are
generated from each service's objects and verbs, so the set has the near-duplicates a real catalogue has
(``list_issues``, ``get_issue``, ``update_issue`` …) and any size can be asked for.
"""

from __future__ import annotations

import itertools
from typing import Any

SERVICES: dict[str, tuple[str, list[str]]] = {
    "github": ("GitHub: repositories, issues, pull requests and CI", [
        "issue", "repository", "branch", "commit", "release", "workflow run", "gist", "label"]),
    "slack": ("Slack workspace: channels, messages and people", ["channel", "user group", "reminder", "bookmark"]),
    "jira": ("Jira project tracking", ["ticket", "sprint", "board", "epic", "worklog"]),
    "calendar": ("Google Calendar", ["event", "calendar", "invitation", "room booking"]),
    "drive": ("Cloud drive storage", ["file", "folder", "permission", "shared drive", "revision"]),
    "crm": ("Customer relationship management", ["contact", "deal", "company", "lead", "pipeline"]),
    "billing": ("Payments and subscriptions", ["invoice", "subscription", "customer", "coupon", "payout"]),
    "k8s": ("Kubernetes cluster operations", ["deployment", "service", "namespace", "config map", "secret"]),
    "postgres": ("PostgreSQL database administration", ["table", "index", "backup", "role", "extension"]),
    "notion": ("Notion pages and databases", ["page", "database", "block", "comment"]),
    "confluence": ("Confluence wiki", ["space", "page template", "attachment"]),
    "sentry": ("Sentry error monitoring", ["alert rule", "issue event", "project"]),
    "pagerduty": ("PagerDuty incident response", ["incident", "on-call schedule", "escalation policy"]),
    "linear": ("Linear planning", ["cycle", "project update", "triage item"]),
}
VERBS = [("list", "List every {o} in {s}, newest first, with paging"),
         ("get", "Get one {o} by id from {s}"),
         ("create", "Create a new {o} in {s}"),
         ("update", "Change fields of an existing {o} in {s}"),
         ("delete", "Delete a {o} from {s} permanently"),
         ("search", "Find {o}s in {s} matching a text filter"),
         ("archive", "Archive a {o} in {s} so that it is hidden but kept"),
         ("export", "Export a {o} from {s} as JSON")]

SPECIAL: list[tuple[str | None, dict[str, Any]]] = [
    ("weather", {"name": "get_forecast",
                 "description": "Weather forecast for a city: temperature, rain and wind for the next days",
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                                 "days": {"type": "integer"}}}}),
    ("slack", {"name": "send_message", "description": "Post a message to a Slack channel or as a direct message",
               "parameters": {"type": "object", "properties": {"channel": {"type": "string"},
                                                               "text": {"type": "string"}}}}),
    ("github", {"name": "create_pull_request",
                "description": "Open a pull request that proposes merging a head branch into a base branch",
                "parameters": {"type": "object", "properties": {"head": {"type": "string"},
                                                                "base": {"type": "string"},
                                                                "title": {"type": "string"}}}}),
    ("k8s", {"name": "get_pod_logs", "description": "Fetch the logs of a pod's container, e.g. one that crashes",
             "parameters": {"type": "object", "properties": {"pod": {"type": "string"},
                                                             "container": {"type": "string"},
                                                             "tail_lines": {"type": "integer"}}}}),
    ("billing", {"name": "issue_refund", "description": "Refund all or part of a payment to a customer",
                 "parameters": {"type": "object", "properties": {"payment_id": {"type": "string"},
                                                                 "amount_cents": {"type": "integer"}}}}),
    (None, {"name": "convert_currency",
            "description": "Convert an amount of money between currencies at today's exchange rate",
            "parameters": {"type": "object", "properties": {"amount": {"type": "number"},
                                                            "from": {"type": "string"}, "to": {"type": "string"}}}}),
    (None, {"name": "translateText", "description": "Render text in another human language",
            "parameters": {"type": "object", "properties": {"text": {"type": "string"},
                                                            "target_language": {"type": "string"}}}}),
]


def _function(spec: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "strict": False, "defer_loading": True, **spec}


def catalog(size: int = 200) -> list[dict[str, Any]]:
    """``size`` deferred functions: the special ones, then generated ones, grouped into namespaces; the two
    top-level specials stay top-level functions."""
    per_namespace: dict[str, list[dict[str, Any]]] = {}
    top_level: list[dict[str, Any]] = []
    for namespace, spec in SPECIAL:
        (per_namespace.setdefault(namespace, []) if namespace else top_level).append(_function(spec))
    generated = (
        (service, verb, template, obj)
        for (verb, template), (service, (label, objects)) in itertools.product(VERBS, SERVICES.items())
        for obj in objects)
    count = len(SPECIAL)
    for service, verb, template, obj in generated:
        if count >= size:
            break
        label = SERVICES[service][0].split(":")[0]
        name = f"{verb}_{obj.replace(' ', '_')}"
        per_namespace.setdefault(service, []).append(_function({
            "name": name, "description": template.format(o=obj, s=label),
            "parameters": {"type": "object", "properties": {f"{obj.replace(' ', '_')}_id": {"type": "string"}}}}))
        count += 1
    descriptions = {name: label for name, (label, _) in SERVICES.items()} | {"weather": "Weather data"}
    namespaces = [{"type": "namespace", "name": name, "description": descriptions[name], "tools": tools}
                  for name, tools in per_namespace.items()]
    return namespaces + top_level
