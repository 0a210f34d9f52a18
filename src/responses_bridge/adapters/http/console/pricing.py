"""What a response cost: its usage priced by the configured table (``console_prices``, none by default).

Prices are per million tokens and kept as decimals, so a sum over many responses (Usage, a CSV) is exact to the
last digit shown, never a float's drift. A response's input tokens are priced at the input price but for its cached
ones (``input_tokens_details.cached_tokens``), priced at the cached price (the input price when none is set); its
output tokens (reasoning among them, as the API counts them) at the output price. A model with no price, or a
response with no usage, has no spend: the console shows its tokens only, never a guess.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from ....config.console import ModelPrice
from ....store.timings import counted_tokens

MILLION = Decimal(1_000_000)
SHOWN = Decimal("0.000001")
"""Spend is shown (and exported) to the millionth: a price per million tokens is a price per token to that."""


class Prices:
    def __init__(self, table: Mapping[str, ModelPrice]) -> None:
        self.exact = {name: price for name, price in table.items() if not name.endswith("*")}
        self.prefixes = sorted(((name[:-1], price) for name, price in table.items() if name.endswith("*")),
                               key=lambda entry: -len(entry[0]))

    def __bool__(self) -> bool:
        return bool(self.exact or self.prefixes)

    def price(self, model: str) -> ModelPrice | None:
        found = self.exact.get(model)
        if found is not None:
            return found
        return next((price for prefix, price in self.prefixes if model.startswith(prefix)), None)

    def spend(self, model: str, usage: Any) -> Decimal | None:
        """What ``usage`` (a response's ``usage`` object) cost at ``model``'s price; None without either."""
        price = self.price(model)
        if price is None or not isinstance(usage, dict):
            return None
        spent = tokens(usage)
        if spent is None:
            return None
        fresh, cached, output = spent
        cached_price = price.cached_input if price.cached_input is not None else price.input
        return (fresh * price.input + cached * cached_price + output * price.output) / MILLION


def tokens(usage: dict[str, Any]) -> tuple[int, int, int] | None:
    """``(uncached input, cached input, output)`` tokens of a usage object, None when it counts none: the store's
    own count (store/timings.py), so a response's spend here and its columns summed by Usage agree."""
    return counted_tokens(usage)


def money(amount: Decimal | None) -> str:
    """An amount as shown and exported: to the millionth, no symbol (the table's currency is the deployment's)."""
    return "" if amount is None else str(amount.quantize(SHOWN))
