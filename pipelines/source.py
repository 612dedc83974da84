"""Where events come from: a seeded synthetic card-transaction world, or the user's CSV/Parquet log.

Both paths return the canonical event frame of the data contract (CANONICAL_COLUMNS; optional columns
absent when the source lacks them): event_id/entity_id/merchant/category strings, event_timestamp
datetime64[us, UTC], amount float64, label int64, coordinates float64.

The synthetic generator is deterministic per day: the population (cards, merchants, cities) is seeded
from `seed` alone and each day's events from (seed, date), so generating [a, c) equals generating
[a, b) + [b, c) and an Airflow one-day run writes the same bytes as a long `dvc repro` range. Time of
day is modelled on UTC hours (a one-timezone world), so "night" is visible in the UTC timestamp.

The user's log is mapped onto canonical names by `ingest.source.columns`. Ingest is strict about the
shape (file exists, mapped columns exist, timestamps parse) but lenient about values: a non-numeric
amount cell becomes NaN, an odd label stays, so that `validate` can quarantine the partition with a
report instead of ingest crashing on one bad cell.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines.config import CANONICAL_COLUMNS, REQUIRED_COLUMNS, Params, SourceParams, SyntheticParams
from pipelines.errors import StageError

# --- the synthetic world --------------------------------------------------------------------------

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
ONLINE_CATEGORIES = ("shopping_net", "misc_net")
# what card fraudsters buy in person or online: resellable goods
RISKY_CATEGORIES = ("shopping_net", "misc_net", "shopping_pos", "grocery_pos")
# categories that only exist once drift starts (new merchants of a changed world)
NEW_CATEGORIES: tuple[tuple[str, float], ...] = (
    ("digital_goods", -0.6),
    ("crypto_exchange", 0.8),
    ("bnpl_online", 0.3),
)

# relative activity per UTC hour: quiet nights, a lunch peak and an evening peak
HOUR_WEIGHTS = np.array(
    [0.5, 0.35, 0.25, 0.2, 0.25, 0.45, 1.0, 2.2, 3.2, 3.8, 4.2, 4.8,
     5.8, 5.4, 4.8, 4.8, 5.2, 6.2, 6.8, 6.4, 5.0, 3.6, 2.2, 1.1]
)  # fmt: skip
HOUR_P = HOUR_WEIGHTS / HOUR_WEIGHTS.sum()
NIGHT_HOURS = np.array([22, 23, 0, 1, 2, 3, 4])
# Monday..Sunday
WEEKDAY_FACTOR = np.array([0.95, 0.95, 1.0, 1.0, 1.1, 1.2, 1.05])

US_PER_HOUR = 3_600_000_000
US_PER_DAY = 24 * US_PER_HOUR
EPOCH = dt.date(1970, 1, 1)

# fraud patterns: name -> (share of incidents, min events, max events)
FRAUD_PATTERNS: dict[str, tuple[float, int, int]] = {
    "burst": (0.35, 3, 6),  # several purchases within minutes, resellable goods, often at night
    "far_high": (0.25, 1, 2),  # unusually large amount at a merchant far from home
    "night_online": (0.25, 1, 2),  # online categories in the small hours
    "camouflage": (0.15, 1, 1),  # looks exactly like the card's normal spending (label noise)
}
# the drift-only pattern: card testing, many tiny daytime purchases at new digital merchants
DRIFT_PATTERN = ("card_testing", 0.35, 4, 8)


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


def _drift_active(cfg: SyntheticParams, day: dt.date) -> bool:
    d = cfg.drift
    return d.enabled and (d.start is None or day >= d.start)


def _hours(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(24, size=n, p=HOUR_P)


def generate_day(world: World, cfg: SyntheticParams, day: dt.date) -> pd.DataFrame:
    """All events of one day, seeded from (seed, date) only, sorted by (event_timestamp, event_id)."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, day.toordinal()]))
    drift = _drift_active(cfg, day)
    m = world.merchants

    # ---- legitimate activity
    lam = world.rate * WEEKDAY_FACTOR[day.weekday()]
    ent = np.repeat(np.arange(len(lam)), rng.poisson(lam))
    n = len(ent)
    hour = _hours(rng, n)
    owl = world.night_owl[ent] & (rng.random(n) < 0.4)
    hour[owl] = rng.choice(NIGHT_HOURS, size=int(owl.sum()))
    t_us = hour * US_PER_HOUR + rng.integers(0, US_PER_HOUR, n)
    # mostly the home city; a few legit purchases while travelling (far from home, not fraud)
    travel = rng.random(n) < 0.025
    merch = np.where(travel, m.far(rng, world.home_city[ent]), m.near(rng, world.home_city[ent]))
    amount = np.exp(
        world.amount_mu[ent] + m.amount_offset[merch] + world.amount_sigma[ent] * rng.normal(size=n)
    )
    # occasional legit splurges (odd-looking but fine)
    splurge = rng.random(n) < 0.015
    amount[splurge] *= rng.uniform(3.0, 8.0, int(splurge.sum()))
    is_new = np.zeros(n, dtype=bool)
    if drift and cfg.drift.new_merchant_share > 0:
        is_new = rng.random(n) < cfg.drift.new_merchant_share
        nm = world.new_merchants
        new_idx = nm.near(rng, world.home_city[ent[is_new]])
        merch = merch.copy()
        merch[is_new] = new_idx
        amount[is_new] = np.exp(
            world.amount_mu[ent[is_new]]
            + nm.amount_offset[new_idx]
            + world.amount_sigma[ent[is_new]] * rng.normal(size=len(new_idx))
        )
    # legit quick repeats at the same merchant (a second coffee): short gaps are not only fraud
    rep = np.flatnonzero(rng.random(n) < 0.01)
    rep_t = np.minimum(t_us[rep] + rng.integers(20_000_000, 600_000_000, len(rep)), US_PER_DAY - 1)
    rep_amount = np.exp(world.amount_mu[ent[rep]] - 0.5 + 0.5 * rng.normal(size=len(rep)))
    ent = np.concatenate([ent, ent[rep]])
    t_us = np.concatenate([t_us, rep_t])
    merch = np.concatenate([merch, merch[rep]])
    is_new = np.concatenate([is_new, is_new[rep]])
    amount = np.concatenate([amount, rep_amount])
    n_legit = len(ent)

    # ---- fraud incidents: each one hits a card with one pattern and 1..k events
    names = list(FRAUD_PATTERNS)
    shares = np.array([FRAUD_PATTERNS[p][0] for p in names])
    k_lo = np.array([FRAUD_PATTERNS[p][1] for p in names])
    k_hi = np.array([FRAUD_PATTERNS[p][2] for p in names])
    if drift and cfg.drift.new_fraud_pattern:
        names.append(DRIFT_PATTERN[0])
        shares = np.append(shares * (1 - DRIFT_PATTERN[1]), DRIFT_PATTERN[1])
        k_lo = np.append(k_lo, DRIFT_PATTERN[2])
        k_hi = np.append(k_hi, DRIFT_PATTERN[3])
    shares = shares / shares.sum()
    mean_k = float((shares * (k_lo + k_hi) / 2).sum())
    # fraud share of all events = fraud_rate  ->  fraud events = legit * r / (1 - r)
    expected_fraud = n_legit * cfg.fraud_rate / (1 - cfg.fraud_rate)
    n_inc = rng.poisson(expected_fraud / mean_k)
    pat = rng.choice(len(names), size=n_inc, p=shares)
    k = rng.integers(k_lo[pat], k_hi[pat] + 1)
    victim = rng.integers(0, len(world.rate), n_inc)
    # start hour per incident: night-heavy for night patterns, daytime for the rest
    start_h = _hours(rng, n_inc)
    night_start = (pat == names.index("night_online")) | (
        (pat == names.index("burst")) & (rng.random(n_inc) < 0.5)
    )
    start_h[night_start] = rng.choice(NIGHT_HOURS, size=int(night_start.sum()))
    start_us = start_h * US_PER_HOUR + rng.integers(0, US_PER_HOUR, n_inc)
    # mean gap between an incident's events (seconds): minutes for bursts, longer otherwise
    gap_s = np.select(
        [pat == names.index("burst"), pat == names.index("far_high"), pat == names.index("night_online")],
        [70.0, 900.0, 600.0],
        default=1200.0,
    )

    inc = np.repeat(np.arange(n_inc), k)
    nf = len(inc)
    first = np.r_[True, inc[1:] != inc[:-1]] if nf else np.zeros(0, dtype=bool)
    gaps = np.where(first, 0, rng.exponential(1.0, nf) * gap_s[inc] * 1e6 + 5e6).astype(np.int64)
    offset = np.cumsum(gaps)
    offset -= np.repeat(offset[first], k)  # restart the clock at each incident
    span = np.zeros(n_inc, dtype=np.int64)
    np.maximum.at(span, inc, offset)
    # keep every event of an incident inside its day (per-day determinism)
    start_us = np.minimum(start_us, US_PER_DAY - 1 - span)
    f_t = start_us[inc] + offset
    f_ent = victim[inc]
    f_pat = np.asarray(names, dtype=object)[pat[inc]]
    home = world.home_city[f_ent]
    mu, sig = world.amount_mu[f_ent], world.amount_sigma[f_ent]

    f_merch = m.near(rng, home)  # camouflage default: home merchant
    f_amount = np.exp(mu + m.amount_offset[f_merch] + sig * rng.normal(size=nf))
    f_new = np.zeros(nf, dtype=bool)

    # fraud is not always far away: half of a burst hits resellable goods near home
    sel = f_pat == "burst"
    anywhere = m.far(rng, home)
    u = rng.random(nf)
    burst_merch = np.select(
        [u < 0.5, u < 0.75],
        [m.near_of_categories(rng, home, RISKY_CATEGORIES), m.of_categories(rng, RISKY_CATEGORIES, nf)],
        default=anywhere,
    )
    f_merch[sel] = burst_merch[sel]
    f_amount[sel] = np.exp(mu + np.log(rng.uniform(1.2, 6.0, nf)) + 0.3 * rng.normal(size=nf))[sel]

    sel = f_pat == "far_high"
    f_merch[sel] = anywhere[sel]
    f_amount[sel] = np.exp(mu + np.log(rng.uniform(3.0, 15.0, nf)) + 0.3 * rng.normal(size=nf))[sel]

    sel = f_pat == "night_online"
    online = np.where(
        rng.random(nf) < 0.6,
        m.near_of_categories(rng, home, ONLINE_CATEGORIES),
        m.of_categories(rng, ONLINE_CATEGORIES, nf),
    )
    f_merch[sel] = online[sel]
    f_amount[sel] = np.exp(mu + np.log(rng.uniform(1.5, 5.0, nf)) + 0.3 * rng.normal(size=nf))[sel]

    sel = f_pat == "card_testing"
    if sel.any():
        f_merch[sel] = world.new_merchants.near(rng, home)[sel]
        f_amount[sel] = rng.uniform(0.5, 4.0, nf)[sel]
        f_new = sel

    # ---- assemble
    t_all = np.concatenate([t_us, f_t])
    ent_all = np.concatenate([ent, f_ent])
    merch_all = np.concatenate([merch, f_merch])
    new_all = np.concatenate([is_new, f_new])
    amount_all = np.concatenate([amount, f_amount])
    label = np.concatenate([np.zeros(n_legit, dtype=np.int64), np.ones(nf, dtype=np.int64)])
    if drift:
        amount_all = amount_all * cfg.drift.amount_scale
    amount_all = np.round(np.clip(amount_all, 0.01, 100_000.0), 2)

    # generation order is deterministic; sort by time (entity breaks ties) and number the events
    order = np.lexsort((ent_all, t_all))
    t_all, ent_all, merch_all, new_all = t_all[order], ent_all[order], merch_all[order], new_all[order]
    amount_all, label = amount_all[order], label[order]

    nm = world.new_merchants
    old_idx = np.where(new_all, 0, merch_all)
    new_idx = np.where(new_all, merch_all, 0)
    prefix = f"tx{day:%Y%m%d}-"
    day_us = (day - EPOCH).days * US_PER_DAY
    ts = pd.Series((day_us + t_all).astype("datetime64[us]")).dt.tz_localize("UTC")
    return pd.DataFrame(
        {
            "event_id": pd.array([f"{prefix}{i:07d}" for i in range(len(t_all))], dtype="string"),
            "entity_id": pd.array(world.entity_ids[ent_all], dtype="string"),
            "event_timestamp": ts,
            "amount": amount_all.astype(np.float64),
            "merchant": pd.array(np.where(new_all, nm.names[new_idx], m.names[old_idx]), dtype="string"),
            "category": pd.array(
                np.where(new_all, nm.category[new_idx], m.category[old_idx]), dtype="string"
            ),
            "label": label,
            "latitude": world.home_lat[ent_all],
            "longitude": world.home_lon[ent_all],
            "merchant_latitude": np.where(new_all, nm.lat[new_idx], m.lat[old_idx]),
            "merchant_longitude": np.where(new_all, nm.lon[new_idx], m.lon[old_idx]),
        },
        columns=list(CANONICAL_COLUMNS),
    )


