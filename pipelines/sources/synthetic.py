"""The synthetic card-transaction generator: each day's legit activity and planted fraud on a seeded world.

Deterministic per day: the population (pipelines.sources.world) is seeded from `seed` alone and each
day's events from (seed, date), so generating [a, c) equals generating [a, b) + [b, c) and an Airflow
one-day run writes the same bytes as a long `dvc repro` range. Time of day is modelled on UTC hours (a
one-timezone world), so "night" is visible in the UTC timestamp.

`generate_day` runs named steps on one random generator: the day's legit activity, the fraud incidents
and the purchases each pattern plants, then drift and assembly into the canonical frame. The steps draw
in a fixed order; moving a draw changes every event after it (the same params must give the same bytes).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from pipelines.contract import CANONICAL_COLUMNS, ENTITY_KEY, EVENT_ID, LABEL, TIMESTAMP
from pipelines.sections import SyntheticParams
from pipelines.sources.world import World, make_world

ONLINE_CATEGORIES = ("shopping_net", "misc_net")
# what card fraudsters buy in person or online: resellable goods
RISKY_CATEGORIES = ("shopping_net", "misc_net", "shopping_pos", "grocery_pos")
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


def _drift_active(cfg: SyntheticParams, day: dt.date) -> bool:
    d = cfg.drift
    return d.enabled and (d.start is None or day >= d.start)


def _hours(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.choice(24, size=n, p=HOUR_P)


@dataclass(frozen=True)
class _Draft:
    """Events of one day before assembly, as indices into the world (parallel arrays)."""

    ent: np.ndarray  # entity index
    t_us: np.ndarray  # microseconds since the day's midnight (UTC)
    merch: np.ndarray  # merchant index: into world.new_merchants where is_new, else world.merchants
    is_new: np.ndarray  # bool
    amount: np.ndarray

    def __len__(self) -> int:
        return len(self.ent)

    def then(self, other: _Draft) -> _Draft:
        """This draft's events followed by `other`'s."""
        return _Draft(
            **{f.name: np.concatenate([getattr(self, f.name), getattr(other, f.name)]) for f in fields(self)}
        )

    def take(self, order: np.ndarray) -> _Draft:
        """The events at positions `order`."""
        return _Draft(**{f.name: getattr(self, f.name)[order] for f in fields(self)})


# The steps below draw from the day's generator in a fixed order; reordering any draw changes every
# event after it, so each step documents what it draws and `generate_day` calls them in sequence.


def _legit_times(rng: np.random.Generator, world: World, ent: np.ndarray) -> np.ndarray:
    """Time of day (us) of each legit event: the hourly profile, night owls partly at night."""
    n = len(ent)
    hour = _hours(rng, n)
    owl = world.night_owl[ent] & (rng.random(n) < 0.4)
    hour[owl] = rng.choice(NIGHT_HOURS, size=int(owl.sum()))
    return hour * US_PER_HOUR + rng.integers(0, US_PER_HOUR, n)


def _legit_purchases(
    rng: np.random.Generator, world: World, ent: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Merchant and amount of each legit event: mostly near home, a few while travelling, splurges."""
    m = world.merchants
    n = len(ent)
    # mostly the home city; a few legit purchases while travelling (far from home, not fraud)
    travel = rng.random(n) < 0.025
    merch = np.where(travel, m.far(rng, world.home_city[ent]), m.near(rng, world.home_city[ent]))
    amount = np.exp(
        world.amount_mu[ent] + m.amount_offset[merch] + world.amount_sigma[ent] * rng.normal(size=n)
    )
    # occasional legit splurges (odd-looking but fine)
    splurge = rng.random(n) < 0.015
    amount[splurge] *= rng.uniform(3.0, 8.0, int(splurge.sum()))
    return merch, amount


