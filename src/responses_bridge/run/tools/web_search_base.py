"""What every web search provider shares: the result type, the error, the provider interface, the deployment's
settings, and the pure rules for domains, locations and result clean-up.

Kept apart from the providers so that they and the presentation helpers can import it without a cycle, and so
that ``config/settings.py`` can validate ``RESPONSES_BRIDGE_WEB_SEARCH`` with :func:`parse_provider_spec` at start-up
(a typo should stop the process, not fail the first search).
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

ProviderKind = Literal["searxng", "brave", "tavily"]

BRAVE_DEFAULT_BASE = "https://api.search.brave.com"
TAVILY_DEFAULT_BASE = "https://api.tavily.com"


class WebSearchError(Exception):
    """A search that could not be made or read. The message is meant for people and for the model: it names the
    provider and what went wrong, and never carries the provider's key."""


@dataclass(frozen=True, slots=True)
class SearchResult:
    url: str
    title: str
    snippet: str


class SearchProvider(Protocol):
    """One search backend. ``search`` returns at most ``max_results`` results; it honours ``allowed_domains``
    natively where the backend can (query operators or a parameter) and filters its results by them always."""

    name: str

    async def search(self, query: str, *, max_results: int, user_location: dict[str, Any] | None,
                     allowed_domains: list[str] | None) -> list[SearchResult]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class WebSearchSettings:
    """What a provider needs from the deployment's settings (built by ``Settings.web_search_settings()``)."""

    provider: ProviderKind
    base_url: str  # SearXNG's own URL, or the hosted API's base (overridable, e.g. for a loopback fake)
    api_key: str | None = field(default=None, repr=False)
    timeout: float = 15.0  # whole request, seconds
    connect_timeout: float = 5.0
    max_response_bytes: int = 2 * 1024 * 1024  # a larger answer is refused, not buffered

    def __post_init__(self) -> None:
        if self.provider in ("brave", "tavily") and not self.api_key:
            raise ValueError(f"web search provider {self.provider!r} needs an API key")


def parse_provider_spec(spec: str) -> tuple[ProviderKind, str | None]:
    """``searxng:URL`` | ``brave`` | ``tavily`` → (kind, SearXNG URL or None). Raises ValueError saying what fits."""
    text = spec.strip()
    if text in ("brave", "tavily"):
        return text, None  # type: ignore[return-value]
    if text.startswith("searxng:"):
        url = text[len("searxng:"):].strip().rstrip("/")
        parts = urlsplit(url)
        if parts.scheme in ("http", "https") and parts.netloc:
            return "searxng", url
        raise ValueError(f"RESPONSES_BRIDGE_WEB_SEARCH={spec!r}: 'searxng:' must be followed by the instance's "
                         "http(s) URL, e.g. searxng:http://127.0.0.1:8888")
    raise ValueError(f"RESPONSES_BRIDGE_WEB_SEARCH={spec!r} is not one of searxng:URL, brave, tavily")


# --- allowed domains -------------------------------------------------------------------------------------------

def normalize_domains(domains: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """``["https://Docs.Example.com/x", "*.b.org"]`` → ``("docs.example.com", "b.org")``: bare lower-case hosts."""
    found: list[str] = []
    for entry in domains or ():
        if not isinstance(entry, str):
            continue
        text = entry.strip().lower()
        if "://" in text:
            text = urlsplit(text).hostname or ""
        text = text.split("/", 1)[0].split(":", 1)[0].lstrip("*").strip(".")
        if text and text not in found:
            found.append(text)
    return tuple(found)


def url_host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower().rstrip(".")
    except ValueError:
        return ""


def domain_allowed(url: str, domains: tuple[str, ...]) -> bool:
    """A URL is allowed when its host is one of ``domains`` or a subdomain of one (OpenAI's rule)."""
    if not domains:
        return True
    host = url_host(url)
    return any(host == domain or host.endswith("." + domain) for domain in domains)


def site_clause(domains: tuple[str, ...]) -> str:
    """Query operators restricting a search to ``domains``, for engines that have no domain parameter."""
    if len(domains) == 1:
        return f"site:{domains[0]}"
    return "(" + " OR ".join(f"site:{domain}" for domain in domains) + ")"


# --- user location ---------------------------------------------------------------------------------------------

# The main language of a country, for backends that localise by language (SearXNG's ``language=de-CH``, Brave's
# ``search_lang``). Countries not listed are searched without a language hint rather than with a wrong one.
COUNTRY_LANGUAGE = {
    "AR": "es", "AT": "de", "AU": "en", "BE": "nl", "BR": "pt", "CA": "en", "CH": "de", "CL": "es", "CN": "zh",
    "CO": "es", "CZ": "cs", "DE": "de", "DK": "da", "ES": "es", "FI": "fi", "FR": "fr", "GB": "en", "GR": "el",
    "HK": "zh", "HU": "hu", "ID": "id", "IE": "en", "IL": "he", "IN": "en", "IT": "it", "JP": "ja", "KR": "ko",
    "MX": "es", "MY": "ms", "NL": "nl", "NO": "nb", "NZ": "en", "PH": "en", "PL": "pl", "PT": "pt", "RO": "ro",
    "RU": "ru", "SA": "ar", "SE": "sv", "SG": "en", "TR": "tr", "TW": "zh", "UA": "uk", "US": "en", "VN": "vi",
    "ZA": "en",
}


def location_country(user_location: dict[str, Any] | None) -> str | None:
    """The ISO 3166-1 alpha-2 country of a ``user_location`` (upper case), if it has a well-formed one."""
    if not isinstance(user_location, dict):
        return None
    country = user_location.get("country")
    if isinstance(country, str) and re.fullmatch(r"[A-Za-z]{2}", country.strip()):
        return country.strip().upper()
    return None


# --- result clean-up -------------------------------------------------------------------------------------------

_TAG = re.compile(r"<[^>]{0,200}>")
_SPACE = re.compile(r"\s+")


def clean_text(value: Any) -> str:
    """Provider snippets carry HTML highlights (``<strong>``) and entities; the model gets plain text."""
    if not isinstance(value, str):
        return ""
    return _SPACE.sub(" ", html.unescape(_TAG.sub("", value))).strip()


def make_result(url: Any, title: Any, snippet: Any) -> SearchResult | None:
    """One result from a provider's raw fields, or None when it has no usable http(s) URL."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or not url_host(url):
        return None
    return SearchResult(url=url.strip(), title=clean_text(title) or url_host(url), snippet=clean_text(snippet))


def keep(results: list[SearchResult], *, max_results: int, domains: tuple[str, ...]) -> list[SearchResult]:
    """The first ``max_results`` results inside ``domains``, each URL once."""
    kept: list[SearchResult] = []
    seen: set[str] = set()
    for result in results:
        key = result.url.rstrip("/")
        if key in seen or not domain_allowed(result.url, domains):
            continue
        seen.add(key)
        kept.append(result)
        if len(kept) >= max_results:
            break
    return kept