def generate(cfg: SyntheticParams, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Synthetic events of [start, end): the concatenation of `generate_day` for each date."""
    world = make_world(cfg)
    n_days = (end - start).days
    frames = [generate_day(world, cfg, start + dt.timedelta(days=i)) for i in range(max(n_days, 0))]
    if not frames:
        return generate_day(world, cfg, start).iloc[:0]
    return pd.concat(frames, ignore_index=True)


# --- the user's log ------------------------------------------------------------------------------

NUMERIC_COLUMNS = ("amount", "latitude", "longitude", "merchant_latitude", "merchant_longitude")
STRING_COLUMNS = ("event_id", "entity_id", "merchant", "category")


def read_log(path: Path, kind: str, columns: dict[str, str]) -> pd.DataFrame:
    """Read the mapped columns of a CSV/Parquet log, untyped (CSV cells stay strings)."""
    if not path.is_file():
        raise StageError(f"{path}: source file not found (ingest.source.path, kind {kind})")
    wanted = list(dict.fromkeys(columns.values()))
    try:
        if kind == "csv":
            header = list(pd.read_csv(path, nrows=0).columns)
        else:
            import pyarrow.parquet as pq

            header = list(pq.read_schema(path).names)
    except Exception as err:  # unreadable file: name it, don't leak a parser traceback
        raise StageError(f"{path}: cannot read as {kind}: {err}") from None
    missing = {canon: col for canon, col in columns.items() if col not in header}
    if missing:
        listed = ", ".join(f"{col!r} (mapped to {canon})" for canon, col in missing.items())
        raise StageError(
            f"{path}: missing column(s) {listed}; the file has {header}. "
            "Fix ingest.source.columns in params.yaml or the file."
        )
    try:
        if kind == "csv":
            # strings everywhere: card numbers must not turn into floats, bad cells must not abort
            return pd.read_csv(path, usecols=wanted, dtype=str, keep_default_na=True)
        import pyarrow.parquet as pq

        return pq.read_table(path, columns=wanted).to_pandas()
    except Exception as err:
        raise StageError(f"{path}: cannot read as {kind}: {err}") from None


def _parse_timestamps(s: pd.Series, fmt: str | None, where: str) -> pd.Series:
    if pd.api.types.is_datetime64_any_dtype(s):
        ts = s.dt.tz_localize("UTC") if s.dt.tz is None else s.dt.tz_convert("UTC")
    elif pd.api.types.is_numeric_dtype(s):
        raise StageError(
            f"{where}: expected date-time strings or timestamps, got numbers ({s.dtype}); "
            "convert epoch numbers to timestamps first"
        )
    else:
        text = s.astype("string")
        ts = pd.to_datetime(text, format=fmt, utc=True, errors="coerce")
        retry = ts.isna() & text.notna()
        if fmt is None and retry.any():
            # pandas infers one format from the first value; mixed spellings get a second chance
            ts[retry] = pd.to_datetime(text[retry], format="mixed", utc=True, errors="coerce")
        bad = ts.isna() & text.notna()
        if bad.any():
            examples = [f"row {i}: {v!r}" for i, v in text[bad].head(3).items()]
            expected = f"format {fmt!r}" if fmt else "ISO-8601 or a common date-time format"
            raise StageError(
                f"{where}: {int(bad.sum())} unparsable timestamp(s), expected {expected} "
                f"(ingest.source.timestamp_format): {', '.join(examples)}"
            )
    empty = ts.isna()
    if empty.any():
        raise StageError(
            f"{where}: {int(empty.sum())} row(s) without a timestamp (first at row {empty.idxmax()}); "
            "an event without a time cannot be placed in a date partition"
        )
    # timezone-naive values were localized as UTC above; store microseconds as the contract says
    return ts.dt.tz_convert("UTC").astype("datetime64[us, UTC]")


def _to_numeric(s: pd.Series, where: str) -> pd.Series:
    num = pd.to_numeric(s, errors="coerce")
    if s.notna().any() and num.notna().sum() == 0:
        examples = list(s.dropna().astype(str).head(3))
        raise StageError(f"{where}: expected numbers, no value parses as a number (e.g. {examples})")
    return num.astype(np.float64)


def _to_label(s: pd.Series, where: str) -> pd.Series:
    num = _to_numeric(s, where)
    # integral labels (even "1.0") become int64; nulls stay null (nullable Int64) so validate sees them
    if ((num.dropna() % 1) == 0).all():
        return num.astype("Int64")
    return num


def _to_string(s: pd.Series) -> pd.Series:
    if pd.api.types.is_float_dtype(s) and ((s.dropna() % 1) == 0).all():
        s = s.astype("Int64")  # ids read as floats (1.0) keep their integer spelling
    return s.astype("string")


def derive_event_ids(raw: pd.DataFrame) -> pd.Series:
    """Deterministic event ids: a hash of each row's mapped values (identical rows share an id)."""
    cols = [raw[c].astype("string").fillna("\x00") for c in raw.columns]
    joined = cols[0].str.cat(cols[1:], sep="\x1f") if len(cols) > 1 else cols[0]
    return pd.Series(
        [hashlib.blake2b(v.encode(), digest_size=10).hexdigest() for v in joined],
        index=raw.index,
        dtype="string",
    )


def canonicalize(
    raw: pd.DataFrame, columns: dict[str, str], timestamp_format: str | None, origin: str
) -> pd.DataFrame:
    """Rename a user's log to canonical columns and coerce types (pure; `origin` names it in errors).

    Shape problems raise StageError (a missing required mapping, unparsable timestamps, a column with
    no numeric value at all); bad single values are kept (NaN/null) for validate to quarantine.
    """
    missing_req = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing_req:
        raise StageError(f"{origin}: ingest.source.columns must map the required column(s) {missing_req}")
    absent = {canon: col for canon, col in columns.items() if col not in raw.columns}
    if absent:
        raise StageError(f"{origin}: missing column(s) {absent} (canonical: source column)")
    out: dict[str, pd.Series] = {}
    for canon, col in columns.items():
        s = raw[col]
        where = f"{origin}: column {col!r} (mapped to {canon})"
        if canon == "event_timestamp":
            out[canon] = _parse_timestamps(s, timestamp_format, where)
        elif canon == "label":
            out[canon] = _to_label(s, where)
        elif canon in NUMERIC_COLUMNS:
            out[canon] = _to_numeric(s, where)
        else:
            out[canon] = _to_string(s)
    if "event_id" not in out:
        mapped = [columns[c] for c in CANONICAL_COLUMNS if c in columns]
        out["event_id"] = derive_event_ids(raw[mapped])
    return pd.DataFrame({c: out[c] for c in CANONICAL_COLUMNS if c in out}).reset_index(drop=True)


def load_log(src: SourceParams, root: Path) -> pd.DataFrame:
    """The user's whole CSV/Parquet log (read-only), mapped to canonical columns."""
    assert src.path is not None  # guaranteed by SourceParams for csv/parquet
    path = Path(src.path) if Path(src.path).is_absolute() else root / src.path
    raw = read_log(path, src.kind, src.columns)
    return canonicalize(raw, src.columns, src.timestamp_format, str(path))


def in_range(events: pd.DataFrame, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Rows whose event date (UTC) lies in [start, end)."""
    lo = pd.Timestamp(start, tz="UTC")
    hi = pd.Timestamp(end, tz="UTC")
    ts = events["event_timestamp"]
    return events[(ts >= lo) & (ts < hi)].reset_index(drop=True)


def load_events(params: Params, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Canonical events of [start, end) from the configured source (synthetic, csv or parquet)."""
    src = params.ingest.source
    if src.kind == "synthetic":
        return generate(params.ingest.synthetic, start, end)
    return in_range(load_log(src, params.root), start, end)
