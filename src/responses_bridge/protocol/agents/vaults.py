"""Vaults and their credentials as OpenAI's Agents API states them (``client.beta.agents.vaults``): what a create or
update may say, checked with 400s naming the field, and the public shapes (the SDK's ``Vault``, ``Credential``).

A credential's write-only values (a bearer token, an OAuth access or refresh token, a client secret, an environment
variable's value) are split off here as its *secret* part, which services/agents/vaults/vaults.py seals; the *public*
part is ``auth`` as the SDK's ``CredentialAuth`` shows it, so nothing that renders a credential can hold a secret.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from ..errors import APIError, invalid_request
from ..metadata import check_metadata
from .inputs import known

VAULT_FIELDS = ("metadata", "name")
CREDENTIAL_FIELDS = ("auth", "name", "metadata")
CREDENTIAL_UPDATE_FIELDS = ("auth", "metadata")
AUTH_TYPES = ("mcp_oauth", "static_bearer", "environment_variable")
STATUSES = ("active", "archived")
ENDPOINT_AUTH_TYPES = ("none", "client_secret_basic", "client_secret_post")
_SECRET_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_RESERVED_NAMES = ("CODEX_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "SSL_CERT_FILE",
                   "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "CURL_CA_BUNDLE")
_HOST = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\Z")
MAX_SECRET_CHARS = 16_384
MAX_FIELD_CHARS = 2_048


def vault_not_found(vault_id: str) -> APIError:
    return APIError(404, f"No vault found with id '{vault_id}'.", param="vault_id", code="not_found")


def credential_not_found(credential_id: str) -> APIError:
    return APIError(404, f"No credential found with id '{credential_id}'.", param="credential_id",
                    code="not_found")


def name_of(value: Any, param: str) -> str:
    """A name trimmed, 1 to 256 UTF-8 bytes after trimming (as the types say)."""
    if not isinstance(value, str):
        raise invalid_request(f"Invalid type for '{param}': expected a string.", param=param, code="invalid_type")
    trimmed = value.strip()
    if not 1 <= len(trimmed.encode()) <= 256:
        raise invalid_request(f"Invalid '{param}': it must hold 1 to 256 UTF-8 bytes after trimming.", param=param,
                              code="invalid_value")
    return trimmed


def metadata_of(value: Any, param: str = "metadata") -> dict[str, str]:
    check_metadata(value, param)
    return dict(value or {})


def statuses(values: list[str]) -> tuple[str, ...]:
    """A list's ``status`` / ``status[]`` filter: both statuses when none is given."""
    for value in values:
        if value not in STATUSES:
            raise invalid_request("Invalid value for 'status': expected 'active' or 'archived'.", param="status",
                                  code="invalid_value")
    return tuple(values) or STATUSES


def parse_auth(value: Any, param: str = "auth") -> tuple[dict[str, Any], dict[str, Any]]:
    """A create's ``auth``: ``(public, secret)`` — the SDK's ``CredentialAuth`` and the write-only values."""
    auth = _object(value, param)
    kind = auth.get("type")
    if kind == "static_bearer":
        known(auth, ("type", "token", "mcp_server_url"), f"{param}.")
        return ({"type": kind, "mcp_server_url": server_url(auth.get("mcp_server_url"), f"{param}.mcp_server_url")},
                {"token": _secret(auth.get("token"), f"{param}.token")})
    if kind == "mcp_oauth":
        known(auth, ("type", "access_token", "mcp_server_url", "expires_at", "refresh"), f"{param}.")
        public = {"type": kind, "mcp_server_url": server_url(auth.get("mcp_server_url"), f"{param}.mcp_server_url"),
                  "expires_at": _timestamp(auth.get("expires_at"), f"{param}.expires_at"), "refresh": None}
        secret = {"token": _secret(auth.get("access_token"), f"{param}.access_token")}
        if auth.get("refresh") is not None:
            public["refresh"], sealed = _parse_refresh(auth["refresh"], f"{param}.refresh")
            secret.update(sealed)
        return public, secret
    if kind == "environment_variable":
        known(auth, ("type", "networking", "secret_name", "secret_value"), f"{param}.")
        return ({"type": kind, "networking": _networking(auth.get("networking"), f"{param}.networking"),
                 "secret_name": _secret_name(auth.get("secret_name"), f"{param}.secret_name")},
                {"value": _secret(auth.get("secret_value"), f"{param}.secret_value")})
    raise invalid_request(f"Invalid value for '{param}.type': expected one of {', '.join(AUTH_TYPES)}.",
                          param=f"{param}.type", code="invalid_value")