def _shop_at_new_merchants(
    rng: np.random.Generator,
    world: World,
    share: float,
    ent: np.ndarray,
    merch: np.ndarray,
    amount: np.ndarray,
) -> np.ndarray:
    """Drift: move `share` of the legit events to the new merchants (in place); returns the moved mask."""
    is_new = rng.random(len(ent)) < share
    nm = world.new_merchants
    new_idx = nm.near(rng, world.home_city[ent[is_new]])
    merch[is_new] = new_idx
    amount[is_new] = np.exp(
        world.amount_mu[ent[is_new]]
        + nm.amount_offset[new_idx]
        + world.amount_sigma[ent[is_new]] * rng.normal(size=len(new_idx))
    )
    return is_new


def _quick_repeats(rng: np.random.Generator, world: World, legit: _Draft) -> _Draft:
    """Legit quick repeats at the same merchant (a second coffee): short gaps are not only fraud."""
    rep = np.flatnonzero(rng.random(len(legit)) < 0.01)
    rep_t = np.minimum(legit.t_us[rep] + rng.integers(20_000_000, 600_000_000, len(rep)), US_PER_DAY - 1)
    rep_amount = np.exp(world.amount_mu[legit.ent[rep]] - 0.5 + 0.5 * rng.normal(size=len(rep)))
    repeats = _Draft(legit.ent[rep], rep_t, legit.merch[rep], legit.is_new[rep], rep_amount)
    return legit.then(repeats)


def _legit_activity(
    rng: np.random.Generator, world: World, cfg: SyntheticParams, day: dt.date, drift: bool
) -> _Draft:
    """The day's legitimate events: a Poisson count per card, times, merchants, amounts, repeats."""
    lam = world.rate * WEEKDAY_FACTOR[day.weekday()]
    ent = np.repeat(np.arange(len(lam)), rng.poisson(lam))
    t_us = _legit_times(rng, world, ent)
    merch, amount = _legit_purchases(rng, world, ent)
    is_new = np.zeros(len(ent), dtype=bool)
    if drift and cfg.drift.new_merchant_share > 0:
        is_new = _shop_at_new_merchants(rng, world, cfg.drift.new_merchant_share, ent, merch, amount)
    return _quick_repeats(rng, world, _Draft(ent, t_us, merch, is_new, amount))


def _pattern_table(with_drift_pattern: bool) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """Fraud pattern names, their incident shares (summing to 1) and min/max events per incident."""
    names = list(FRAUD_PATTERNS)
    shares = np.array([FRAUD_PATTERNS[p][0] for p in names])
    k_lo = np.array([FRAUD_PATTERNS[p][1] for p in names])
    k_hi = np.array([FRAUD_PATTERNS[p][2] for p in names])
    if with_drift_pattern:
        names.append(DRIFT_PATTERN[0])
        shares = np.append(shares * (1 - DRIFT_PATTERN[1]), DRIFT_PATTERN[1])
        k_lo = np.append(k_lo, DRIFT_PATTERN[2])
        k_hi = np.append(k_hi, DRIFT_PATTERN[3])
    return names, shares / shares.sum(), k_lo, k_hi


def _incident_starts(rng: np.random.Generator, pat: np.ndarray, names: list[str]) -> np.ndarray:
    """Start time (us) per incident: night-heavy for night patterns, daytime for the rest."""
    n_inc = len(pat)
    start_h = _hours(rng, n_inc)
    night_start = (pat == names.index("night_online")) | (
        (pat == names.index("burst")) & (rng.random(n_inc) < 0.5)
    )
    start_h[night_start] = rng.choice(NIGHT_HOURS, size=int(night_start.sum()))
    return start_h * US_PER_HOUR + rng.integers(0, US_PER_HOUR, n_inc)


