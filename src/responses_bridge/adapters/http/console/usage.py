"""Usage: requests and tokens over time by model (and, for an operator, by tenant), as SVG bar charts drawn here,
and the window's totals by tenant and model in tokens and, where the model has a price (pricing.py), in money — the
same totals the page's CSV export writes.

Summed in the database (store/browsing.py's ``usage_sums``): one ``GROUP BY`` a tenant over its usage index, by
bucket of the chart, model and API key, from columns written when each response was stored (store/timings.py)
— no stored response is parsed, so every response of the window counts and a page costs a few milliseconds at
100,000 stored responses (it parsed up to 5,000 a tenant before: 89 ms). Totals by API key are its key's id (as
``keys list`` shows it), never the key; responses no key made (an open door) are under "(no key)". A chart is
numbers placed by the server; every label is escaped text in the template (no script draws anything).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ....store import ResponseStore
from ....store.browsing import UsageSum
from .pricing import Prices

NO_KEY = "(no key)"
TENANTS_COUNTED = 20
"""An operator's usage of every tenant counts this many tenants at most (in name order), so the page's cost stays
bounded whatever the number of tenants; one tenant's usage is asked for with ``?tenant=``."""
WINDOWS = {"24h": (86400, 3600, "%H:00"), "7d": (7 * 86400, 86400, "%m-%d"), "30d": (30 * 86400, 86400, "%m-%d")}
PALETTE = ("#2563eb", "#16a34a", "#d97706", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d")
WIDTH, HEIGHT, LEFT, BOTTOM = 720, 220, 48, 24


@dataclass(slots=True)
class Series:
    name: str
    color: str
    requests: int = 0
    tokens: int = 0


@dataclass(slots=True)
class Chart:
    """One chart: bars stacked by series, one bar per bucket of the window."""

    title: str
    series: list[Series]
    bars: list[dict[str, Any]]  # x, width, and rects: (y, height, color, label)
    ticks: list[tuple[float, str]]  # x, label
    peak: int
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    bottom: int = BOTTOM


@dataclass(slots=True)
class Total:
    """One tenant's use of one model over the window: a line of the totals table and of the CSV export."""

    tenant: str
    model: str
    key: str = ""  # an API key's id (Usage by key), NO_KEY for responses made without one
    requests: int = 0
    input_tokens: int = 0  # uncached
    cached_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    spend: Decimal | None = None  # None: the model has no price (its tokens are still counted)
    unpriced: int = 0  # requests of a priced model that said no usage (no spend counted for them)


@dataclass(slots=True)
class Usage:
    window: str
    charts: list[Chart] = field(default_factory=list)
    counted: int = 0
    cut_short: bool = False
    totals: list[Total] = field(default_factory=list)  # by tenant then model
    key_totals: list[Total] = field(default_factory=list)  # by tenant, key, then model (spend priced per model)
    priced: bool = False  # the deployment has a price table

    @property
    def spend(self) -> Decimal | None:
        spent = [total.spend for total in self.totals if total.spend is not None]
        return sum(spent, Decimal(0)) if spent else None

    def by(self, what: str) -> list[Total]:
        """The totals summed by ``"model"``, ``"tenant"`` or ``"key"``, in name order."""
        summed: dict[str, Total] = {}
        for total in self.key_totals if what == "key" else self.totals:
            name = getattr(total, what)
            into = summed.setdefault(name, Total(total.tenant if what == "tenant" else "",
                                                 total.model if what == "model" else "",
                                                 total.key if what == "key" else ""))
            _add(into, total)
        return [summed[name] for name in sorted(summed)]


def _add(into: Total, total: Total) -> None:
    into.requests += total.requests
    into.input_tokens += total.input_tokens
    into.cached_tokens += total.cached_tokens
    into.output_tokens += total.output_tokens
    into.total_tokens += total.total_tokens
    into.unpriced += total.unpriced
    if total.spend is not None:
        into.spend = (into.spend or Decimal(0)) + total.spend


Sums = dict[str, list[int]]
"""By model: requests, uncached input, cached input, output and total tokens, and requests that said no usage."""


def summed(groups: list[UsageSum], key: str | None = "") -> Sums:
    """The groups' sums by model (those of one API key id, NO_KEY's being None, unless ``key`` is ``""``)."""
    sums: Sums = {}
    for group in groups:
        if key != "" and (group.key_id or NO_KEY) != key:
            continue
        into = sums.get(group.model) or sums.setdefault(group.model, [0, 0, 0, 0, 0, 0])
        for n, value in enumerate((group.requests, group.input_tokens, group.cached_tokens, group.output_tokens,
                                   group.total_tokens, group.no_usage)):
            into[n] += value
    return sums


def totals(tenant: str, sums: Sums, prices: Prices | None, key: str = "") -> list[Total]:
    """The tenant's totals by model; a priced model's spend computed once from its summed tokens (a price is
    linear in each kind of token, so this is the sum of every response's spend, exactly, in decimals)."""
    shown = []
    for model in sorted(sums):
        requests, fresh, cached, output, total_tokens, no_usage = sums[model]
        total = Total(tenant, model, key, requests, fresh, cached, output, total_tokens)
        if prices and requests > no_usage:
            total.spend = prices.spend(model, {"input_tokens": fresh + cached, "output_tokens": output,
                                               "input_tokens_details": {"cached_tokens": cached}})
        total.unpriced = no_usage if total.spend is not None else 0  # no price: nothing missing from no spend
        shown.append(total)
    return shown


async def usage(store: ResponseStore, tenants: list[str], window: str, *, by_tenant: bool,
                prices: Prices | None = None) -> Usage:
    span, step, label = WINDOWS.get(window, WINDOWS["24h"])
    now = time.time()
    start = (int(now - span) // step + 1) * step
    shown = Usage(window if window in WINDOWS else "24h", priced=bool(prices))
    by_model: list[Bar] = []
    per_tenant: list[Bar] = []
    shown.cut_short = len(tenants) > TENANTS_COUNTED
    for tenant in tenants[:TENANTS_COUNTED]:
        groups = await store.browser.usage_sums(tenant=tenant, since_hour=start // 3600)  # a bar starts on an hour
        shown.totals.extend(totals(tenant, summed(groups), prices))
        for key in sorted({group.key_id or NO_KEY for group in groups}):
            shown.key_totals.extend(totals(tenant, summed(groups, key), prices, key))
        by_model.extend(((group.hour * 3600 - start) // step, group.model, group.requests, group.total_tokens)
                        for group in groups)
        if by_tenant:
            per_tenant.extend(((group.hour * 3600 - start) // step, tenant, group.requests, group.total_tokens)
                              for group in groups)
        shown.counted += sum(group.requests for group in groups)
    buckets = [start + step * n for n in range(span // step)]
    shown.charts.append(chart("Requests by model", by_model, buckets, label, tokens=False))
    shown.charts.append(chart("Tokens by model", by_model, buckets, label, tokens=True))
    if by_tenant:
        shown.charts.append(chart("Requests by tenant", per_tenant, buckets, label, tokens=False))
    return shown


Bar = tuple[int, str, int, int]
"""A chart's input: bucket index, series name, requests, tokens."""


def chart(title: str, rows: list[Bar], buckets: list[int], label: str, *, tokens: bool) -> Chart:
    names = sorted({name for _, name, _, _ in rows})
    series = {name: Series(name, PALETTE[n % len(PALETTE)]) for n, name in enumerate(names)}
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for index, name, requests, used in rows:
        if 0 <= index < len(buckets):
            counts[index][name] += used if tokens else requests
        series[name].requests += requests
        series[name].tokens += used
    peak = max((sum(bucket.values()) for bucket in counts.values()), default=0)
    plot_width, plot_height = WIDTH - LEFT, HEIGHT - BOTTOM
    slot = plot_width / max(1, len(buckets))
    bars = []
    for index in sorted(counts):
        y = float(plot_height)
        rects = []
        for name in names:
            value = counts[index].get(name, 0)
            if not value:
                continue
            height = plot_height * value / peak if peak else 0
            y -= height
            rects.append((round(y, 1), round(height, 1), series[name].color,
                          f"{name}: {value} {'tokens' if tokens else 'requests'}"))
        bars.append({"x": round(LEFT + index * slot + slot * 0.1, 1), "width": round(slot * 0.8, 1), "rects": rects})
    every = max(1, len(buckets) // 8)
    ticks = [(round(LEFT + n * slot, 1), datetime.fromtimestamp(at, UTC).strftime(label))
             for n, at in enumerate(buckets) if n % every == 0]
    return Chart(title, list(series.values()), bars, ticks, peak)
