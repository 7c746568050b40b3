"""The synthetic stream: contract, determinism, and the dynamics retraining depends on."""

from __future__ import annotations

from dataclasses import replace
from functools import cache

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replay_data.rejects import Rejects
from replay_data.synthetic import (
    DAY,
    PRESETS,
    SyntheticWorld,
    expected_totals,
    generate,
    latent_factors,
    read_synthetic,
)


def collect(world: SyntheticWorld, seed: int = 0, **kw) -> pd.DataFrame:
    return pd.concat(list(generate(world, seed, **kw)), ignore_index=True)


@cache
def stream(name: str, scale: float = 1.0, seed: int = 0) -> pd.DataFrame:
    return collect(SyntheticWorld.preset(name, scale), seed)


def codes(ids: pd.Series) -> np.ndarray:
    return ids.str[1:].astype(np.int64).to_numpy()


def quarter(df: pd.DataFrame, world: SyntheticWorld) -> pd.Series:
    return (df.ts - world.start) * 4 // world.span_seconds


def test_same_seed_same_stream_whatever_the_chunking():
    world = SyntheticWorld.preset("tiny")
    chunks = list(generate(world, 7, chunk_size=777))
    assert [len(c) for c in chunks] == [777] * 6 + [5000 - 6 * 777]
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), collect(world, 7))
    pd.testing.assert_frame_equal(collect(world, 7), collect(world, 7))


def test_another_seed_another_stream():
    a, b = stream("tiny", seed=0), stream("tiny", seed=1)
    assert (a.item != b.item).mean() > 0.5
    assert (a.ts != b.ts).mean() > 0.5


@pytest.mark.parametrize(
    "name, scale", [("tiny", 1.0), ("demo", 1.0), ("synthetic-news", 0.01), ("synthetic-business", 0.01)]
)
def test_contract_and_totals(name, scale):
    world = SyntheticWorld.preset(name, scale)
    df = stream(name, scale)
    totals = expected_totals(world)
    assert list(df.columns) == ["ts", "user", "item"]
    assert df.ts.dtype == np.int64
    assert pd.api.types.is_string_dtype(df.user) and pd.api.types.is_string_dtype(df.item)
    assert not df.isna().any().any()
    assert len(df) == totals["n_events"]
    assert df.user.nunique() == totals["n_users"]
    assert 0.5 * totals["n_items"] < df.item.nunique() <= totals["n_items"]
    assert df.ts.is_monotonic_increasing
    assert totals["start"] <= df.ts.min() and df.ts.max() < totals["end"]
    assert totals["end"] - totals["start"] == world.span_seconds


def test_preset_shapes():
    news, business = PRESETS["synthetic-news"], PRESETS["synthetic-business"]
    assert (news.n_events, news.n_users, news.n_items) == (3_664_225, 478_612, 20_875)
    assert news.span_seconds == 21 * DAY
    assert (business.n_events, business.n_users) == (3_014_421, 59_082)
    assert business.span_seconds > 10 * 365 * DAY
    # demo: 16 periods of the daily 00/10/17 h slots; tiny: 8 of them
    assert PRESETS["demo"].span_seconds == 5 * DAY + 10 * 3600
    assert PRESETS["tiny"].span_seconds == 2 * DAY + 17 * 3600
    assert 20_000 <= PRESETS["demo"].n_events <= 50_000
    assert PRESETS["tiny"].n_events == 5_000
    half = SyntheticWorld.preset("synthetic-news", 0.5)
    assert (half.n_events, half.n_users, half.n_items) == (1_832_112, 239_306, 10_438)
    assert half.span_seconds == news.span_seconds


@pytest.mark.parametrize("name, scale", [("demo", 1.0), ("synthetic-business", 0.01)])
def test_new_users_and_items_arrive_in_every_quarter(name, scale):
    world = SyntheticWorld.preset(name, scale)
    df = stream(name, scale)
    q = quarter(df, world)
    for column, floor in (("user", 0.05), ("item", 0.05)):
        first = q.groupby(df[column]).min()
        share = first.value_counts(normalize=True).reindex(range(4), fill_value=0)
        assert (share.iloc[1:] > floor).all(), (column, share.tolist())


@pytest.mark.parametrize("name, scale", [("demo", 1.0), ("synthetic-business", 0.01)])
def test_users_return_across_time(name, scale):
    world = SyntheticWorld.preset(name, scale)
    df = stream(name, scale)
    quarters_per_user = quarter(df, world).groupby(df.user).nunique()
    assert (quarters_per_user > 1).mean() > 0.25


def test_news_items_fade_much_faster_than_businesses():
    def median_active_span(name: str) -> float:
        df, world = stream(name, 0.01), SyntheticWorld.preset(name, 0.01)
        g = df.groupby("item").ts.agg(["min", "max"])
        return float(((g["max"] - g["min"]) / world.span_seconds).median())

    news, business = median_active_span("synthetic-news"), median_active_span("synthetic-business")
    assert news < 0.15 and business > 2 * news


def test_repeated_pairs_are_rare_for_businesses_and_follow_repeat_probability():
    # ~2% at this scale, where heavy users have seen much of a 1,445-business catalogue
    assert stream("synthetic-business", 0.01).duplicated(["user", "item"]).mean() < 0.03
    world = SyntheticWorld.preset("demo")
    never = collect(replace(world, repeat_probability=0.0)).duplicated(["user", "item"]).mean()
    always = collect(replace(world, repeat_probability=1.0)).duplicated(["user", "item"]).mean()
    assert never < 0.5 * always