def _incident_offsets(
    rng: np.random.Generator, pat: np.ndarray, names: list[str], k: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per fraud event: its incident and its offset (us) from the incident's start."""
    # mean gap between an incident's events (seconds): minutes for bursts, longer otherwise
    gap_s = np.select(
        [pat == names.index("burst"), pat == names.index("far_high"), pat == names.index("night_online")],
        [70.0, 900.0, 600.0],
        default=1200.0,
    )
    inc = np.repeat(np.arange(len(pat)), k)
    nf = len(inc)
    first = np.r_[True, inc[1:] != inc[:-1]] if nf else np.zeros(0, dtype=bool)
    gaps = np.where(first, 0, rng.exponential(1.0, nf) * gap_s[inc] * 1e6 + 5e6).astype(np.int64)
    offset = np.cumsum(gaps)
    offset -= np.repeat(offset[first], k)  # restart the clock at each incident
    return inc, offset


def _plan_incidents(
    rng: np.random.Generator, world: World, cfg: SyntheticParams, n_legit: int, drift: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Fraud incidents: each hits a card with one pattern and 1..k events inside the day.

    Returns per fraud event its entity index, time (us since midnight) and pattern name.
    """
    names, shares, k_lo, k_hi = _pattern_table(drift and cfg.drift.new_fraud_pattern)
    mean_k = float((shares * (k_lo + k_hi) / 2).sum())
    # fraud share of all events = fraud_rate  ->  fraud events = legit * r / (1 - r)
    expected_fraud = n_legit * cfg.fraud_rate / (1 - cfg.fraud_rate)
    n_inc = rng.poisson(expected_fraud / mean_k)
    pat = rng.choice(len(names), size=n_inc, p=shares)
    k = rng.integers(k_lo[pat], k_hi[pat] + 1)
    victim = rng.integers(0, len(world.rate), n_inc)
    start_us = _incident_starts(rng, pat, names)
    inc, offset = _incident_offsets(rng, pat, names, k)
    span = np.zeros(n_inc, dtype=np.int64)
    np.maximum.at(span, inc, offset)
    # keep every event of an incident inside its day (per-day determinism)
    start_us = np.minimum(start_us, US_PER_DAY - 1 - span)
    return victim[inc], start_us[inc] + offset, np.asarray(names, dtype=object)[pat[inc]]


def _inflated(rng: np.random.Generator, mu: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Amounts `lo`..`hi` times the victims' typical amount, with a little noise."""
    n = len(mu)
    return np.exp(mu + np.log(rng.uniform(lo, hi, n)) + 0.3 * rng.normal(size=n))


def _fraud_purchases(
    rng: np.random.Generator, world: World, f_ent: np.ndarray, f_pat: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merchant, amount and new-merchant mask of each fraud event, planted pattern by pattern."""
    m = world.merchants
    nf = len(f_ent)
    home = world.home_city[f_ent]
    mu, sig = world.amount_mu[f_ent], world.amount_sigma[f_ent]

    merch = m.near(rng, home)  # camouflage default: home merchant
    amount = np.exp(mu + m.amount_offset[merch] + sig * rng.normal(size=nf))
    is_new = np.zeros(nf, dtype=bool)

    # fraud is not always far away: half of a burst hits resellable goods near home
    sel = f_pat == "burst"
    anywhere = m.far(rng, home)
    u = rng.random(nf)
    burst_merch = np.select(
        [u < 0.5, u < 0.75],
        [m.near_of_categories(rng, home, RISKY_CATEGORIES), m.of_categories(rng, RISKY_CATEGORIES, nf)],
        default=anywhere,
    )
    merch[sel] = burst_merch[sel]
    amount[sel] = _inflated(rng, mu, 1.2, 6.0)[sel]

    sel = f_pat == "far_high"
    merch[sel] = anywhere[sel]
    amount[sel] = _inflated(rng, mu, 3.0, 15.0)[sel]

    sel = f_pat == "night_online"
    online = np.where(
        rng.random(nf) < 0.6,
        m.near_of_categories(rng, home, ONLINE_CATEGORIES),
        m.of_categories(rng, ONLINE_CATEGORIES, nf),
    )
    merch[sel] = online[sel]
    amount[sel] = _inflated(rng, mu, 1.5, 5.0)[sel]

    sel = f_pat == "card_testing"
    if sel.any():
        merch[sel] = world.new_merchants.near(rng, home)[sel]
        amount[sel] = rng.uniform(0.5, 4.0, nf)[sel]
        is_new = sel
    return merch, amount, is_new


def _fraud_activity(
    rng: np.random.Generator, world: World, cfg: SyntheticParams, n_legit: int, drift: bool
) -> _Draft:
    """The day's fraud events: incidents planned, then each pattern's merchants and amounts."""
    f_ent, f_t, f_pat = _plan_incidents(rng, world, cfg, n_legit, drift)
    merch, amount, is_new = _fraud_purchases(rng, world, f_ent, f_pat)
    return _Draft(f_ent, f_t, merch, is_new, amount)


def _event_frame(world: World, day: dt.date, ev: _Draft, label: np.ndarray) -> pd.DataFrame:
    """The canonical frame of the day's events (already in their final order), numbered per day."""
    m, nm = world.merchants, world.new_merchants
    old_idx = np.where(ev.is_new, 0, ev.merch)
    new_idx = np.where(ev.is_new, ev.merch, 0)

    def merchant_attr(name: str) -> np.ndarray:
        return np.where(ev.is_new, getattr(nm, name)[new_idx], getattr(m, name)[old_idx])

    prefix = f"tx{day:%Y%m%d}-"
    day_us = (day - EPOCH).days * US_PER_DAY
    ts = pd.Series((day_us + ev.t_us).astype("datetime64[us]")).dt.tz_localize("UTC")
    return pd.DataFrame(
        {
            EVENT_ID: pd.array([f"{prefix}{i:07d}" for i in range(len(ev))], dtype="string"),
            ENTITY_KEY: pd.array(world.entity_ids[ev.ent], dtype="string"),
            TIMESTAMP: ts,
            "amount": ev.amount.astype(np.float64),
            "merchant": pd.array(merchant_attr("names"), dtype="string"),
            "category": pd.array(merchant_attr("category"), dtype="string"),
            LABEL: label,
            "latitude": world.home_lat[ev.ent],
            "longitude": world.home_lon[ev.ent],
            "merchant_latitude": merchant_attr("lat"),
            "merchant_longitude": merchant_attr("lon"),
        },
        columns=list(CANONICAL_COLUMNS),
    )


def _assemble(
    world: World, cfg: SyntheticParams, day: dt.date, drift: bool, legit: _Draft, fraud: _Draft
) -> pd.DataFrame:
    """Legit + fraud events, labelled, amounts drifted/rounded, sorted by time (entity breaks ties)."""
    ev = legit.then(fraud)
    label = np.concatenate([np.zeros(len(legit), dtype=np.int64), np.ones(len(fraud), dtype=np.int64)])
    amount = ev.amount * cfg.drift.amount_scale if drift else ev.amount
    amount = np.round(np.clip(amount, 0.01, 100_000.0), 2)
    ev = _Draft(ev.ent, ev.t_us, ev.merch, ev.is_new, amount)
    # generation order is deterministic; sort by time (entity breaks ties) and number the events
    order = np.lexsort((ev.ent, ev.t_us))
    return _event_frame(world, day, ev.take(order), label[order])


def generate_day(world: World, cfg: SyntheticParams, day: dt.date) -> pd.DataFrame:
    """All events of one day, seeded from (seed, date) only, sorted by (event_timestamp, event_id)."""
    rng = np.random.default_rng(np.random.SeedSequence([cfg.seed, day.toordinal()]))
    drift = _drift_active(cfg, day)
    legit = _legit_activity(rng, world, cfg, day, drift)
    fraud = _fraud_activity(rng, world, cfg, len(legit), drift)
    return _assemble(world, cfg, day, drift, legit, fraud)


def generate(cfg: SyntheticParams, start: dt.date, end: dt.date) -> pd.DataFrame:
    """Synthetic events of [start, end): the concatenation of `generate_day` for each date."""
    world = make_world(cfg)
    n_days = (end - start).days
    frames = [generate_day(world, cfg, start + dt.timedelta(days=i)) for i in range(max(n_days, 0))]
    if not frames:
        return generate_day(world, cfg, start).iloc[:0]
    return pd.concat(frames, ignore_index=True)
