"""The synthetic world's population: cards (entities) with their homes and habits, merchants and cities.

Seeded from `seed` alone (never from a date), so every day of a run, and every one-day run, sees the same
cards and merchants; pipelines.sources.synthetic draws each day's events from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.sections import SyntheticParams

# (category, share of merchants, log-offset of the typical amount); names follow the Kaggle dataset
CATEGORIES: tuple[tuple[str, float, float], ...] = (
    ("grocery_pos", 0.14, 0.35),
    ("gas_transport", 0.12, -0.25),
    ("shopping_pos", 0.10, 0.25),
    ("shopping_net", 0.08, 0.20),
    ("home", 0.08, 0.10),
    ("kids_pets", 0.07, -0.10),
    ("entertainment", 0.07, 0.00),
    ("food_dining", 0.08, -0.35),
    ("personal_care", 0.06, -0.30),
    ("health_fitness", 0.06, -0.20),
    ("misc_pos", 0.05, -0.10),
    ("misc_net", 0.05, -0.05),
    ("grocery_net", 0.02, -0.10),
    ("travel", 0.02, 0.90),
)
CATEGORY_NAMES = tuple(c for c, _, _ in CATEGORIES)
# categories that only exist once drift starts (new merchants of a changed world)
NEW_CATEGORIES: tuple[tuple[str, float], ...] = (
    ("digital_goods", -0.6),
    ("crypto_exchange", 0.8),
    ("bnpl_online", 0.3),
)


@dataclass(frozen=True)
class World:
    """The population, seeded from `seed` only: cards, merchants and the cities they live in."""

    entity_ids: np.ndarray  # str
    home_city: np.ndarray
    home_lat: np.ndarray
    home_lon: np.ndarray
    amount_mu: np.ndarray  # log-space typical amount
    amount_sigma: np.ndarray
    rate: np.ndarray  # expected transactions per day
    night_owl: np.ndarray  # bool: legit cards that shop at night (makes "night" not trivially fraud)
    merchants: MerchantSet
    new_merchants: MerchantSet  # only used by drift mode


@dataclass(frozen=True)
class MerchantSet:
    names: np.ndarray  # str
    category: np.ndarray  # str
    amount_offset: np.ndarray
    city: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    by_city: np.ndarray  # merchant indices sorted by city
    city_start: np.ndarray  # first position of each city in by_city
    city_count: np.ndarray

    def near(self, rng: np.random.Generator, city: np.ndarray) -> np.ndarray:
        """A random merchant in each given city."""
        pos = self.city_start[city] + (rng.random(len(city)) * self.city_count[city]).astype(np.int64)
        return self.by_city[pos]

    def far(self, rng: np.random.Generator, city: np.ndarray) -> np.ndarray:
        """A random merchant outside each given city (inside it when there is only one city)."""
        n = len(self.names)
        others = np.maximum(n - self.city_count[city], 1)
        pos = (
            self.city_start[city] + self.city_count[city] + (rng.random(len(city)) * others).astype(np.int64)
        ) % n
        return self.by_city[pos]

    def of_categories(self, rng: np.random.Generator, categories: tuple[str, ...], size: int) -> np.ndarray:
        """Random merchants (anywhere) whose category is one of `categories`."""
        pool = np.flatnonzero(np.isin(self.category, categories))
        return pool[(rng.random(size) * len(pool)).astype(np.int64)]

    def near_of_categories(
        self, rng: np.random.Generator, city: np.ndarray, categories: tuple[str, ...]
    ) -> np.ndarray:
        """A merchant of one of `categories` in each city when one is found, else one anywhere."""
        # a few draws per event instead of per-(city, category) pools: cheap and vectorised
        cand = np.stack([self.near(rng, city) for _ in range(8)])
        ok = np.isin(self.category[cand], categories)
        chosen = cand[ok.argmax(axis=0), np.arange(len(city))]
        return np.where(ok.any(axis=0), chosen, self.of_categories(rng, categories, len(city)))


def _merchant_set(
    rng: np.random.Generator,
    n: int,
    prefix: str,
    categories: list[str],
    cat_share: np.ndarray,
    cat_offset: np.ndarray,
    city_lat: np.ndarray,
    city_lon: np.ndarray,
    city_weight: np.ndarray,
) -> MerchantSet:
    n_cities = len(city_lat)
    # every category and every city gets at least one merchant, so every lookup has a candidate
    cat_idx = rng.choice(len(categories), size=n, p=cat_share)
    cat_idx[: min(n, len(categories))] = np.arange(min(n, len(categories)))
    city = rng.choice(n_cities, size=n, p=city_weight)
    city[: min(n, n_cities)] = rng.permutation(n_cities)[: min(n, n_cities)]
    lat = city_lat[city] + rng.normal(0, 0.12, n)
    lon = city_lon[city] + rng.normal(0, 0.15, n)
    by_city = np.argsort(city, kind="stable")
    count = np.bincount(city, minlength=n_cities)
    start = np.cumsum(count) - count
    width = len(str(n))
    names = np.array([f"{prefix}{i:0{width}d}" for i in range(n)], dtype=object)
    return MerchantSet(
        names=names,
        category=np.array(categories, dtype=object)[cat_idx],
        amount_offset=cat_offset[cat_idx],
        city=city,
        lat=lat,
        lon=lon,
        by_city=by_city,
        city_start=start,
        city_count=count,
    )


def make_world(cfg: SyntheticParams) -> World:
    """Build the population (cards and merchants) from the seed alone."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, 0x5EED]))
    n_e, n_m = cfg.n_entities, cfg.n_merchants
    # a city needs merchants: about one city per 12 merchants, between 1 and 25
    n_cities = int(np.clip(n_m // 12, 1, 25))
    city_lat = rng.uniform(30.0, 46.0, n_cities)
    city_lon = rng.uniform(-120.0, -75.0, n_cities)
    city_weight = rng.dirichlet(np.full(n_cities, 2.0))

    home_city = rng.choice(n_cities, size=n_e, p=city_weight)
    home_lat = city_lat[home_city] + rng.normal(0, 0.1, n_e)
    home_lon = city_lon[home_city] + rng.normal(0, 0.12, n_e)
    amount_mu = rng.normal(3.6, 0.5, n_e)  # exp(3.6) ~ $37 typical purchase
    amount_sigma = rng.uniform(0.4, 0.85, n_e)
    rate = cfg.txns_per_entity_per_day * rng.gamma(2.0, 0.5, n_e)  # mean factor 1, heavy-ish tail
    night_owl = rng.random(n_e) < 0.06

    share = np.array([s for _, s, _ in CATEGORIES])
    merchants = _merchant_set(
        rng,
        n_m,
        "merchant_",
        list(CATEGORY_NAMES),
        share / share.sum(),
        np.array([o for _, _, o in CATEGORIES]),
        city_lat,
        city_lon,
        city_weight,
    )
    n_new = max(n_cities, n_m // 4)
    new_merchants = _merchant_set(
        rng,
        n_new,
        "new_merchant_",
        [c for c, _ in NEW_CATEGORIES],
        np.full(len(NEW_CATEGORIES), 1 / len(NEW_CATEGORIES)),
        np.array([o for _, o in NEW_CATEGORIES]),
        city_lat,
        city_lon,
        city_weight,
    )
    width = len(str(n_e))
    return World(
        entity_ids=np.array([f"card_{i:0{width}d}" for i in range(n_e)], dtype=object),
        home_city=home_city,
        home_lat=home_lat,
        home_lon=home_lon,
        amount_mu=amount_mu,
        amount_sigma=amount_sigma,
        rate=rate,
        night_owl=night_owl,
        merchants=merchants,
        new_merchants=new_merchants,
    )
