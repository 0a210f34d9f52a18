"""Can the ``agent-sandbox`` backend claim pods, and if not, why and what fixes it: the checks ``responses-bridge
doctor`` prints (and ``serve`` logs at start) when ``RESPONSES_BRIDGE_CODE_SANDBOX_BACKEND=agent-sandbox``. Each
asks the real API, in order, the later ones only when the earlier pass:

1. the Kubernetes API answers (``RESPONSES_BRIDGE_AGENT_SANDBOX_API_URL``, else in-cluster, else the kubeconfig);
2. agent-sandbox's resources are served (its CRDs installed: ``sandboxes``, ``sandboxclaims``, ``sandboxwarmpools``);
3. this identity may do what a call does (SelfSubjectAccessReview: create, get, watch and delete ``sandboxclaims``,
   get ``sandboxes`` in the namespace);
4. each pool named in ``RESPONSES_BRIDGE_AGENT_SANDBOX_POOLS`` exists and has ready pods;
5. so does the desktop pool, ``RESPONSES_BRIDGE_AGENT_SANDBOX_DESKTOP_POOL``, when it is set (unset, no desktop runs
   on this backend: checks.py says so in its summary, not as a failed check).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
from kubernetes_asyncio import client, config

from ..doctor import Finding

if TYPE_CHECKING:
    from .settings import AgentSandboxConfig

CLAIMS = ("extensions.agents.x-k8s.io", "v1beta1")
SANDBOXES = ("agents.x-k8s.io", "v1beta1")
NEEDED = (*(("extensions.agents.x-k8s.io", "sandboxclaims", verb) for verb in ("create", "get", "watch", "delete")),
          ("agents.x-k8s.io", "sandboxes", "get"))
RBAC_FIX = "apply the overlay's rbac.yaml (deploy/kubernetes/overlays/agent-sandbox) to the bridge's ServiceAccount"
POOLS_FIX = "apply the overlay's sandboxes.yaml, or change RESPONSES_BRIDGE_AGENT_SANDBOX_POOLS"
DESKTOP_FIX = ("add the agent-sandbox-desktop component to the overlay (deploy/kubernetes/components/"
               "agent-sandbox-desktop), or change RESPONSES_BRIDGE_AGENT_SANDBOX_DESKTOP_POOL")
DESKTOP_CHECK = "desktop pool"
INSTALL_FIX = "install agent-sandbox v1.0 with its extensions (docs/kubernetes.md)"


async def _api_client(settings: AgentSandboxConfig) -> client.ApiClient:
    if settings.agent_sandbox_api_url:
        return client.ApiClient(client.Configuration(host=settings.agent_sandbox_api_url))
    try:
        config.load_incluster_config()
    except config.ConfigException:
        await config.load_kube_config()
    return client.ApiClient()


async def diagnose_cluster(settings: AgentSandboxConfig) -> list[Finding]:
    """Every check, in order; a failed one names its fix in its line."""
    from .settings import parse_pools

    namespace = settings.agent_sandbox_namespace
    try:
        api = await _api_client(settings)
    except (config.ConfigException, OSError) as error:
        return [Finding("kubernetes API", False, f"no cluster configuration ({error}): set "
                        "RESPONSES_BRIDGE_AGENT_SANDBOX_API_URL, or run in the cluster with a ServiceAccount")]
    async with api:
        custom = client.CustomObjectsApi(api)
        served: dict[str, set[str]] = {}
        try:
            for group, version in (CLAIMS, SANDBOXES):
                found = await custom.get_api_resources(group, version)
                served[group] = {resource.name for resource in found.resources}
        except client.ApiException as error:
            if error.status != 404:
                return [Finding("kubernetes API", False, f"the API answered {error.status} {error.reason}")]
        except (aiohttp.ClientError, OSError) as error:
            return [Finding("kubernetes API", False, f"{api.configuration.host} could not be reached "
                            f"({type(error).__name__}): set RESPONSES_BRIDGE_AGENT_SANDBOX_API_URL or check the "
                            "network to the API server")]
        findings = [Finding("kubernetes API", True, f"{api.configuration.host} answers")]
        missing = sorted({"sandboxclaims", "sandboxwarmpools"} - served.get(CLAIMS[0], set())
                         | {"sandboxes"} - served.get(SANDBOXES[0], set()))
        if missing:
            return [*findings, Finding("agent-sandbox CRDs", False, f"not served: {', '.join(missing)}: "
                                       f"{INSTALL_FIX}")]
        findings.append(Finding("agent-sandbox CRDs", True, "sandboxes, sandboxclaims, sandboxwarmpools (v1beta1)"))
        denied = [f"{verb} {resource}" for group, resource, verb in NEEDED
                  if not await _allowed(api, namespace, group, resource, verb)]
        findings.append(Finding("RBAC", not denied, f"may not {', '.join(denied)} in {namespace}: {RBAC_FIX}"
                                if denied else f"claims may be made, watched and deleted in {namespace}"))
        for tier, pool in sorted(parse_pools(settings.agent_sandbox_pools).items()):
            findings.append(await _pool(custom, namespace, f"pool {tier}", pool, POOLS_FIX))
        if settings.agent_sandbox_desktop_pool:
            findings.append(await _pool(custom, namespace, DESKTOP_CHECK, settings.agent_sandbox_desktop_pool,
                                        DESKTOP_FIX, what=" (session desktops)"))
        return findings


async def _allowed(api: client.ApiClient, namespace: str, group: str, resource: str, verb: str) -> bool:
    review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
        resource_attributes=client.V1ResourceAttributes(namespace=namespace, group=group, resource=resource,
                                                        verb=verb)))
    answer = await client.AuthorizationV1Api(api).create_self_subject_access_review(review)
    return bool(answer.status and answer.status.allowed)


async def _pool(custom: client.CustomObjectsApi, namespace: str, name: str, pool: str, fix: str, *,
                what: str = "") -> Finding:
    """The check ``name`` of one warm pool: it exists (else ``fix``) and has a ready pod; ``what`` says what its
    pods serve, where that is not the check's name already."""
    try:
        found: dict[str, Any] = await custom.get_namespaced_custom_object(
            CLAIMS[0], CLAIMS[1], namespace, "sandboxwarmpools", pool)
    except client.ApiException as error:
        if error.status == 404:
            return Finding(name, False, f"no SandboxWarmPool {pool}{what} in {namespace}: {fix}")
        return Finding(name, False, f"SandboxWarmPool {pool}{what}: the API answered {error.status} {error.reason}")
    ready = int((found.get("status") or {}).get("readyReplicas") or 0)
    wanted = int((found.get("spec") or {}).get("replicas") or 0)
    if ready == 0:
        return Finding(name, False, f"SandboxWarmPool {pool}{what} has no ready pod (0 of {wanted}): a claim would "
                       "wait for a pod to start, past its deadline — check its pods' events (image, RuntimeClass, "
                       "quota)")
    return Finding(name, True, f"SandboxWarmPool {pool}{what}: {ready} of {wanted} pods ready")
