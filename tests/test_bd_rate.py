"""BD-rate against hand-computed cases and an independent integration (numpy polyfit + trapezoids)."""

import math

import numpy as np
import pytest

from utils.metrics import bd_rate

ANCHOR_RATE = [100.0, 200.0, 400.0, 800.0]
ANCHOR_PSNR = [30.0, 33.0, 35.5, 37.5]


def test_half_the_rate_is_minus_50_percent_and_double_is_plus_100():
    half = [r / 2 for r in ANCHOR_RATE]
    assert bd_rate(ANCHOR_RATE, ANCHOR_PSNR, half, ANCHOR_PSNR) == pytest.approx(-50.0, abs=1e-9)
    assert bd_rate(half, ANCHOR_PSNR, ANCHOR_RATE, ANCHOR_PSNR) == pytest.approx(100.0, abs=1e-9)
    assert bd_rate(ANCHOR_RATE, ANCHOR_PSNR, ANCHOR_RATE, ANCHOR_PSNR) == pytest.approx(0.0, abs=1e-9)


def test_log_linear_curves_by_hand():
    # log R = q / 4 (anchor) and log R = q / 4 - 0.25 + 0.01 (q - 30) (test), both exact in the fit;
    # over q in [30, 38] the mean difference is -0.25 + 0.01 * 4 = -0.21
    q = np.array([30.0, 32.0, 34.0, 36.0, 38.0])
    anchor, test = np.exp(q / 4), np.exp(q / 4 - 0.25 + 0.01 * (q - 30))
    assert bd_rate(anchor, q, test, q) == pytest.approx((math.exp(-0.21) - 1) * 100, abs=1e-6)


def independent_bd_rate(ra, qa, rb, qb, samples=200_001):
    """The same definition, evaluated by dense trapezoids instead of exact polynomial integrals."""
    fa = np.polynomial.Polynomial.fit(qa, np.log(ra), 3)
    fb = np.polynomial.Polynomial.fit(qb, np.log(rb), 3)
    grid = np.linspace(max(min(qa), min(qb)), min(max(qa), max(qb)), samples)
    d = fb(grid) - fa(grid)
    mean = float(((d[1:] + d[:-1]) / 2 * np.diff(grid)).sum() / (grid[-1] - grid[0]))
    return (math.exp(mean) - 1) * 100


def test_non_trivial_case_matches_an_independent_integration():
    rb, qb = [90.0, 170.0, 380.0, 700.0, 1300.0], [30.5, 33.2, 36.0, 38.0, 39.1]
    expected = independent_bd_rate(ANCHOR_RATE, ANCHOR_PSNR, rb, qb)
    assert bd_rate(ANCHOR_RATE, ANCHOR_PSNR, rb, qb) == pytest.approx(expected, abs=1e-6)
    assert -40 < expected < 0  # fewer bits at every quality in the overlap [30.5, 37.5]


def test_order_of_points_does_not_matter_and_few_points_lower_the_degree():
    rb, qb = [170.0, 90.0, 700.0, 380.0], [33.2, 30.5, 38.0, 36.0]
    assert bd_rate(ANCHOR_RATE, ANCHOR_PSNR, rb, qb) == pytest.approx(
        bd_rate(ANCHOR_RATE, ANCHOR_PSNR, sorted(rb), sorted(qb)), abs=1e-9)
    # two points per curve: straight lines in log-rate; a constant factor 0.8 gives -20 %
    assert bd_rate([100, 400], [30, 36], [80, 320], [30, 36]) == pytest.approx(-20.0, abs=1e-9)


def test_no_overlap_is_none_and_bad_curves_raise():
    assert bd_rate([100, 200], [30, 32], [100, 200], [33, 35]) is None
    with pytest.raises(ValueError):
        bd_rate([100], [30], [100, 200], [30, 32])
    with pytest.raises(ValueError):
        bd_rate([0, 200], [30, 32], [100, 200], [30, 32])
    with pytest.raises(ValueError):
        bd_rate([100, 200], [30, float("nan")], [100, 200], [30, 32])


def test_curves_whose_psnr_does_not_rise_with_rate_have_no_bd_rate():
    # under loss: a frozen stream repeats its PSNR, a larger JPEG frame freezes more often and shows less
    assert bd_rate(ANCHOR_RATE, ANCHOR_PSNR, [50, 100, 200], [30, 36, 36]) is None
    assert bd_rate([1000, 2000, 4000], [21.5, 24.9, 13.5], ANCHOR_RATE, ANCHOR_PSNR) is None
    assert bd_rate(ANCHOR_RATE, ANCHOR_PSNR, [100, 200], [30, 30]) is None
    # the order the points come in does not matter, only PSNR against rate
    assert bd_rate(ANCHOR_RATE[::-1], ANCHOR_PSNR[::-1], ANCHOR_RATE, ANCHOR_PSNR) == pytest.approx(0.0, abs=1e-9)


def test_bd_rates_clean_compares_every_rate_point_with_every_sweep():
    from evaluation.rd import bd_rates_clean

    jpeg = [{"method": "jpeg", "quality": q, "bytes_per_frame": r, "psnr": p}
            for q, r, p in zip((10, 50, 90, 95), ANCHOR_RATE, ANCHOR_PSNR)]
    ours = [{"method": "ours", "quality": q, "bytes_per_frame": r / 2, "psnr": p}
            for q, r, p in zip(range(4), ANCHOR_RATE, ANCHOR_PSNR)]
    (row,) = bd_rates_clean(jpeg + ours, ["jpeg", "webp"])  # no webp points: no row for it
    assert row["method"] == "ours" and row["anchor"] == "jpeg" and row["loss_rate"] == 0.0
    assert row["bd_rate"] == pytest.approx(-50.0, abs=1e-9)
