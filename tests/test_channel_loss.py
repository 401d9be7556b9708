"""The mask convention (1 = received) and the loss modes."""

import pytest
import torch

from network.loss import apply_mask, eval_mask, gilbert_elliott, loss_pattern, parse_loss_spec, sample_masks


def test_mask_convention_one_means_received():
    z = torch.ones(1, 4, 2, 2)
    mask = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    out = apply_mask(z, mask)
    assert out[0, 0].sum() == 4 and out[0, 1].sum() == 0 and out[0, 2].sum() == 4


def test_tail_masks_keep_a_prefix_with_per_sample_lengths():
    g = torch.Generator().manual_seed(0)
    m = sample_masks("tail", 512, 16, 12, g)
    assert m.shape == (512, 16)
    kept = m.sum(1)
    for row, k in zip(m, kept.long()):
        assert torch.all(row[:k] == 1) and torch.all(row[k:] == 0)
    assert kept.min() == 4 and kept.max() == 16  # k drawn uniformly in 0..12, per sample
    assert len(set(kept.tolist())) == 13


def test_random_and_burst_rates_bounded_by_drops():
    g = torch.Generator().manual_seed(0)
    for mode in ("random", "burst"):
        m = sample_masks(mode, 4000, 16, 8, g)
        lost = 1 - m.mean()
        assert 0.15 < lost < 0.35, (mode, lost)  # rate ~ U(0, 0.5): mean 0.25
        assert not torch.equal(m[0], m[1]) or not torch.equal(m[1], m[2])  # per sample


def test_gilbert_elliott_burst_lengths():
    g = torch.Generator().manual_seed(3)
    m = gilbert_elliott(200, 200, torch.full((200,), 0.3), burst_len=4.0, generator=g)
    lost = 1 - m
    assert abs(lost.mean().item() - 0.3) < 0.03
    runs = []
    for row in lost.tolist():
        n = 0
        for v in row + [0.0]:
            if v:
                n += 1
            elif n:
                runs.append(n)
                n = 0
    assert 3.3 < sum(runs) / len(runs) < 4.7


def test_none_and_zero_drops_receive_everything():
    assert torch.all(sample_masks("none", 3, 8, 8) == 1)
    assert torch.all(sample_masks("random", 3, 8, 0) == 1)


def test_eval_masks_are_exact_and_reproducible():
    for mode in ("tail", "random", "burst"):
        a = eval_mask(mode, 5, 16, 6, seed=11)
        b = eval_mask(mode, 5, 16, 6, seed=11)
        assert torch.equal(a, b)
        assert torch.all(a.sum(1) == 10)
    assert torch.equal(eval_mask("tail", 1, 4, 1), torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    assert not torch.equal(eval_mask("random", 5, 16, 6, seed=1), eval_mask("random", 5, 16, 6, seed=2))


def test_loss_specs_and_patterns():
    assert parse_loss_spec("random:0.3") == ("random", {"rate": 0.3})
    assert parse_loss_spec("burst:0.2,4") == ("burst", {"rate": 0.2, "burst_len": 4.0})
    assert parse_loss_spec("tail:2") == ("tail", {"lost": 2})
    for bad in ("random", "random:2", "burst:x", "tail:-1", "drop:1", "none:1"):
        with pytest.raises(ValueError, match="bad loss spec"):
            parse_loss_spec(bad)
    p1 = loss_pattern("random", 64, torch.Generator().manual_seed(5), rate=0.3)
    p2 = loss_pattern("random", 64, torch.Generator().manual_seed(5), rate=0.3)
    assert torch.equal(p1, p2) and 0 < p1.sum() < 64
    assert torch.equal(loss_pattern("tail", 5, torch.Generator(), lost=2), torch.tensor([1.0, 1, 1, 0, 0]))
