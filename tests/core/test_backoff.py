from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.core.backoff import Backoff, uniform

POLICY = Backoff(initial_s=2.0, max_s=60.0, factor=3.0, jitter=0.5)


def test_base_grows_by_factor_then_caps_at_max() -> None:
    assert [POLICY.base_s(level) for level in range(1, 6)] == [2.0, 6.0, 18.0, 54.0, 60.0]


def test_huge_levels_do_not_overflow() -> None:
    assert POLICY.base_s(100_000) == 60.0
    assert POLICY.delay_s(100_000, 0.999) == 60.0


def test_zero_initial_means_relaunch_at_once_at_every_level() -> None:
    immediate = Backoff(initial_s=0.0, max_s=30.0, factor=2.0, jitter=1.0)
    assert {immediate.delay_s(level, 0.99) for level in range(1, 20)} == {0.0}


def test_without_jitter_delay_is_the_base() -> None:
    plain = Backoff(initial_s=1.0, max_s=100.0, factor=2.0, jitter=0.0)
    assert [plain.delay_s(level, 0.7) for level in (1, 2, 3)] == [1.0, 2.0, 4.0]


def test_jitter_moves_the_delay_both_ways() -> None:
    low, high = POLICY.delay_s(3, 0.0), POLICY.delay_s(3, 0.999999)
    assert low == pytest.approx(18.0 * 0.5)
    assert high == pytest.approx(18.0 * 1.5, rel=1e-5)


@given(
    initial=st.floats(0.01, 100),
    spread=st.floats(1, 100),
    factor=st.floats(1, 10),
    jitter=st.floats(0, 1),
    level=st.integers(1, 500),
    draw=st.floats(0, 1, exclude_max=True),
)
def test_delay_always_between_initial_and_max(
    initial: float, spread: float, factor: float, jitter: float, level: int, draw: float
) -> None:
    policy = Backoff(initial_s=initial, max_s=initial * spread, factor=factor, jitter=jitter)
    assert policy.initial_s <= policy.delay_s(level, draw) <= policy.max_s


@given(seed=st.integers(0, 2**32), n=st.integers(0, 10**6))
def test_uniform_is_reproducible_and_in_range(seed: int, n: int) -> None:
    draw = uniform(seed, n)
    assert 0.0 <= draw < 1.0
    assert uniform(seed, n) == draw


def test_uniform_spreads_over_the_interval() -> None:
    draws = [uniform(7, n) for n in range(2000)]
    assert min(draws) < 0.05
    assert max(draws) > 0.95
    assert 0.45 < sum(draws) / len(draws) < 0.55