def rotate_auth(public: dict[str, Any], secret: dict[str, Any], value: Any,
                param: str = "auth") -> tuple[dict[str, Any], dict[str, Any]]:
    """An update's ``auth``: new secret values for the credential's own method (its type cannot change)."""
    auth = _object(value, param)
    kind = auth.get("type")
    if kind != public["type"]:
        raise invalid_request(f"Invalid value for '{param}.type': this credential is '{public['type']}' and its "
                              "method cannot change.", param=f"{param}.type", code="invalid_value")
    if kind == "static_bearer":
        known(auth, ("type", "token"), f"{param}.")
        return public, {"token": _secret(auth.get("token"), f"{param}.token")}
    if kind == "environment_variable":
        known(auth, ("type", "secret_value"), f"{param}.")
        return public, {"value": _secret(auth.get("secret_value"), f"{param}.secret_value")}
    known(auth, ("type", "access_token", "expires_at", "refresh"), f"{param}.")
    public, secret = dict(public), dict(secret)
    if auth.get("refresh") is not None:
        public["refresh"], secret = _rotate_refresh(public.get("refresh"), secret, auth["refresh"],
                                                    f"{param}.refresh")
    if auth.get("access_token") is not None:
        secret["token"] = _secret(auth["access_token"], f"{param}.access_token")
        public["expires_at"] = None  # a new token without an expiry clears the old one's (as the types say)
    if "expires_at" in auth:
        public["expires_at"] = _timestamp(auth["expires_at"], f"{param}.expires_at")
    return public, secret


def _parse_refresh(value: Any, param: str) -> tuple[dict[str, Any], dict[str, str]]:
    """A create's ``refresh``: ``(public, secret)`` — the refresh token and a client secret are write-only."""
    refresh = _object(value, param)
    known(refresh, ("client_id", "refresh_token", "token_endpoint", "token_endpoint_auth", "resource", "scope"),
          f"{param}.")
    endpoint_auth = _object(refresh.get("token_endpoint_auth"), f"{param}.token_endpoint_auth")
    kind = endpoint_auth.get("type")
    where = f"{param}.token_endpoint_auth"
    if kind not in ENDPOINT_AUTH_TYPES:
        raise invalid_request(f"Invalid value for '{where}.type': expected one of {', '.join(ENDPOINT_AUTH_TYPES)}.",
                              param=f"{where}.type", code="invalid_value")
    sealed = {"refresh_token": _secret(refresh.get("refresh_token"), f"{param}.refresh_token")}
    if kind == "none":
        known(endpoint_auth, ("type",), f"{where}.")
    else:
        known(endpoint_auth, ("type", "client_secret"), f"{where}.")
        sealed["client_secret"] = _secret(endpoint_auth.get("client_secret"), f"{where}.client_secret")
    public = {"client_id": _text(refresh.get("client_id"), f"{param}.client_id", required=True),
              "resource": _text(refresh.get("resource"), f"{param}.resource"),
              "scope": _text(refresh.get("scope"), f"{param}.scope"),
              "token_endpoint": server_url(refresh.get("token_endpoint"), f"{param}.token_endpoint"),
              "token_endpoint_auth": {"type": kind}}
    return public, sealed


