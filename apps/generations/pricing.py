"""The price of a generation in credits: what its render costs the GPU, then the curators' adjustments.

1. **Compute**: the cost of the clip at the tier's render profile on the route, steps x latent tokens
   (`RenderProfile.clip_cost`, the figure the ETA scales with and bench/tiers.py prints), times the route's
   admin-set `credits_per_million_cost`, rounded half up. So a DRAFT (smaller, fewer steps) costs less
   than STANDARD, CINEMA (more steps) more, and an 8-second clip more than a 5-second one. A route priced
   at 0 has no compute price (the floor below alone).
2. **Floor**: the trend's price for the tier (`Trend.price_draft/standard/cinema`, edited by curators) is
   its minimum: a trend may cost more than its render, never less. A free prompt without a trend has
   `GENERATIONS_PROMPT_PRICES[tier]` as its floor. Base = max(compute, floor).
3. **Rule**: of the enabled `PriceRule`s that match the generation's route, tier and duration (an empty
   field matches anything), the most specific applies: a rule naming the route beats one that does
   not, then one naming the tier, then one naming the duration (ties cannot exist: admin refuses two
   enabled rules for the same route, tier and duration). Price = round_half_up(base x multiplier) +
   add_credits. Rules never stack. No matching rule: price = base.
4. **Lane**: ECONOMY takes `GENERATIONS_ECONOMY_DISCOUNT_PERCENT` percent off, rounded down.
5. A price is never below 1 credit.

The cost is the profile's, not the route's measured seconds (which follow every completed job): a price
that moved between the quote and the tap would charge what was not shown.

Example: wan2.2-ti2v-5b at 3 credits per million, STANDARD (1280x704, 50 steps), 5 s (121 frames, 31
latent frames, 27,280 tokens): 1,364,000 x 3 / 1e6 = 4.09 -> 4 credits; a trend whose STANDARD price is 4
leaves it at 4; a rule "wan2.2-ti2v-5b / STANDARD / 5 s: x1.5 + 0" makes it 6; ECONOMY takes 25% (1): 5.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal

from django.conf import settings

import gpu_worker.contract as contract
from apps.core.table_cache import TableCache, table_versions_pinned
from apps.trends import selectors as trend_selectors
from apps.trends.models import Trend

from .models import Lane, ModelRoute, PriceRule
from .routing import routes_by_id

COST_PER_PRICE_UNIT = 1_000_000  # a route's compute price is in credits per million step-tokens


def _round(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def clip_cost(*, route: ModelRoute, quality: str, duration_seconds: int) -> int:
    """Steps x latent tokens of a clip of `duration_seconds` on `route` at `quality`'s render profile (its
    landscape size: a price depends on the route, the tier and the length, not on the aspect ratio)."""
    profile = route.profile(quality)
    frames = contract.frames_for_duration(
        duration_seconds, fps=profile.fps, frame_multiple=route.rules.frame_multiple
    )
    return profile.clip_cost(route.family, num_frames=frames)


def price_compute(*, route: ModelRoute, quality: str, duration_seconds: int) -> int:
    """What the render costs in credits: its cost times the route's price per million (rounded half up)."""
    cost = clip_cost(route=route, quality=quality, duration_seconds=duration_seconds)
    return _round(Decimal(cost) * route.credits_per_million_cost / COST_PER_PRICE_UNIT)


def price_floor(*, trend: Trend | None, quality: str) -> int:
    if trend is not None:
        return trend.price_for(quality)
    return int(settings.GENERATIONS_PROMPT_PRICES[quality])


def _most_specific(
    rules: Iterable[PriceRule], *, route: ModelRoute, quality: str, duration_seconds: int
) -> PriceRule | None:
    matching = [
        rule
        for rule in rules
        if rule.enabled
        and rule.route_id in (route.pk, None)
        and rule.quality in (quality, "")
        and rule.duration_seconds in (duration_seconds, None)
    ]
    return max(matching, key=lambda rule: (rule.specificity, rule.updated_at), default=None)


_enabled_rules = TableCache(PriceRule, lambda: tuple(PriceRule.objects.filter(enabled=True)))


