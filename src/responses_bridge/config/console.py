"""The console (``/console`` on the HTTP door, adapters/http/console/): whether it is served, who may open it when
the API has no keys, how long a sign-in lasts. A group of settings.py's :class:`Settings`, in a module of its own
beside desktop_watch.py."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings


class ModelPrice(BaseModel):
    """What a model's tokens cost, per million (in the deployment's currency: the console writes no symbol)."""

    model_config = ConfigDict(extra="forbid")
    input: Decimal = Field(ge=0, description="per million input tokens")
    cached_input: Decimal | None = Field(default=None, ge=0, description=(
        "per million cached input tokens (`usage.input_tokens_details.cached_tokens`); unset: the input price"))
    output: Decimal = Field(ge=0, description="per million output tokens (reasoning tokens among them)")


class ConsoleSettings(BaseSettings):
    """Off unless asked for (``scripts/demo`` turns it on): a deployment that never opens it serves no page and
    imports none of it."""

    console: Literal["on", "off"] = Field(default="off", description=(
        "the console: logs, sessions, traces, usage and operations in a browser at `/console` of the HTTP door "
        "(`pip install 'responses-bridge[console]'`); signing in takes an API key (auth: keys)"))
    console_remote: bool = Field(default=False, description=(
        "with auth: none, serve the console to clients beyond loopback too (everyone is then its operator); "
        "by default a console without keys answers loopback only"))
    console_sign_in_seconds: float = Field(default=8 * 3600.0, gt=0, le=30 * 86400, description=(
        "how long a console sign-in lasts before the key is asked for again (the sealed cookie expires)"))
    console_prices: dict[str, ModelPrice] = Field(default={}, description=(
        "what each model's tokens cost, per million: `{\"gpt-4o\": {\"input\": 2.5, \"cached_input\": 1.25, "
        "\"output\": 10}}`; a name may end in `*` (a prefix: `gpt-4o*`), the longest matching one applies. The "
        "console's Logs, response pages, Usage and CSV exports then show each response's spend; a model with no "
        "price shows tokens only. None by default"))