def taste_gap(world: SyntheticWorld, seed: int = 0) -> float:
    """Mean of long-term taste . factors for the chosen item minus for an average live item."""
    df, lat = collect(world, seed), latent_factors(world, seed)
    user, item, ts = codes(df.user), codes(df.item), df.ts.to_numpy()
    chosen = np.einsum("nd,nd->n", lat.user_taste[user], lat.item_factors[item])
    hour, at = np.unique(ts // 3600 * 3600, return_inverse=True)
    live = (lat.item_arrival[None, :] <= hour[:, None]) & (lat.item_death[None, :] > hour[:, None])
    live_mean = (live @ lat.item_factors) / np.maximum(live.sum(1), 1)[:, None]
    baseline = np.einsum("nd,nd->n", lat.user_taste[user], live_mean[at])
    return float((chosen - baseline).mean())


@pytest.mark.parametrize(
    "taste_strength, drift_share, low, high",
    [
        (1.5, 0.3, 0.3, np.inf),  # the demo world as it is: choices follow taste
        (0.0, 0.3, -0.05, 0.05),  # no taste: the chosen item is as good as any live one
        (1.5, 1.0, -0.05, 0.05),  # all taste is short-term interest, unrelated to long-term
    ],
)
def test_choices_follow_latent_taste(taste_strength, drift_share, low, high):
    world = replace(SyntheticWorld.preset("demo"), taste_strength=taste_strength, drift_share=drift_share)
    assert low < taste_gap(world) < high


def test_read_synthetic_is_the_generator_behind_the_reader_contract():
    rejects = Rejects()
    chunks = list(read_synthetic("demo", 3, rejects, scale=0.2, chunk_rows=2_000, taste_strength=0.5))
    assert [len(c) for c in chunks] == [2_000] * 3
    world = replace(PRESETS["demo"], taste_strength=0.5).scaled(0.2)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), collect(world, 3))
    assert rejects.total == 0
    with pytest.raises(ValueError, match="unknown synthetic world parameter 'tastes'"):
        read_synthetic("tiny", 0, tastes=1.0)
    with pytest.raises(ValueError, match="unknown synthetic world"):
        read_synthetic("synthetic-movies", 0)


@pytest.mark.parametrize(
    "bad",
    [
        dict(n_users=0),
        dict(n_users=10, n_events=5),
        dict(drift_share=1.5),
        dict(daily_amplitude=1.0),
        dict(popularity_decay_seconds=0.0),
        dict(taste_strength=-1.0),
    ],
)
def test_invalid_worlds_are_refused(bad):
    with pytest.raises(ValueError, match="invalid SyntheticWorld"):
        SyntheticWorld(**bad)


@st.composite
def small_worlds(draw) -> SyntheticWorld:
    n_users = draw(st.integers(1, 30))
    unit = st.floats(0.0, 1.0)
    seconds = st.floats(1.0, 30.0 * DAY)
    return SyntheticWorld(
        name="hypothesis",
        start=draw(st.integers(0, 2_000_000_000)),
        span_seconds=draw(st.integers(1, 60 * DAY)),
        n_events=draw(st.integers(n_users, 300)),
        n_users=n_users,
        n_items=draw(st.integers(1, 40)),
        dim=draw(st.integers(1, 6)),
        slice_seconds=draw(st.integers(1, 3 * DAY)),
        growth=draw(st.floats(-5.0, 5.0)),
        daily_amplitude=draw(st.floats(0.0, 0.99)),
        peak_hour=draw(st.floats(0.0, 24.0)),
        initial_user_share=draw(unit),
        user_stay_mean_seconds=draw(seconds),
        activity_sigma=draw(st.floats(0.0, 3.0)),
        drift_share=draw(unit),
        drift_timescale_seconds=draw(seconds),
        taste_strength=draw(st.floats(0.0, 5.0)),
        n_candidates=draw(st.integers(1, 8)),
        repeat_probability=draw(unit),
        initial_item_share=draw(unit),
        item_lifetime_median_seconds=draw(seconds),
        item_lifetime_sigma=draw(st.floats(0.0, 2.0)),
        popularity_rise_seconds=draw(seconds),
        popularity_decay_seconds=draw(seconds),
        quality_sigma=draw(st.floats(0.0, 3.0)),
    )


@settings(max_examples=40, deadline=None)
@given(world=small_worlds(), seed=st.integers(0, 2**32), chunk_size=st.integers(1, 120))
def test_any_small_world_gives_a_valid_stream(world, seed, chunk_size):
    chunks = list(generate(world, seed, chunk_size=chunk_size))
    assert all(len(c) == chunk_size for c in chunks[:-1]) and 0 < len(chunks[-1]) <= chunk_size
    df = pd.concat(chunks, ignore_index=True)
    assert list(df.columns) == ["ts", "user", "item"] and df.ts.dtype == np.int64
    assert not df.isna().any().any()
    assert len(df) == world.n_events and df.user.nunique() == world.n_users
    assert df.ts.is_monotonic_increasing
    assert world.start <= df.ts.min() and df.ts.max() < world.start + world.span_seconds
    assert df.user.str.fullmatch(r"u\d+").all() and (codes(df.user) < world.n_users).all()
    assert df.item.str.fullmatch(r"i\d+").all() and (codes(df.item) < world.n_items).all()