def price_rule_for(*, route: ModelRoute, quality: str, duration_seconds: int) -> PriceRule | None:
    """The most specific enabled rule for this route, tier and duration, or None. The enabled rules come
    from this process's copy while the table's version holds (apps/core/table_cache.py): no query."""
    return _most_specific(
        _enabled_rules.get(), route=route, quality=quality, duration_seconds=duration_seconds
    )


def price_credits(
    *, trend: Trend | None, route: ModelRoute, quality: str, duration_seconds: int, lane: str
) -> int:
    rule = price_rule_for(route=route, quality=quality, duration_seconds=duration_seconds)
    return _price(
        trend=trend, route=route, quality=quality, duration_seconds=duration_seconds, lane=lane, rule=rule
    )


def _price(
    *,
    trend: Trend | None,
    route: ModelRoute,
    quality: str,
    duration_seconds: int,
    lane: str,
    rule: PriceRule | None,
) -> int:
    return _priced(
        max(
            price_compute(route=route, quality=quality, duration_seconds=duration_seconds),
            price_floor(trend=trend, quality=quality),
        ),
        rule=rule,
        lane=lane,
    )


def _priced(base: int, *, rule: PriceRule | None, lane: str) -> int:
    """The credits for a base price (the larger of compute price and floor): the rule, then the lane."""
    price = Decimal(base)
    if rule is not None:
        price = Decimal(_round(price * rule.multiplier) + rule.add_credits)
    credits = max(int(price), 1)
    if lane == Lane.ECONOMY:
        credits -= credits * settings.GENERATIONS_ECONOMY_DISCOUNT_PERCENT // 100
    return max(credits, 1)


def trend_card_prices(trends: Sequence[Trend]) -> list[dict[str, int]]:
    """What a video of each trend costs at each tier, as a quote of its defaults says (its default length,
    the INSTANT lane, the route a tier takes: GENERATIONS_ROUTE_OVERRIDE, else the first enabled route of
    the trend's preferred chain that offers it); a tier no route offers shows the trend's price. For the
    trend cards of the home screen: the routes and the enabled price rules come from this process's copies
    (apps/core/table_cache.py, as for quotes and creates), so a warm home screen reads no table and an
    admin's change reaches the cards at once."""
    with table_versions_pinned():
        routes, rules = routes_by_id(), _enabled_rules.get()
    by_name = {route.name: route for route in routes.values()}
    override = settings.GENERATIONS_ROUTE_OVERRIDE

    def route_for(trend: Trend, quality: str) -> ModelRoute | None:
        if override:
            route = by_name.get(override)
            return route if route is not None and route.enabled else None
        route, seen = by_name.get(trend.preferred_model_route), set()
        while route is not None and route.pk not in seen:
            seen.add(route.pk)
            if route.enabled and quality in route.quality_tiers and Lane.INSTANT in route.lanes:
                return route
            route = routes.get(route.fallback_id)
        return None

    # A route's compute price and the rule that applies depend on the route, the tier and the length, not
    # on the trend: each is worked out once per call, not once per card (the home screen's cards share a
    # few routes).
    compute: dict[tuple, tuple[int, PriceRule | None]] = {}
    prices = []
    for trend in trends:
        tiers = {}
        for quality in contract.TIERS:
            route = route_for(trend, quality)
            if route is None:
                tiers[quality] = trend.price_for(quality)
                continue
            duration = trend.default_duration_seconds
            key = (route.pk, quality, duration)
            if key not in compute:
                compute[key] = (
                    price_compute(route=route, quality=quality, duration_seconds=duration),
                    _most_specific(rules, route=route, quality=quality, duration_seconds=duration),
                )
            route_price, rule = compute[key]
            tiers[quality] = _priced(
                max(route_price, price_floor(trend=trend, quality=quality)), rule=rule, lane=Lane.INSTANT
            )
        prices.append(tiers)
    return prices


def home_screen_with_card_prices(*, audience, user=None) -> tuple:
    """(the home screen for `audience` and `user` from `home_screen_get`, its distinct trends, their card
    prices from `trend_card_prices` in the same order): what `homeScreen` reads in one thread hop."""
    screen = trend_selectors.home_screen_get(audience=audience, user=user)
    trends = list({trend.pk: trend for entry in screen.sections for trend in entry.trends}.values())
    return screen, trends, trend_card_prices(trends)
