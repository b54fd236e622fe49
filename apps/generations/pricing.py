"""The price of a generation in credits.

1. **Base**: the trend's price for the quality tier (`Trend.price_draft/standard/cinema`, edited by
   curators); a free prompt without a trend uses `GENERATIONS_PROMPT_PRICES[tier]`.
2. **Rule**: of the enabled `PriceRule`s that match the generation's route, tier and duration (an empty
   field matches anything), the most specific applies: a rule naming the route beats one that does
   not, then one naming the tier, then one naming the duration (ties cannot exist: admin refuses two
   enabled rules for the same route, tier and duration). Price = round_half_up(base x multiplier) +
   add_credits. Rules never stack. No matching rule: price = base.
3. **Lane**: ECONOMY takes `GENERATIONS_ECONOMY_DISCOUNT_PERCENT` percent off, rounded down.
4. A price is never below 1 credit.

Example: a trend at 4 credits (STANDARD), a rule "wan2.2-ti2v-5b / STANDARD / 8 s: x1.5 + 0" and an
8-second ECONOMY generation on that route: 4 x 1.5 = 6, minus 25% (1) = 5 credits.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings
from django.db.models import Q

from apps.trends.models import Trend

from .models import Lane, ModelRoute, PriceRule


def price_base(*, trend: Trend | None, quality: str) -> int:
    if trend is not None:
        return trend.price_for(quality)
    return int(settings.GENERATIONS_PROMPT_PRICES[quality])


def price_rule_for(*, route: ModelRoute, quality: str, duration_seconds: int) -> PriceRule | None:
    """The most specific enabled rule for this route, tier and duration, or None (one query)."""
    rules = PriceRule.objects.filter(
        Q(route=route) | Q(route__isnull=True),
        Q(quality=quality) | Q(quality=""),
        Q(duration_seconds=duration_seconds) | Q(duration_seconds__isnull=True),
        enabled=True,
    )
    return max(rules, key=lambda rule: (rule.specificity, rule.updated_at), default=None)


def price_credits(
    *, trend: Trend | None, route: ModelRoute, quality: str, duration_seconds: int, lane: str
) -> int:
    price = Decimal(price_base(trend=trend, quality=quality))
    rule = price_rule_for(route=route, quality=quality, duration_seconds=duration_seconds)
    if rule is not None:
        price = (price * rule.multiplier).quantize(Decimal(1), rounding=ROUND_HALF_UP) + rule.add_credits
    credits = max(int(price), 1)
    if lane == Lane.ECONOMY:
        credits -= credits * settings.GENERATIONS_ECONOMY_DISCOUNT_PERCENT // 100
    return max(credits, 1)
