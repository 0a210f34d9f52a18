"""``responses-bridge envoy-config``: the command that prints the bootstrap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config.endpoints import DEFAULT_EXTPROC_PORT, DEFAULT_HTTP_PORT
from ..config.settings import field_default
from .bootstrap import bootstrap_dict, render_bootstrap, to_yaml
from .envoy_gateway import envoy_gateway_objects
from .filters import Auth, JwtExample
from .istio import istio_objects
from .names import LISTEN_PORT
from .targets import Placement, http_filter_document
from .timeouts import EnvoyTimeouts

TIMEOUT_FLAGS = (
    ("--stream-idle-timeout", "envoy_stream_idle_timeout", "seconds a request may pass with no byte either way "
     "(stream_idle_timeout; 0: never)"),
    ("--message-timeout", "envoy_message_timeout", "seconds Envoy waits for each processor answer"),
    ("--max-message-timeout", "envoy_max_message_timeout", "the longest per-message wait the processor may ask"),
    ("--connect-timeout", "envoy_connect_timeout", "seconds to connect to a cluster"),
)
"""(flag, setting, meaning): the timeouts the bootstrap sets (timeouts.py)."""

if TYPE_CHECKING:
    pass


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("envoy-config", help="print the Envoy bootstrap YAML that fronts the bridge")
    parser.add_argument("--format", choices=FORMATS, default="bootstrap",
                        help="bootstrap: a whole Envoy bootstrap (default); http-filter: the filters, processor "
                             "cluster and per-route settings for an Envoy of your own; envoy-gateway: Gateway API "
                             "and Envoy Gateway objects; istio: EnvoyFilters and VirtualServices. Each from the "
                             "same settings (docs/kubernetes.md)")
    parser.add_argument("--output", metavar="FILE", default=None,
                        help="write to FILE instead of standard output (a pod's init container renders its "
                             "Envoy's bootstrap so)")
    parser.add_argument("--namespace", default=Placement.namespace,
                        help="envoy-gateway, istio: the bridge's namespace (default %(default)s)")
    parser.add_argument("--istio-root-namespace", default=Placement.root_namespace,
                        help="istio: Istio's root namespace, where the EnvoyFilters go so they reach the ingress "
                             "gateway and labelled workloads in any namespace (default %(default)s)")
    parser.add_argument("--service", default=Placement.service,
                        help="envoy-gateway, istio: the bridge's Service (default %(default)s)")
    parser.add_argument("--gateway", default=Placement.gateway,
                        help="envoy-gateway, istio: the Gateway the routes attach to (default %(default)s)")
    parser.add_argument("--listen-port", type=int, default=LISTEN_PORT,
                        help=f"port clients call (default {LISTEN_PORT})")
    parser.add_argument("--extproc-port", type=int, default=None,
                        help=f"the bridge's ext_proc gRPC port (default: the configuration's `extproc_port`, else "
                             f"{DEFAULT_EXTPROC_PORT}, as `serve`)")
    parser.add_argument("--http-port", type=int, default=None,
                        help=f"the bridge's HTTP door port (default: the configuration's `http_port`, else "
                             f"{DEFAULT_HTTP_PORT}, as `serve`)")
    parser.add_argument("--upstream", default=None, action="append",
                        help="Chat Completions base URL, e.g. http://vllm:8000/v1 or https://api.openai.com/v1 "
                             "(default: the configuration's `upstream`, else http://127.0.0.1:8090/v1); given "
                             "several times, replicas of it (as `serve --upstream`)")
    parser.add_argument("--admin-port", type=int, default=9901, help="Envoy admin port, on loopback")
    parser.add_argument("--listen-address", default="127.0.0.1", help="0.0.0.0 to accept outside connections")
    parser.add_argument("--extproc-address", default="127.0.0.1", help="where the bridge's ext_proc door is")
    parser.add_argument("--extproc-uds", metavar="PATH", default=None,
                        help="the bridge's ext_proc door on this Unix socket (its --extproc-uds; default: the "
                             "configuration's `extproc_uds`, else TCP)")
    parser.add_argument("--workers", default=None,
                        help="the bridge's serve --workers, N or auto (one ext_proc endpoint per worker; default: "
                             "the configuration's `workers`, else 1)")
    parser.add_argument("--sidecar-address", default="127.0.0.1", help="where the bridge's HTTP door is")
    parser.add_argument("--ca-file", default=None, help="CA bundle for an https upstream (default: the system's)")
    parser.add_argument("--internal-port", type=int, default=None,
                        help="several upstreams: the loopback listener for the sidecar's own upstream calls, which "
                             "its --upstream-via names (default: --listen-port + 1)")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="the YAML configuration file `serve` reads (env: RESPONSES_BRIDGE_CONFIG): one cluster "
                             "per upstream of its `upstreams`, and its ports and upstream unless given here")
    timeouts = parser.add_argument_group(
        "timeouts", "when Envoy ends a request itself; each defaults to its setting (configuration file or "
        "environment), and Envoy's answer when one fires names it")
    for flag, field, meaning in TIMEOUT_FLAGS:
        timeouts.add_argument(flag, type=float, default=None, metavar="SECONDS", dest=field,
                              help=f"{meaning} (default: the configuration's `{field}`, else "
                                   f"{field_default(field):g})")
    parser.add_argument("--max-requests", type=int, default=None, metavar="N", dest="envoy_max_requests",
                        help="every cluster's circuit breakers: requests in flight, pending and connections (default: "
                             "the configuration's `envoy_max_requests`, else 10,000 per worker)")
    identity = parser.add_argument_group(
        "identity", "how callers are identified; must match the sidecar's RESPONSES_BRIDGE_AUTH")
    identity.add_argument("--auth", choices=("none", "keys", "header"), default=None,
                          help="default: the configuration's `auth` (RESPONSES_BRIDGE_AUTH), else none. keys: no "
                               "client Authorization reaches an upstream, and the passthrough routes need a bridge "
                               "key; header: a client's own tenant header is removed first thing")
    identity.add_argument("--tenant-header", default=None,
                          help="default: the configuration's `tenant_header` (RESPONSES_BRIDGE_TENANT_HEADER)")
    identity.add_argument("--jwt-issuer", default=None,
                          help="render a jwt_authn example (auth header): tokens of this issuer, whose tenant claim "
                               "becomes the tenant header")
    identity.add_argument("--jwt-jwks-file", default=None, help="the issuer's JWKS, a file Envoy reads")
    identity.add_argument("--jwt-jwks", default=None, help="the issuer's JWKS inline (JSON text)")
    identity.add_argument("--jwt-tenant-claim", default="tenant", help="the claim naming the tenant (default tenant)")
    identity.add_argument("--jwt-audience", action="append", default=[],
                          help="an accepted audience (repeatable; default: any)")
    parser.set_defaults(func=_run)


def _auth(args: argparse.Namespace, configured_mode: str, configured_header: str) -> Auth:
    jwt = None
    if args.jwt_issuer is not None:
        jwt = JwtExample(issuer=args.jwt_issuer, tenant_claim=args.jwt_tenant_claim, jwks_file=args.jwt_jwks_file,
                         jwks=args.jwt_jwks, audiences=tuple(args.jwt_audience))
    elif args.jwt_jwks_file or args.jwt_jwks:
        raise ValueError("--jwt-jwks-file / --jwt-jwks need --jwt-issuer")
    return Auth(mode=args.auth or configured_mode, tenant_header=(args.tenant_header or configured_header).lower(),
                jwt=jwt)


FORMATS = ("bootstrap", "http-filter", "envoy-gateway", "istio")


def render(target: str, options: dict[str, Any], placement: Placement) -> str:
    """``options`` (render_bootstrap's arguments) rendered as ``target``: every target from the same bootstrap."""
    if target == "bootstrap":
        return render_bootstrap(**options)
    bootstrap = bootstrap_dict(**options)
    if target == "http-filter":
        return to_yaml(http_filter_document(bootstrap))
    upstreams = options.get("upstreams") or ()
    if upstreams:
        raise ValueError(f"--format {target} renders one upstream; several (`upstreams`) need the bootstrap")
    render_objects = envoy_gateway_objects if target == "envoy-gateway" else istio_objects
    return "---\n".join(to_yaml(item) for item in render_objects(bootstrap, options["upstream"], placement))


def _run(args: argparse.Namespace) -> int:
    from ..config.settings import load_settings
    from ..config.upstreams import upstream_flag
    from ..process.workers import worker_count

    # the settings `serve` starts with (flags > environment > file > defaults): the same upstreams and ports; a
    # mistake in them is the one line cli.main prints
    settings = load_settings({"upstream": "--upstream", "upstream_urls": "--upstream",
                              "envoy_max_requests": "--max-requests",
                              **{field: flag for flag, field, _ in TIMEOUT_FLAGS}},
                             config=args.config, **upstream_flag(args.upstream),
                             envoy_max_requests=args.envoy_max_requests,
                             **{field: getattr(args, field) for _, field, _ in TIMEOUT_FLAGS})
    try:
        auth = _auth(args, settings.auth, settings.tenant_header)
        options = dict(
            listen_port=args.listen_port,
            extproc_port=settings.extproc_port if args.extproc_port is None else args.extproc_port,
            http_port=settings.http_port if args.http_port is None else args.http_port,
            upstream=settings.upstream, admin_port=args.admin_port,
            listen_address=args.listen_address, extproc_address=args.extproc_address,
            sidecar_address=args.sidecar_address, ca_file=args.ca_file, upstreams=settings.upstreams,
            internal_port=args.internal_port, auth=auth,
            extproc_uds=args.extproc_uds if args.extproc_uds is not None else settings.extproc_uds,
            workers=worker_count(args.workers) if args.workers is not None else settings.worker_count(),
            chat_store=settings.store_chat_completions, timeouts=EnvoyTimeouts.from_settings(settings),
            max_requests=settings.envoy_max_requests)
        text = render(args.format, options, Placement(
            namespace=args.namespace, root_namespace=args.istio_root_namespace, service=args.service,
            gateway=args.gateway,
            extproc_port=options["extproc_port"], http_port=options["http_port"]))
    except ValueError as exc:
        print(f"responses-bridge envoy-config: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0
