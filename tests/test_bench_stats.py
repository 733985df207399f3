"""The statistics of ``ganforge bench`` on synthetic block times (seeded): the interval covers
the true ratio as often as it claims, and unstable timings are flagged."""
import random

import pytest

from ganforge.bench.stats import bimodal, bimodality_coefficient, bootstrap_interval, outliers, paired_ratio


def _pairs(rng, n, ratio, noise, drift=0.0):
    """Interleaved block times: a machine whose speed drifts and jitters, hitting both sides of
    a pair alike, plus each block's own noise; the engine takes ``ratio`` x the loop's time."""
    a, b = [], []
    for i in range(n):
        speed = 1.0 + drift * i / n + rng.gauss(0, 0.05)  # shared by the pair
        b.append(0.5 * speed * (1 + rng.gauss(0, noise)))
        a.append(0.5 * ratio * speed * (1 + rng.gauss(0, noise)))
    return a, b


def test_the_interval_covers_the_true_ratio_about_95_percent_of_the_time():
    rng = random.Random(1)
    covered, widths = 0, []
    trials = 200
    for t in range(trials):
        a, b = _pairs(rng, 60, 1.03, 0.03, drift=0.3)
        r = paired_ratio(a, b, seed=t)
        covered += r["low"] <= 1.03 <= r["high"]
        widths.append(r["half_width"])
    assert 0.88 <= covered / trials <= 0.995  # nominal 95% (a percentile bootstrap runs a bit narrow)
    assert max(widths) < 0.03  # 60 pairs at 3% noise per block: well within +-3%


def test_pairing_cancels_the_machine_drift():
    """A machine slowing down 2x over the run moves every block, not the pairs' ratio."""
    rng = random.Random(2)
    a, b = _pairs(rng, 100, 1.10, 0.01, drift=1.0)
    r = paired_ratio(a, b)
    assert abs(r["ratio"] - 1.10) < 0.01 and r["half_width"] < 0.01 and not r["unstable"]


def test_a_noisy_short_run_is_flagged_with_what_to_do():
    rng = random.Random(3)
    a, b = _pairs(rng, 8, 1.0, 0.15)
    r = paired_ratio(a, b)
    assert any("wider than +-3%" in why for why in r["unstable"])
    assert "only 2 rounds" in paired_ratio([1.0, 1.1], [1.0, 1.0])["unstable"]


def test_bimodal_block_times_are_flagged_as_unstable():
    """The issue's case: rounds at 13.x and 17.x s on both sides."""
    rng = random.Random(4)
    fast_or_slow = [rng.choice((13.6, 17.4)) + rng.gauss(0, 0.2) for _ in range(40)]
    assert bimodal(fast_or_slow) and bimodality_coefficient(fast_or_slow) > 0.6
    loop = [t * rng.uniform(0.99, 1.01) for t in fast_or_slow]
    r = paired_ratio(fast_or_slow, loop)
    assert "the ganforge blocks are bimodal" in r["unstable"] and "the eager blocks are bimodal" in r["unstable"]
    # one mode with noise, a uniform spread (a slow drift) and a single slow block are not bimodal
    assert not bimodal([15 + rng.gauss(0, 0.5) for _ in range(40)])
    assert not bimodal([13 + 4 * i / 39 for i in range(40)])
    assert not bimodal([15.0] * 39 + [30.0])


def test_outliers_and_the_bootstrap_on_known_values():
    times = [1.0, 1.01, 0.99, 1.02, 0.98, 1.0, 3.0]
    assert outliers(times) == [6]
    low, high = bootstrap_interval([2.0] * 10)
    assert low == high == 2.0
    with pytest.raises(ValueError, match="pairs"):
        paired_ratio([1.0], [1.0, 2.0])
