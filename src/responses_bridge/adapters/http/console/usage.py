"""Usage: requests and tokens over time by model (and, for an operator, by tenant), as SVG bar charts drawn here,
and the window's totals by tenant and model in tokens and, where the model has a price (pricing.py), in money — the
same totals the page's CSV export writes.

Counted from the stored responses of the window, newest first, through the API's own listing (the index led by the
tenant, the window a range of it), at most :data:`COUNTED` of them a tenant: a chart costs the same on a store of
any size, and says so when it stopped short of the window's start. A chart is numbers placed by the server; every
label is escaped text in the template (no script draws anything).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from ....store import ResponseStore
from ....store.records import MAX_PAGE_LIMIT, ResponseFilter
from .pricing import Prices, tokens

COUNTED = 5000
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
    priced: bool = False  # the deployment has a price table

    @property
    def spend(self) -> Decimal | None:
        spent = [total.spend for total in self.totals if total.spend is not None]
        return sum(spent, Decimal(0)) if spent else None

    def by(self, what: str) -> list[Total]:
        """The totals summed by ``"model"`` or ``"tenant"``, in name order."""
        summed: dict[str, Total] = {}
        for total in self.totals:
            name = getattr(total, what)
            into = summed.setdefault(name, Total(total.tenant if what == "tenant" else "",
                                                 total.model if what == "model" else ""))
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


@dataclass(slots=True)
class Used:
    """What one stored response used."""

    at: int
    model: str
    total_tokens: int
    counted: tuple[int, int, int] | None  # uncached input, cached input, output
    spend: Decimal | None


async def tenant_usage(store: ResponseStore, tenant: str, since: float,
                       prices: Prices | None = None) -> tuple[list[Used], bool]:
    """What each of the tenant's responses since ``since`` used, at most :data:`COUNTED`; True when there were
    more."""
    rows: list[Used] = []
    after = None
    where = ResponseFilter(created_after=int(since))
    while True:
        page = await store.list_responses(tenant=tenant, after=after, limit=MAX_PAGE_LIMIT, order="desc", where=where)
        for raw in page.data:
            response = orjson.loads(raw)
            usage = response.get("usage") if isinstance(response.get("usage"), dict) else {}
            total = usage.get("total_tokens")
            model = str(response.get("model") or "?")
            rows.append(Used(int(response.get("created_at") or 0), model, total if isinstance(total, int) else 0,
                             tokens(usage), prices.spend(model, usage) if prices else None))
        if not page.has_more:
            return rows, False
        if len(rows) >= COUNTED:
            return rows, True
        after = page.ids[-1]


def totals(tenant: str, rows: list[Used], prices: Prices | None) -> list[Total]:
    by_model: dict[str, Total] = {}
    for used in rows:
        total = by_model.setdefault(used.model, Total(tenant, used.model))
        total.requests += 1
        total.total_tokens += used.total_tokens
        if used.counted is not None:
            total.input_tokens += used.counted[0]
            total.cached_tokens += used.counted[1]
            total.output_tokens += used.counted[2]
        if used.spend is not None:
            total.spend = (total.spend or Decimal(0)) + used.spend
        elif prices and prices.price(used.model) is not None:
            total.unpriced += 1
    return [by_model[name] for name in sorted(by_model)]


async def usage(store: ResponseStore, tenants: list[str], window: str, *, by_tenant: bool,
                prices: Prices | None = None) -> Usage:
    span, step, label = WINDOWS.get(window, WINDOWS["24h"])
    now = time.time()
    start = (int(now - span) // step + 1) * step
    shown = Usage(window if window in WINDOWS else "24h", priced=bool(prices))
    by_model: list[tuple[int, str, int]] = []
    per_tenant: list[tuple[int, str, int]] = []
    shown.cut_short = len(tenants) > TENANTS_COUNTED
    for tenant in tenants[:TENANTS_COUNTED]:
        used, short = await tenant_usage(store, tenant, start, prices)
        shown.cut_short |= short
        shown.totals.extend(totals(tenant, used, prices))
        by_model.extend((row.at, row.model, row.total_tokens) for row in used)
        per_tenant.extend((row.at, tenant, row.total_tokens) for row in used)
    shown.counted = len(by_model)
    buckets = [start + step * n for n in range(span // step)]
    shown.charts.append(chart("Requests by model", by_model, buckets, step, label, tokens=False))
    shown.charts.append(chart("Tokens by model", by_model, buckets, step, label, tokens=True))
    if by_tenant:
        shown.charts.append(chart("Requests by tenant", per_tenant, buckets, step, label, tokens=False))
    return shown


def chart(title: str, rows: list[tuple[int, str, int]], buckets: list[int], step: int, label: str, *,
          tokens: bool) -> Chart:
    names = sorted({name for _, name, _ in rows})
    series = {name: Series(name, PALETTE[n % len(PALETTE)]) for n, name in enumerate(names)}
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    first = buckets[0] if buckets else 0
    for at, name, used in rows:
        index = (at - first) // step
        if 0 <= index < len(buckets):
            counts[index][name] += used if tokens else 1
        series[name].requests += 1
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
