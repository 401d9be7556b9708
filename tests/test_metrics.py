"""Metrics against hand computations: PSNR of a known MSE, SSIM of identical images, layouts, caps."""

import math

import numpy as np
import pytest
import torch

from utils.metrics import PSNR_MAX, bpp, freeze_ms, freeze_runs, ms_ssim, mse, psnr, ssim, ssim_db, to_uint8


def _img(b=2, h=32, w=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, 3, h, w), generator=g, dtype=torch.uint8)


def test_psnr_of_known_mse():
    x = torch.full((1, 3, 8, 8), 100, dtype=torch.uint8)
    y = x + 10  # MSE = 100 everywhere
    assert mse(x, y).item() == pytest.approx(100.0)
    assert psnr(x, y).item() == pytest.approx(10 * math.log10(255**2 / 100))
    y = x.clone()
    y[..., :4, :] += 2  # half the values off by 2 -> MSE 2
    assert psnr(x, y).item() == pytest.approx(10 * math.log10(255**2 / 2))


def test_psnr_is_per_image_and_capped():
    x = _img()
    y = x.clone()
    y[1] = 255 - y[1]
    out = psnr(x, y)
    assert out.shape == (2,) and out.dtype == torch.float64
    assert out[0].item() == PSNR_MAX
    assert out[1].item() == pytest.approx(psnr(x[1], y[1]).item()) and out[1] < 20


def test_layouts_agree_and_floats_are_quantised():
    x, y = _img(seed=1), _img(seed=2)
    ref = psnr(x, y)
    hwc = (x.permute(0, 2, 3, 1).numpy(), y.permute(0, 2, 3, 1).numpy())
    assert torch.equal(psnr(*hwc), ref)
    assert torch.equal(psnr(x.float() / 255, y.float() / 255), ref)
    # a float within half a level of an 8-bit value counts as that value
    assert (psnr(x.float() / 255 + 0.4 / 255, x) == PSNR_MAX).all()
    assert torch.equal(to_uint8(torch.tensor([-1.0, 0.5, 2.0]).reshape(1, 3, 1, 1)).flatten(),
                       torch.tensor([0, 128, 255], dtype=torch.uint8))


def test_bad_input_raises():
    with pytest.raises(ValueError):
        psnr(_img(h=32), _img(h=16))
    with pytest.raises(TypeError):
        psnr(np.zeros((4, 4, 3)), np.zeros((4, 4, 3)))
    with pytest.raises(ValueError):
        to_uint8(torch.zeros(1, 1, 4, 4))


def test_ssim_identical_is_one_and_noise_lower():
    x = _img(b=3, h=48, w=48)
    assert torch.allclose(ssim(x, x), torch.ones(3, dtype=torch.float64))
    noisy = (x.int() + 40).clamp(0, 255).to(torch.uint8)
    s = ssim(x, noisy)
    assert s.shape == (3,) and (s < 1).all()


def test_ms_ssim_needs_more_than_160_pixels():
    small = _img(b=2, h=160, w=200)
    assert torch.isnan(ms_ssim(small, small)).all()
    big = _img(b=1, h=176, w=176)
    assert ms_ssim(big, big).item() == pytest.approx(1.0, abs=1e-5)


def test_ssim_db_and_bpp():
    assert ssim_db(0.99) == pytest.approx(20.0)  # GRACE: -10 log10(1 - SSIM)
    assert ssim_db(0.95) == pytest.approx(-10 * math.log10(0.05))
    assert ssim_db(0.9) == pytest.approx(10.0)
    assert ssim_db(1.0) == 100.0
    out = ssim_db(torch.tensor([0.9, 1.0], dtype=torch.float64))
    assert torch.allclose(out, torch.tensor([10.0, 100.0], dtype=torch.float64))
    assert np.allclose(ssim_db(np.array([0.99, 0.999])), [20.0, 30.0])
    assert bpp(1000, 100, 80) == pytest.approx(1.0)
    assert np.allclose(bpp(np.array([6272, 12544]), 224, 224), [1.0, 2.0])


def test_freezes_are_runs_of_stale_frames():
    fresh = [True, False, False, True, False, True, True, False, False, False]
    assert freeze_runs(fresh).tolist() == [2, 1, 3]
    assert freeze_runs([True] * 4).tolist() == [] and freeze_runs([False] * 3).tolist() == [3]
    assert freeze_runs(np.array([], bool)).tolist() == []
    out = freeze_ms(fresh, fps=25)  # 40 ms a frame: freezes of 80, 40 and 120 ms
    assert out["freeze_ms_total"] == pytest.approx(240.0)
    assert out["freeze_ms_p95"] == pytest.approx(np.percentile([80, 40, 120], 95))  # 116 ms
    assert freeze_ms([True, True]) == {"freeze_ms_total": 0.0, "freeze_ms_p95": 0.0}
    assert freeze_ms([False] * 3)["freeze_ms_total"] == pytest.approx(100.0)  # 30 fps
    with pytest.raises(ValueError):
        freeze_ms(fresh, fps=0)
