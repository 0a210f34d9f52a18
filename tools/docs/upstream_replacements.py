"""The kustomize ``replacements`` that let a platform overlay's upstream stand on one line: every field of the
rendered Envoy Gateway or Istio objects that holds the upstream's host, port or ``host:port`` is filled from the
overlay's ``RESPONSES_BRIDGE_UPSTREAM`` literal when the overlay is built, so changing that line moves every
reference (routes' authority and destination, ``Backend``, ``ServiceEntry``, ``DestinationRule`` and its SNI).

Which fields those are is found, not listed: the objects are rendered for the overlay's URL and again for a probe URL
of the same scheme and base path but another host and port, and every field that differs must be the host, the port
or the authority (anything else derived from the URL fails the rendering here, rather than being left behind). The
URL's text is cut with kustomize's own ``delimiter``/``index`` options, in two steps through an annotation of the
settings ConfigMap: the authority (``/`` index 2), then its host and port (``:`` index 0 and 1). So the URL must write
its port; a scheme or base path changed on the line needs ``scripts/render-envoy-examples`` again (they decide which
objects there are), which the overlay's comment says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from responses_bridge.envoy_config.names import UpstreamURL

from .. import fast_yaml

SETTINGS = "responses-bridge-settings"
SETTING = "RESPONSES_BRIDGE_UPSTREAM"
AUTHORITY_ANNOTATION = "responses-bridge.io/upstream-authority"
PROBE_PORT = 65431
SERVICE_SUFFIX = ".svc.cluster.local"
"""A host with this suffix is a Service of the cluster (Istio renders no ServiceEntry for it: envoy_config/istio.py)."""

Render = Callable[[str], str]
"""The objects (YAML text) a platform format renders for an upstream URL."""


class UnderivedField(ValueError):
    """A rendered field depends on the upstream URL in a way the replacements cannot derive."""


def upstream_replacements(render: Render, upstream: str) -> str:
    """The replacements file (YAML) for objects ``render(upstream)`` gives."""
    url = UpstreamURL(upstream)
    if not url.port_written:
        raise ValueError(f"the overlay's {SETTING} must write its port ({upstream!r}: add :{url.port}), so that "
                         "the objects' port can be derived from it")
    parts = urlsplit(upstream.strip())
    in_cluster = url.host.endswith(SERVICE_SUFFIX)
    probe_host = "probe.upstream" + (SERVICE_SUFFIX if in_cluster else ".invalid")
    probe = urlunsplit(parts._replace(netloc=f"{probe_host}:{PROBE_PORT}"))
    roles = {url.host: "host", url.port: "port", url.authority: "authority"}
    probed_as = {"host": probe_host, "port": PROBE_PORT, "authority": f"{probe_host}:{PROBE_PORT}"}
    targets: dict[str, dict[tuple[str, str], list[str]]] = {"host": {}, "port": {}, "authority": {}}
    actual, probed = _objects(render(upstream)), _objects(render(probe))
    if actual.keys() != probed.keys():
        raise UnderivedField("the objects rendered depend on the upstream's host or port")
    for key, obj in actual.items():
        for path, value, other in _differences(obj, probed[key], []):
            role = roles.get(value)
            if role is None or other != probed_as[role]:
                raise UnderivedField(f"{key[0]} {key[1]}: {'.'.join(path)} = {value!r} is derived from the upstream "
                                     "but is neither its host, its port nor its authority")
            targets[role].setdefault(key, []).append(".".join(path))
    source = {"kind": "ConfigMap", "name": SETTINGS}
    annotation = _annotation(AUTHORITY_ANNOTATION)
    # what decides which objects there are: the scheme, and whether the host is a Service of the cluster. A URL that
    # changed either fails the build here, naming why and what to run (_guard), not silently later
    guards = [(f"{parts.scheme}://", "responses-bridge.io/rendered-for-scheme",
               f"no longer has the scheme the overlay's objects were rendered for ({parts.scheme})")]
    if in_cluster:
        guards.append((f"{SERVICE_SUFFIX}:", "responses-bridge.io/rendered-for-a-service",
                       "is no longer a cluster Service (a host ending in .svc.cluster.local, with its port), which "
                       "the overlay's objects were rendered for"))
    steps: list[dict[str, Any]] = [step for cut, name, why in guards for step in _guard(cut, name, why)]
    steps.append({
        "source": {**source, "fieldPath": f"data.{SETTING}", "options": {"delimiter": "/", "index": 2}},
        "targets": [{"select": dict(source), "fieldPaths": [annotation], "options": {"create": True}}]})
    for role, cut in (("host", {"delimiter": ":", "index": 0}), ("port", {"delimiter": ":", "index": 1}),
                      ("authority", None)):
        if targets[role]:
            steps.append({"source": {**source, "fieldPath": annotation, **({"options": cut} if cut else {})},
                          "targets": [{"select": {"kind": kind, "name": name}, "fieldPaths": paths}
                                      for (kind, name), paths in targets[role].items()]})
    header = ("# Rendered with the objects beside it (scripts/render-envoy-examples; tests check it is current): the\n"
              f"# upstream's host and port in every object, from kustomization.yaml's {SETTING} line. A line\n"
              "# whose scheme changed, or whose host stopped being a cluster Service, fails the build, naming the\n"
              "# cause: render again (scripts/render-envoy-examples), as for a changed base path or a host that\n"
              "# became a cluster Service.\n")
    return header + yaml.safe_dump(steps, sort_keys=False, width=120)


def _guard(cut: str, name: str, why: str) -> list[dict[str, Any]]:
    """The steps that fail the build unless the upstream's URL still holds ``cut``, with an error that says
    ``why`` and what to run. kustomize cuts a value at an index that does not exist with "options.index 1 is out
    of bounds for value <the value>" and no word of ours; so the value cut is first made to carry them: the URL,
    then the URL again joined to it with the explanation as the delimiter (a target's index past its last piece
    appends). The guard cuts that (it holds ``cut`` only where the URL does, the explanation never does), and its
    annotation then gets the URL's own piece, as a plain guard would give it."""
    source = {"kind": "ConfigMap", "name": SETTINGS}
    field = _annotation(name)
    explained = (f" <- the upstream on kustomization.yaml's {SETTING} line {why}: run scripts/render-envoy-examples "
                 "to render them for it. The line: ")
    if cut in explained:
        raise ValueError(f"the explanation of a guard may not hold what it cuts at ({cut!r})")

    def step(from_field: str, options: dict[str, Any] | None, target: dict[str, Any]) -> dict[str, Any]:
        return {"source": {**source, "fieldPath": from_field, **({"options": options} if options else {})},
                "targets": [{"select": dict(source), "fieldPaths": [field], **({"options": target} if target else {})}]}

    return [step(f"data.{SETTING}", None, {"create": True}),
            step(f"data.{SETTING}", None, {"delimiter": explained, "index": 1}),
            step(field, {"delimiter": cut, "index": 1}, {}),
            step(f"data.{SETTING}", {"delimiter": cut, "index": 1}, {})]


def _annotation(name: str) -> str:
    return "metadata.annotations." + name.replace(".", "\\.")


def _objects(text: str) -> dict[tuple[str, str], dict[str, Any]]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in fast_yaml.load_all(text) if doc}


def _differences(a: Any, b: Any, path: list[str]) -> Iterator[tuple[list[str], Any, Any]]:
    """Each leaf where ``a`` and ``b`` differ: its path (list indexes as numbers), ``a``'s value and ``b``'s."""
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        for key in a:
            yield from _differences(a[key], b[key], [*path, str(key).replace(".", "\\.")])
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for index, (left, right) in enumerate(zip(a, b, strict=True)):
            yield from _differences(left, right, [*path, str(index)])
    elif a != b:
        if isinstance(a, (dict, list)):
            raise UnderivedField(f"{'.'.join(path)}: its shape depends on the upstream's host or port")
        yield path, a, b
