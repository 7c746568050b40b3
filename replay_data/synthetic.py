"""Seeded synthetic interaction streams whose dynamics matter for retraining.

The world
---------
*Users* have a long-term taste vector and a short-term interest that drifts (an
Ornstein-Uhlenbeck process around the long-term taste). Each user is in the world from an
arrival time for an exponentially distributed stay, and is active at a personal rate
(log-normal across users), so most users come back again and again while some visit once.
A share of the population is present when the log starts; the rest arrive as it runs.

*Items* have a latent factor vector, a quality (their base appeal) and a lifetime. Their
popularity rises after publication, then decays exponentially with age; after the
lifetime they leave the catalogue. A share of the catalogue exists when the log starts
(at a random point of its life); the rest is published as the log runs.

*Traffic* follows an intensity over time: exponential growth (or decline) over the span
times a daily cycle. User arrivals, item publications and visits all follow it.

*Choice.* At each interaction the user sees `n_candidates` items drawn from the live
catalogue in proportion to popularity (what the front page, feed or search puts in front
of them) and picks one by Gumbel-max on `taste_strength * taste(t) . factors + Gumbel`,
i.e. a softmax over what they were shown. Choices thus carry a learnable
user x item signal (matrix factorisation beats random ranking), a popularity and recency
signal, and drift; the parameters describe the world, not a target for any strategy.

Counts
------
`n_events` and the number of distinct users are exact: every user has at least one
interaction (a newcomer's first is at arrival) and the other interactions are shared out
in proportion to activity rate x traffic during each user's stay. `n_items` is the size of
the catalogue; an item that is never shown or never chosen does not appear in the stream.

Time is processed in slices of `slice_seconds`: candidates are items live at the start of
the slice (so no item is clicked before it is published), weighted by their popularity at
its middle. Everything is vectorised per slice; ids are strings ("u12", "i7") numbered in
order of arrival. Same world + seed gives byte-identical output, whatever `chunk_size`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from replay_data.rejects import Rejects
from replay_data.typed_config import ConfigError

HOUR = 3600
DAY = 24 * HOUR
YEAR = 365 * DAY

NEWS_EPOCH = 1483225200  # 2017-01-01 00:00 Europe/Oslo (UTC+1), Adressa's first day
BUSINESS_EPOCH = 1199145600  # 2008-01-01 00:00 UTC

# Independent random streams, so that e.g. changing a choice parameter leaves the
# population and the visit times unchanged.
_ITEMS, _USERS, _VISITS, _CHOICES, _DRIFT = range(5)


@dataclass(frozen=True)
class SyntheticWorld:
    """Every parameter of a synthetic world. Times are in seconds."""

    name: str = "custom"
    start: int = NEWS_EPOCH
    """Unix time of the first instant of the log; the daily cycle counts hours from it."""
    span_seconds: int = 21 * DAY
    """Length of the log: every timestamp lies in [start, start + span_seconds)."""
    n_events: int = 100_000
    """Number of interactions (exact)."""
    n_users: int = 13_000
    """Number of users (exact: each interacts at least once)."""
    n_items: int = 2_000
    """Size of the catalogue over the whole span (an upper bound on distinct items seen)."""
    dim: int = 16
    """Dimension of the taste and item factor vectors."""

    slice_seconds: int = 600
    """Time resolution of the simulation: catalogue and tastes are updated per slice."""
    growth: float = 0.0
    """Log of the ratio of traffic at the end to traffic at the start (0: flat)."""
    daily_amplitude: float = 0.5
    """Relative amplitude of the daily traffic cycle, in [0, 1)."""
    peak_hour: float = 20.0
    """Hour of the day (counted from the epoch's time of day) at which traffic peaks."""

    initial_user_share: float = 0.3
    """Share of the users already present when the log starts; the rest arrive later."""
    user_stay_mean_seconds: float = 7 * DAY
    """Mean time a user stays active after arriving (exponential); then they churn."""
    activity_sigma: float = 1.2
    """Spread (log-normal sigma) of how often users interact while they stay."""
    drift_share: float = 0.3
    """Share of taste variance that is short-term interest, in [0, 1]; 0: fixed tastes."""
    drift_timescale_seconds: float = 3 * DAY
    """Correlation time of the short-term interest: how fast it wanders."""
    taste_strength: float = 1.5
    """How strongly taste steers the choice (the std of the taste logit); 0: no taste."""
    n_candidates: int = 20
    """Items a user is shown per interaction, drawn by popularity; the choice is among them."""
    repeat_probability: float = 0.1
    """Chance that a user still takes an item they already interacted with when it is their
    pick (re-reads, second reviews); otherwise they take the next best item shown. Repeats
    also happen when every item shown is already known to the user."""

    initial_item_share: float = 0.05
    """Share of the catalogue already published when the log starts."""
    item_lifetime_median_seconds: float = 2 * DAY
    """Median time an item stays in the catalogue (log-normal)."""
    item_lifetime_sigma: float = 0.8
    """Spread (log-normal sigma) of item lifetimes."""
    popularity_rise_seconds: float = HOUR
    """Time scale over which a new item's popularity rises after publication."""
    popularity_decay_seconds: float = 12 * HOUR
    """E-folding time of popularity with age (recency); large values: no decay."""
    quality_sigma: float = 1.0
    """Spread of item quality (log-popularity at equal age); 0: all items equally appealing."""

    def __post_init__(self) -> None:
        problems = []
        if self.span_seconds < 1 or self.slice_seconds < 1:
            problems.append("span_seconds and slice_seconds must be >= 1")
        if not 1 <= self.n_users <= self.n_events:
            problems.append(f"need 1 <= n_users ({self.n_users}) <= n_events ({self.n_events})")
        if self.n_items < 1 or self.dim < 1 or self.n_candidates < 1:
            problems.append("n_items, dim and n_candidates must be >= 1")
        for name in ("initial_user_share", "initial_item_share", "drift_share", "repeat_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                problems.append(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 <= self.daily_amplitude < 1.0:
            problems.append(f"daily_amplitude must be in [0, 1), got {self.daily_amplitude}")
        if abs(self.growth) > 20:
            problems.append(f"growth must be in [-20, 20], got {self.growth}")
        for name in (
            "user_stay_mean_seconds",
            "drift_timescale_seconds",
            "item_lifetime_median_seconds",
            "popularity_rise_seconds",
            "popularity_decay_seconds",
        ):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("activity_sigma", "item_lifetime_sigma", "quality_sigma", "taste_strength"):
            if not getattr(self, name) >= 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if problems:
            raise ConfigError(f"invalid SyntheticWorld {self.name!r}: " + "; ".join(problems))

    def scaled(self, scale: float) -> SyntheticWorld:
        """The same world with events, users and items multiplied by `scale` (span kept)."""
        if not scale > 0:
            raise ConfigError(f"scale must be > 0, got {scale}")
        if scale == 1:
            return self
        n_events = max(1, round(self.n_events * scale))
        return replace(
            self,
            n_events=n_events,
            n_users=min(n_events, max(1, round(self.n_users * scale))),
            n_items=max(1, round(self.n_items * scale)),
        )

    @classmethod
    def preset(cls, name: str, scale: float = 1.0) -> SyntheticWorld:
        """A world from PRESETS, scaled."""
        if name not in PRESETS:
            raise ConfigError(f"unknown synthetic world {name!r}; choose one of {', '.join(PRESETS)}")
        return PRESETS[name].scaled(scale)


_NEWS = SyntheticWorld(
    name="synthetic-news",
    start=NEWS_EPOCH,
    span_seconds=21 * DAY,
    n_events=3_664_225,
    n_users=478_612,
    n_items=20_875,
)

PRESETS: dict[str, SyntheticWorld] = {
    # Adressa-shaped: three weeks of news clicks; items live about two days, fresh ones win.
    "synthetic-news": _NEWS,
    # Yelp-shaped: 10.5 years of reviews; businesses live years, tastes are stable.
    "synthetic-business": SyntheticWorld(
        name="synthetic-business",
        start=BUSINESS_EPOCH,
        span_seconds=10 * YEAR + 182 * DAY,
        n_events=3_014_421,
        n_users=59_082,
        n_items=142_700,  # about 86% get chosen at least once: ~122.8k distinct, as in Yelp
        slice_seconds=DAY,
        growth=2.0,
        daily_amplitude=0.4,
        peak_hour=19.0,
        initial_user_share=0.1,
        user_stay_mean_seconds=4 * YEAR,
        activity_sigma=1.0,
        drift_share=0.2,
        drift_timescale_seconds=3 * YEAR,
        taste_strength=2.5,
        n_candidates=20,
        repeat_probability=0.01,
        initial_item_share=0.3,
        item_lifetime_median_seconds=8 * YEAR,
        item_lifetime_sigma=0.7,
        popularity_rise_seconds=90 * DAY,
        popularity_decay_seconds=5 * YEAR,
    ),
    # synthetic-news shape, 16 periods of the daily 00/10/17 h slots: 5 days and 10 hours.
    "demo": replace(_NEWS, name="demo", span_seconds=5 * DAY + 10 * HOUR, n_events=30_000, n_users=4_000, n_items=300),
    # 8 periods of the daily slots (2 days and 17 hours); for tests.
    "tiny": replace(
        _NEWS, name="tiny", span_seconds=2 * DAY + 17 * HOUR, n_events=5_000, n_users=650, n_items=120, dim=8
    ),
}


def expected_totals(world: SyntheticWorld) -> dict:
    """Targets of a world, for docs and manifests (items: catalogue size, an upper bound)."""
    return {
        "n_events": world.n_events,
        "n_users": world.n_users,
        "n_items": world.n_items,
        "start": world.start,
        "end": world.start + world.span_seconds,
        "span_seconds": world.span_seconds,
    }


@dataclass(frozen=True)
class Latents:
    """The hidden state of a generated world (for tests and diagnostics).

    Row i of a user array belongs to user id f"u{i}", row j of an item array to f"i{j}".
    Times are unix seconds; items published before the log starts have arrivals before it.
    """

    user_taste: np.ndarray  # (n_users, dim) long-term tastes
    user_arrival: np.ndarray  # (n_users,)
    item_factors: np.ndarray  # (n_items, dim)
    item_quality: np.ndarray  # (n_items,)
    item_arrival: np.ndarray  # (n_items,)
    item_death: np.ndarray  # (n_items,)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream])))


class _Traffic:
    """Cumulative traffic intensity on a grid, normalised to [0, 1], and its inverse."""

    def __init__(self, world: SyntheticWorld):
        n = max(1, int(np.ceil(world.span_seconds / 900)))  # 15-minute grid
        self.grid = np.linspace(0.0, world.span_seconds, n + 1)
        mid = (self.grid[:-1] + self.grid[1:]) / 2
        hour = (mid % DAY) / HOUR
        rate = np.exp(world.growth * mid / world.span_seconds) * (
            1 + world.daily_amplitude * np.cos(2 * np.pi * (hour - world.peak_hour) / 24)
        )
        cum = np.concatenate([[0.0], np.cumsum(rate)])
        self.cdf = cum / cum[-1]

    def at(self, t: np.ndarray) -> np.ndarray:
        return np.interp(t, self.grid, self.cdf)

    def inverse(self, u: np.ndarray) -> np.ndarray:
        return np.interp(u, self.cdf, self.grid)


def _factors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    # variance dim**-0.5 per coordinate makes a taste . factor product have unit variance
    return (rng.standard_normal((n, dim)) * dim**-0.25).astype(np.float32)


def _items(world: SyntheticWorld, traffic: _Traffic, seed: int):
    rng = _rng(seed, _ITEMS)
    n = world.n_items
    n_init = min(n, max(1, round(world.initial_item_share * n)))  # never an empty start
    lifetime = world.item_lifetime_median_seconds * np.exp(world.item_lifetime_sigma * rng.standard_normal(n))
    # pre-existing items are caught at a uniform point of their life
    arrival = np.concatenate([-rng.random(n_init) * lifetime[:n_init], traffic.inverse(rng.random(n - n_init))])
    order = np.argsort(arrival, kind="stable")  # ids in order of publication
    arrival, lifetime = arrival[order], lifetime[order]
    quality = world.quality_sigma * rng.standard_normal(n)
    return _factors(rng, n, world.dim), quality, arrival, arrival + lifetime


def _users(world: SyntheticWorld, traffic: _Traffic, seed: int):
    rng = _rng(seed, _USERS)
    n = world.n_users
    n_init = round(world.initial_user_share * n)
    arrival = np.concatenate([np.zeros(n_init), np.sort(traffic.inverse(rng.random(n - n_init)))])
    leave = np.minimum(arrival + rng.exponential(world.user_stay_mean_seconds, n), world.span_seconds)
    activity = np.exp(world.activity_sigma * rng.standard_normal(n))
    return _factors(rng, n, world.dim), arrival, leave, activity, n_init


def latent_factors(world: SyntheticWorld, seed: int) -> Latents:
    """The latent state `generate(world, seed)` draws its interactions from."""
    traffic = _Traffic(world)
    factors, quality, item_arrival, item_death = _items(world, traffic, seed)
    taste, user_arrival, *_ = _users(world, traffic, seed)
    return Latents(
        taste, world.start + user_arrival, factors, quality, world.start + item_arrival, world.start + item_death
    )


def _visits(
    world: SyntheticWorld, traffic: _Traffic, seed: int, arrival, leave, activity, n_init: int
) -> tuple[np.ndarray, np.ndarray]:
    """Who interacts when: (ts relative to start, user), sorted by (ts, user)."""
    rng = _rng(seed, _VISITS)
    lo, hi = traffic.at(arrival), traffic.at(leave)
    first = arrival.copy()  # a newcomer's first interaction is their arrival
    first[:n_init] = traffic.inverse(lo[:n_init] + rng.random(n_init) * (hi - lo)[:n_init])
    exposure = activity * (hi - lo)
    counts = rng.multinomial(world.n_events - world.n_users, exposure / exposure.sum())
    extra_user = np.repeat(np.arange(world.n_users), counts)
    extra = traffic.inverse(lo[extra_user] + rng.random(extra_user.size) * (hi - lo)[extra_user])
    ts = np.floor(np.concatenate([first, extra])).astype(np.int64)
    np.clip(ts, 0, world.span_seconds - 1, out=ts)
    user = np.concatenate([np.arange(world.n_users), extra_user]).astype(np.int32)
    order = np.lexsort((user, ts))
    return ts[order], user[order]


class _PairHistory:
    """The (user, item) keys seen so far: a large sorted array and a small sorted one that
    takes the inserts, merged when it grows, so that neither costs a full copy per slice."""

    def __init__(self) -> None:
        self.large = np.empty(0, np.int64)
        self.small = np.empty(0, np.int64)

    def contains(self, keys: np.ndarray) -> np.ndarray:
        return _isin_sorted(self.large, keys) | _isin_sorted(self.small, keys)

    def add(self, keys: np.ndarray) -> None:
        keys = np.sort(keys)
        self.small = np.insert(self.small, np.searchsorted(self.small, keys), keys)
        if self.small.size > 1 << 17:
            self.large = np.insert(self.large, np.searchsorted(self.large, self.small), self.small)
            self.small = np.empty(0, np.int64)


def _isin_sorted(table: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if table.size == 0:
        return np.zeros(keys.size, bool)
    pos = np.minimum(np.searchsorted(table, keys), table.size - 1)
    return table[pos] == keys


def _pick(
    logit: np.ndarray, pairs: np.ndarray, history: _PairHistory, repeat_probability: float, rng: np.random.Generator
) -> np.ndarray:
    """Column of the chosen candidate per row (overwrites `logit`), avoiding repeats.

    `pairs` holds the (user, item) key of every candidate. A row whose best candidate is a
    pair already in `history`, or taken by another row of this slice, keeps it with
    `repeat_probability`, else declines that item and takes its best remaining candidate;
    when every candidate is declined it keeps its first pick.
    """
    first = np.argmax(logit, axis=1)
    choice = first.copy()
    pending = np.arange(logit.shape[0])
    settled = np.zeros(logit.shape[0], bool)
    while pending.size:
        keys = pairs[pending, choice[pending]]
        clash = history.contains(keys)
        done = np.flatnonzero(settled)
        clash |= _isin_sorted(np.sort(pairs[done, choice[done]]), keys)
        earlier = np.ones(pending.size, bool)
        earlier[np.unique(keys, return_index=True)[1]] = False
        clash |= earlier
        clash &= rng.random(pending.size) >= repeat_probability
        settled[pending[~clash]] = True
        retry = pending[clash]
        # the item is declined wherever it was shown to that user
        declined = pairs[retry] == pairs[retry, choice[retry]][:, None]
        logit[retry] = np.where(declined, -np.inf, logit[retry])
        choice[retry] = np.argmax(logit[retry], axis=1)
        spent = np.isneginf(logit[retry, choice[retry]])
        choice[retry[spent]] = first[retry[spent]]
        settled[retry[spent]] = True
        pending = retry[~spent]
    return choice


def generate(
    world: SyntheticWorld, seed: int, *, chunk_size: int = 200_000, progress: bool = False
) -> Iterator[pd.DataFrame]:
    """Yield the stream in chunks of `chunk_size` rows: ts (int64 unix s), user, item (str).

    Timestamps are nondecreasing over the whole stream, rows within a second sorted by user.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    traffic = _Traffic(world)
    factors, quality, item_arrival, item_death = _items(world, traffic, seed)
    taste, user_arrival, leave, activity, n_init = _users(world, traffic, seed)
    ts, users = _visits(world, traffic, seed, user_arrival, leave, activity, n_init)

    choice_rng, drift_rng = _rng(seed, _CHOICES), _rng(seed, _DRIFT)
    keep = np.float32(np.sqrt(1 - world.drift_share))
    wander = np.float32(np.sqrt(world.drift_share))
    # short-term interest starts from its stationary distribution at the user's arrival
    interest = _factors(drift_rng, world.n_users, world.dim)
    interest_at = user_arrival.copy()
    user_ids = np.array([f"u{i}" for i in range(world.n_users)], dtype=object)
    item_ids = np.array([f"i{i}" for i in range(world.n_items)], dtype=object)

    # log-popularity = quality - age / decay + log(rise); the part of -age / decay common
    # to all items at a given time cancels when normalising, which leaves arrival / decay
    recency = quality + item_arrival / world.popularity_decay_seconds
    rise = world.popularity_rise_seconds
    history = _PairHistory()
    slice_of = ts // world.slice_seconds
    edges = np.concatenate([[0], np.flatnonzero(np.diff(slice_of)) + 1, [ts.size]])
    items = np.empty(ts.size, np.int32)
    bar = tqdm(total=ts.size, unit="ev", desc=world.name, disable=not progress)
    emitted = 0
    for lo, hi in zip(edges[:-1], edges[1:]):
        t0 = float(slice_of[lo] * world.slice_seconds)
        mid = t0 + world.slice_seconds / 2

        # the live catalogue, weighted by popularity at mid-slice
        published = int(np.searchsorted(item_arrival, t0, side="right"))
        live = np.flatnonzero(item_death[:published] > t0)
        if live.size == 0:  # catalogue momentarily empty: the last item to leave lingers
            live = np.array([np.argmax(item_death[:published])])
        log_pop = recency[live]
        # the rise term is below float precision after 40 rise times: only the young (a
        # suffix of `live`, which is in publication order) need it
        young = int(np.searchsorted(live, np.searchsorted(item_arrival, mid - 40 * rise)))
        log_pop[young:] += np.log(-np.expm1(-(mid - item_arrival[live[young:]]) / rise))
        cum = np.cumsum(np.exp(log_pop - log_pop.max()))
        n = hi - lo
        draw = choice_rng.random((n, world.n_candidates)).ravel() * cum[-1]
        order = np.argsort(draw)  # sorted queries search much faster
        shown = np.empty(draw.size, np.int64)
        shown[order] = live[np.searchsorted(cum, draw[order], side="right")]
        shown = shown.reshape(n, world.n_candidates)

        # tastes now: the interest of each user in the slice wanders since its last update
        who, back = np.unique(users[lo:hi], return_inverse=True)
        elapsed = np.maximum(mid - interest_at[who], 0.0) / world.drift_timescale_seconds
        fresh = _factors(drift_rng, who.size, world.dim)
        interest[who] = np.exp(-elapsed)[:, None] * interest[who] + np.sqrt(-np.expm1(-2 * elapsed))[:, None] * fresh
        interest_at[who] = mid
        now = (keep * taste[who] + wander * interest[who])[back]

        logit = np.einsum("nkd,nd->nk", factors[shown], now) * world.taste_strength
        logit += choice_rng.gumbel(size=logit.shape)
        pairs = users[lo:hi, None].astype(np.int64) * world.n_items + shown
        choice = _pick(logit, pairs, history, world.repeat_probability, choice_rng)
        items[lo:hi] = shown[np.arange(n), choice]
        history.add(pairs[np.arange(n), choice])
        bar.update(n)

        while hi - emitted >= chunk_size or (hi == ts.size and emitted < hi):
            end = min(emitted + chunk_size, hi)
            yield pd.DataFrame(
                {
                    "ts": ts[emitted:end] + np.int64(world.start),
                    "user": user_ids[users[emitted:end]],
                    "item": item_ids[items[emitted:end]],
                }
            )
            emitted = end
    bar.close()


def read_synthetic(
    world: str | SyntheticWorld,
    seed: int = 0,
    rejects: Rejects | None = None,
    *,
    scale: float = 1.0,
    chunk_rows: int = 200_000,
    progress: bool = False,
    **params,
) -> Iterator[pd.DataFrame]:
    """Reader entry with the file readers' contract: chunks of ts, user, item.

    `world` is a preset name or a SyntheticWorld; `params` override its fields (e.g.
    `taste_strength=0`), then `scale` multiplies its size. `rejects` is accepted for
    symmetry with the file readers: generated records are valid by construction.
    """
    del rejects
    if isinstance(world, str):
        world = SyntheticWorld.preset(world)
    unknown = sorted(set(params) - set(SyntheticWorld.__dataclass_fields__))
    if unknown:
        raise ConfigError(
            f"unknown synthetic world parameter {unknown[0]!r}; allowed: "
            f"{', '.join(SyntheticWorld.__dataclass_fields__)}"
        )
    world = replace(world, **params).scaled(scale)
    return generate(world, seed, chunk_size=chunk_rows, progress=progress)