def _rotate_refresh(public: dict[str, Any] | None, sealed: dict[str, Any], value: Any,
                    param: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """A rotation's ``refresh``: a new refresh token (omitted or null keeps it), scope (omitted keeps it, null
    stops sending one), a new client secret for the credential's own endpoint method."""
    if public is None:
        raise invalid_request(f"Invalid '{param}': this credential has no refresh configuration to rotate; create "
                              "a new credential with one.", param=param, code="invalid_value")
    refresh = _object(value, param)
    known(refresh, ("refresh_token", "scope", "token_endpoint_auth"), f"{param}.")
    public, sealed = dict(public), dict(sealed)
    if refresh.get("refresh_token") is not None:
        sealed["refresh_token"] = _secret(refresh["refresh_token"], f"{param}.refresh_token")
    if "scope" in refresh:
        public["scope"] = _text(refresh["scope"], f"{param}.scope")
    if refresh.get("token_endpoint_auth") is not None:
        where = f"{param}.token_endpoint_auth"
        endpoint_auth = _object(refresh["token_endpoint_auth"], where)
        method = public["token_endpoint_auth"]["type"]
        if endpoint_auth.get("type") != method:
            raise invalid_request(f"Invalid value for '{where}.type': this credential's token endpoint method is "
                                  f"'{method}' and cannot change.", param=f"{where}.type", code="invalid_value")
        if method == "none":
            known(endpoint_auth, ("type",), f"{where}.")
        else:
            known(endpoint_auth, ("type", "client_secret"), f"{where}.")
            if endpoint_auth.get("client_secret") is not None:
                sealed["client_secret"] = _secret(endpoint_auth["client_secret"], f"{where}.client_secret")
    return public, sealed


def server_url(value: Any, param: str) -> str:
    """An MCP server's URL as a credential names it: http(s) with a host; the bridge's MCP host policy still
    decides whether a turn may reach it."""
    if not isinstance(value, str) or not value:
        raise invalid_request(f"Missing required parameter: '{param}'.", param=param,
                              code="missing_required_parameter")
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise invalid_request(f"Invalid '{param}': expected an HTTPS URL.", param=param, code="invalid_value")
    return value


def same_server(credential_url: str, tool_url: str) -> bool:
    """Whether a tool's server is the one a credential authorizes: scheme, host, port and path alike (a trailing
    slash aside), so a token is never sent to another server."""
    a, b = urlsplit(credential_url), urlsplit(tool_url)
    return ((a.scheme, a.hostname, a.port, a.path.rstrip("/"))
            == (b.scheme, b.hostname, b.port, b.path.rstrip("/")))


def _networking(value: Any, param: str) -> dict[str, Any]:
    networking = _object(value, param)
    kind = networking.get("type")
    if kind == "unrestricted":
        known(networking, ("type",), f"{param}.")
        return {"type": kind}
    if kind != "limited":
        raise invalid_request(f"Invalid value for '{param}.type': expected 'unrestricted' or 'limited'.",
                              param=f"{param}.type", code="invalid_value")
    known(networking, ("type", "allowed_hosts"), f"{param}.")
    hosts = networking.get("allowed_hosts")
    where = f"{param}.allowed_hosts"
    if not isinstance(hosts, list) or not 1 <= len(hosts) <= 16:
        raise invalid_request(f"Invalid '{where}': expected 1 to 16 hosts.", param=where, code="invalid_value")
    found: list[str] = []
    for host in hosts:
        normal = host.strip().lower() if isinstance(host, str) else ""
        if not _HOST.match(normal) or len(normal) > 253:
            raise invalid_request(f"Invalid '{where}': each entry is a hostname or IPv4 address, without scheme, "
                                  "path, port or wildcard.", param=where, code="invalid_value")
        if normal in found:
            raise invalid_request(f"Invalid '{where}': '{normal}' is listed twice.", param=where,
                                  code="invalid_value")
        found.append(normal)
    return {"type": "limited", "allowed_hosts": found}


def _secret_name(value: Any, param: str) -> str:
    if not isinstance(value, str) or not _SECRET_NAME.match(value) or len(value) > 256:
        raise invalid_request(f"Invalid '{param}': ASCII letters, digits and underscores, starting with a letter or "
                              "an underscore.", param=param, code="invalid_value")
    if value.upper().startswith(_RESERVED_NAMES):
        raise invalid_request(f"Invalid '{param}': '{value}' is a reserved name.", param=param, code="invalid_value")
    return value


def _secret(value: Any, param: str) -> str:
    """A write-only value: a non-empty string on one line (it goes into a header), without NUL."""
    if not isinstance(value, str) or not value:
        raise invalid_request(f"Missing required parameter: '{param}'.", param=param,
                              code="missing_required_parameter")
    if any(char in value for char in "\r\n\0") or len(value) > MAX_SECRET_CHARS:
        raise invalid_request(f"Invalid '{param}': it must be one line of at most {MAX_SECRET_CHARS} characters, "
                              "without carriage returns, newlines or NUL bytes.", param=param, code="invalid_value")
    return value


def _timestamp(value: Any, param: str) -> str | None:
    """An RFC 3339 timestamp with its offset (kept as written), or None."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value) if isinstance(value, str) and "T" in value.upper() else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise invalid_request(f"Invalid '{param}': expected an RFC 3339 timestamp such as "
                              "'2026-01-31T12:00:00Z'.", param=param, code="invalid_value")
    return str(value)


def _object(value: Any, param: str) -> dict[str, Any]:
    if value is None:
        raise invalid_request(f"Missing required parameter: '{param}'.", param=param,
                              code="missing_required_parameter")
    if not isinstance(value, dict):
        raise invalid_request(f"Invalid type for '{param}': expected an object.", param=param, code="invalid_type")
    return value


def _text(value: Any, param: str, *, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise invalid_request(f"Missing required parameter: '{param}'." if value is None else
                              f"Invalid '{param}': expected a non-empty string.", param=param,
                              code="missing_required_parameter" if value is None else "invalid_value")
    if len(value) > MAX_FIELD_CHARS or any(char in value for char in "\r\n\0"):
        raise invalid_request(f"Invalid '{param}': one line of at most {MAX_FIELD_CHARS} characters.", param=param,
                              code="invalid_value")
    return value
