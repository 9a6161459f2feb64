"""What a run costs: prices from ``--price-input/--price-output`` or genai-prices.

genai-prices knows many providers' per-token prices and, for some, a batch
variant (``processing: batch``, typically half price). A model it does not know
is reported as *unknown*; the pipeline never guesses a price.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class Pricing:
    """USD per million tokens, batch and synchronous."""

    source: str
    """``flags`` or ``genai-prices (<provider>/<model>)``."""
    batch_input: Decimal
    batch_output: Decimal
    sync_input: Decimal
    sync_output: Decimal
    batch_discount_known: bool
    """False when the source has no batch rate and the synchronous one is used."""


@dataclass(frozen=True)
class CostReport:
    """Tokens and what they cost (``None`` costs mean: price unknown)."""

    model: str | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    batch_usd: Decimal | None
    sync_usd: Decimal | None
    source: str
    note: str | None = None

    def describe(self) -> str:
        tokens = f"{self.input_tokens:,} input + {self.output_tokens:,} output tokens"
        if self.batch_usd is None or self.sync_usd is None:
            return f"{tokens}; cost unknown ({self.note or self.source})"
        text = (
            f"{tokens}; ${self.batch_usd:.4f} at batch rates "
            f"(${self.sync_usd:.4f} synchronous) [{self.source}]"
        )
        return text + (f"; {self.note}" if self.note else "")


def find_pricing(
    model: str | None,
    *,
    price_input: float | None = None,
    price_output: float | None = None,
    base_url: str | None = None,
) -> Pricing | str:
    """The prices for ``model``, or a sentence saying why none is known."""
    if price_input is not None or price_output is not None:
        if price_input is None or price_output is None:
            return "give both --price-input and --price-output"
        pin, pout = Decimal(str(price_input)), Decimal(str(price_output))
        return Pricing("flags", pin, pout, pin, pout, True)
    if not model:
        return "no model"
    try:
        from genai_prices import Usage, calc_price
    except ImportError:
        return "genai-prices is not installed"
    million = Usage(input_tokens=1_000_000, output_tokens=0)
    million_out = Usage(input_tokens=0, output_tokens=1_000_000)
    provider_url = base_url if base_url and "api.openai.com" in base_url else None
    try:
        sync_in = calc_price(million, model, provider_api_url=provider_url)
        sync_out = calc_price(million_out, model, provider_api_url=provider_url)
        ctx = {"processing": "batch"}
        batch_in = calc_price(million, model, provider_api_url=provider_url, price_context=ctx)
        batch_out = calc_price(million_out, model, provider_api_url=provider_url, price_context=ctx)
    except LookupError:
        return f"no known price for model {model!r}; pass --price-input and --price-output"
    discounted = (batch_in.total_price, batch_out.total_price) != (
        sync_in.total_price,
        sync_out.total_price,
    )
    return Pricing(
        f"genai-prices ({sync_in.provider.id}/{sync_in.model.id})",
        batch_in.total_price,
        batch_out.total_price,
        sync_in.total_price,
        sync_out.total_price,
        discounted,
    )


def cost_report(
    model: str | None,
    pricing: Pricing | str,
    input_tokens: int,
    output_tokens: int,
    cached_tokens: int = 0,
) -> CostReport:
    """Price token counts (cached tokens are billed as input here: a conservative figure)."""
    if isinstance(pricing, str):
        return CostReport(
            model, input_tokens, output_tokens, cached_tokens, None, None, "unknown", pricing
        )
    tin, tout = Decimal(input_tokens), Decimal(output_tokens)
    batch = (tin * pricing.batch_input + tout * pricing.batch_output) / MILLION
    sync = (tin * pricing.sync_input + tout * pricing.sync_output) / MILLION
    note = None if pricing.batch_discount_known else "no batch discount known: synchronous rate"
    return CostReport(
        model, input_tokens, output_tokens, cached_tokens, batch, sync, pricing.source, note
    )
