"""LRAE_RD and its factorized prior: shapes, a proper density, variable rate, decoding any subset."""

import itertools

import numpy as np
import pytest
import torch

from models import build_model, kind_of
from models.prior import FactorizedPrior
from playback.conceal import Player


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("LRAE_RD", latent_channels=8, width=16, levels=3).eval()


def test_registered_as_frame_codec(model):
    assert kind_of(model) == "frame" and model.stride == 8 and model.latent_shape(64, 96) == (8, 8, 12)


def test_forward_contract(model):
    x = torch.rand(2, 3, 64, 64)
    out = model(x, quality=torch.tensor([0, 2]))
    assert out["x_hat"].shape == x.shape and out["z"].shape == (2, 8, 8, 8)
    assert out["likelihoods"].shape == (2, 8, 8, 8) and bool((out["likelihoods"] > 0).all())
    assert out["quality"].tolist() == [0, 2] and torch.allclose(out["lmbda"], model.lambdas[[0, 2]])
    assert torch.equal(out["z"], torch.round(out["z"])), "the decoder sees integer symbols"
    assert bool(((out["x_hat"] >= 0) & (out["x_hat"] <= 1)).all())


def test_quality_is_validated(model):
    with pytest.raises(ValueError, match="quality"):
        model.encode(torch.rand(1, 3, 32, 32), quality=3)


def test_training_draws_one_level_per_sample():
    m = build_model("LRAE_RD", latent_channels=4, width=8, levels=4).train()
    torch.manual_seed(1)
    q = m(torch.rand(16, 3, 32, 32))["quality"]
    assert q.shape == (16,) and len(q.unique()) > 1


def test_higher_gain_means_finer_symbols(model):
    """The level's gain scales the latent before rounding: the top level has more distinct symbols."""
    x = torch.rand(1, 3, 64, 64)
    coarse, fine = (torch.round(model.encode(x, q)).unique().numel() for q in (0, 2))
    assert fine > coarse


def test_prior_is_a_density():
    torch.manual_seed(0)
    prior = FactorizedPrior(3)
    p = prior.pmf(-400, 400)
    assert p.shape == (3, 801)
    assert torch.allclose(p.sum(1), torch.ones(3), atol=1e-4)
    y = torch.tensor([[[[0.0]], [[1.0]], [[-2.0]]]])  # (1, 3, 1, 1)
    assert torch.allclose(prior.likelihood(y)[0, :, 0, 0], p[[0, 1, 2], [400, 401, 398]], atol=1e-6)


def test_integer_tables_cover_the_mass():
    torch.manual_seed(0)
    prior = FactorizedPrior(2)
    counts, offsets = prior.integer_tables(max_symbols=255, tail=1e-4)
    for c, off, row in zip(counts, offsets, prior.pmf(-512, 512)):
        assert c.min() >= 0 and len(c) <= 255
        assert row[off + 512:off + 512 + len(c)].sum() >= 1 - 1e-4


def test_decodes_from_any_subset_of_channels(model):
    """Every one of the 2^C channel subsets decodes to a valid frame (the mask tells the decoder)."""
    x = torch.rand(1, 3, 32, 32)
    z = torch.round(model.encode(x))
    masks = torch.tensor(list(itertools.product([0.0, 1.0], repeat=8)))
    with torch.no_grad():
        x_hat = model.decode(z.expand(len(masks), -1, -1, -1) * masks[:, :, None, None], masks)
    assert x_hat.shape == (256, 3, 32, 32) and bool(torch.isfinite(x_hat).all())
    assert not torch.allclose(x_hat[0], x_hat[-1]), "what arrived must matter"


@pytest.fixture(scope="module")
def coder(model):
    from models.rd_coding import RDCoder
    return RDCoder(model)


def test_tables_are_deterministic_integers(model, coder):
    from codec.entropy import TOTAL
    from models.rd_coding import RDCoder
    again = RDCoder(model)
    for level in range(model.levels):
        for t, u in zip(coder.tables[level], again.tables[level]):
            assert t.dtype == np.int64 and int(t.sum()) == TOTAL and int(t.min()) >= 1 and np.array_equal(t, u)
        assert np.array_equal(coder.offsets[level], again.offsets[level])


@pytest.mark.parametrize("quality", [0, 2])
def test_coded_bytes_match_the_rate_estimate(model, coder, quality):
    """What the range coder writes is the model's estimate (-log2 of its likelihoods) within 3 %, plus at
    most 4 bytes per channel (the coder's final word)."""
    torch.manual_seed(3)
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        y = model.encode(x, quality)
        estimate = -torch.log2(model.likelihood(torch.round(y), torch.full((2,), quality))).sum().item() / 8
    coded = sum(len(b) for frame in coder.compress(y, quality) for b in frame)
    assert abs(coded - estimate) <= 0.03 * estimate + 4 * model.latent_channels * 2


def test_any_subset_of_coded_channels_decodes(model, coder):
    """200 random subsets of the coded channels: each received channel decodes to exactly its symbols
    (no other channel needed), each lost one is zero, and the decoder runs on the result."""
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        y = model.encode(x, 1)
    sym = torch.from_numpy(coder.symbols(y, 1) + coder.offsets[1][None, :, None, None]).float()
    chans = coder.compress(y, 1)[0]
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        mask = (torch.rand(1, model.latent_channels, generator=g) < 0.5).float()
        frame = [b if m else None for b, m in zip(chans, mask[0].tolist())]
        z = coder.decompress([frame], tuple(y.shape[1:]), 1)
        assert torch.equal(z, sym * mask[:, :, None, None])
        with torch.no_grad():
            assert bool(torch.isfinite(model.decode(z, mask, 1)).all())


def test_two_step_rd_training_logs_rate_and_psnr(tmp_path):
    """autoencoder_train.py trains LRAE_RD on lambda * 255^2 * MSE + bpp, the entropy parameters at their
    own learning-rate scale, and logs bpp and PSNR in metrics.jsonl."""
    import json

    import autoencoder_train
    out = tmp_path / "run"
    autoencoder_train.main(["--out-dir", str(out), "--data", "synthetic", "--size", "64", "--batch-size", "4",
                            "--amp", "none", "--val-frames", "8", "--model", "LRAE_RD", "--max-steps", "2",
                            "--model-args", '{"latent_channels": 8, "width": 16, "levels": 3}'])
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if "train_loss" in r]
    assert train and all(r["bpp"] > 0 and 0 < r["psnr"] < 60 for r in train)
    ckpt = torch.load(out / "last.pth", weights_only=True)
    scales = [g.get("lr_scale", 1.0) for g in ckpt["optimizer"]["param_groups"]]
    assert scales == [1.0, build_model("LRAE_RD").entropy_lr_scale]
    # the final weights carry the learned tables, so they stream as they are (wire mode 2)
    from codec.wire import MODE_LEARNED
    from models import load_codec_model
    _, codec, _ = load_codec_model(str(out / "LRAE_RD_final_w_random_drops.pth"))
    assert codec.mode == MODE_LEARNED


def test_a_channel_with_one_symbol_still_codes(monkeypatch):
    """A trained prior can put all of a channel's mass on one symbol (an unused channel): the coder still
    gets a valid two-entry table and the channel round-trips."""
    from models.rd_coding import RDCoder
    m = build_model("LRAE_RD", latent_channels=2, width=8, levels=1).eval()
    counts, offsets = m.priors[0].integer_tables()
    monkeypatch.setattr(m.priors[0], "integer_tables",
                        lambda **kw: ([np.array([1 << 20]), *counts[1:]], np.array([0, *offsets[1:]])))
    coder = RDCoder(m)
    z = torch.zeros(1, 2, 2, 2)
    frame = coder.compress(z, 0)
    assert len(coder.tables[0][0]) == 2 and torch.equal(coder.decompress(frame, (2, 2, 2), 0), z)


def test_decode_is_synthesis_of_the_dequantized_latent(model):
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        z = torch.round(model.encode(x, 1))
        mask = torch.tensor([[1.0, 0, 1, 1, 0, 1, 1, 1]])
        latent = model.dequantize(z, 1)
        assert torch.allclose(latent, z * torch.exp2(model.log_inv_gain[1])[None, :, None, None])
        assert torch.equal(model.decode(z * mask[:, :, None, None], mask, 1),
                           model.synthesize(latent * mask[:, :, None, None], mask))


def test_copy_fill_keeps_a_channel_across_quality_levels(model):
    """A channel lost in a frame of level 2 is filled with its value from the frame before, which came at
    level 0: in the level-free latent, not as level-0 symbols read at level 2."""
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        z0, z2 = torch.round(model.encode(x, 0)), torch.round(model.encode(x, 2))
        player = Player(model, "copy")
        player.show(z0, torch.ones(1, 8), quality=0)
        mask = torch.ones(1, 8)
        mask[0, 3] = 0
        shown = player.show(z2 * mask[:, :, None, None], mask, quality=2)
        expect = torch.where(mask[:, :, None, None] > 0, model.dequantize(z2, 2), model.dequantize(z0, 0))
        assert torch.allclose(shown.z, expect)
        assert torch.allclose(shown.x_hat, model.synthesize(expect, torch.ones(1, 8)))


def test_rd_levels_probe_on_a_held_out_split(tmp_path):
    """evaluation.rd_levels: every level coded for real on the frames of the split asked for."""
    from evaluation import rd_levels
    from utils.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "rd.pth", make_checkpoint(build_model("LRAE_RD", latent_channels=4, width=8,
                                                                            levels=2)))
    result = rd_levels.main(["--model-path", str(path), "--data", "sample", "--split", "test", "--frames", "2",
                             "--size", "32", "--out", str(tmp_path / "r.json")])
    assert result["held_out"] == ["sample/carphone"] and [r["level"] for r in result["levels"]] == [0, 1]
    assert all(r["bytes"] > 0 and 0.9 < r["coded_over_estimate"] < 1.5 for r in result["levels"])
    held_out = rd_levels.main(["--model-path", str(path), "--data", "sample", "--split", "held-out", "--frames", "2",
                               "--size", "32"])
    assert held_out["held_out"] == ["sample/bigbuckbunny", "sample/carphone"]


def test_average_mixes_a_model_and_its_fine_tune(tmp_path):
    """models.average: (1 - w) * base + w * tuned, tables recomputed for the new weights; another model refused."""
    from models import load_codec_model
    from models.average import main as average
    from models.rd_tables import learned_codec
    from utils.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    a, b = (build_model("LRAE_RD", latent_channels=4, width=8, levels=2) for _ in range(2))
    pa = save_checkpoint(tmp_path / "a.pth", make_checkpoint(a, extra={"codec": learned_codec(a)}))
    pb = save_checkpoint(tmp_path / "b.pth", make_checkpoint(b, extra={"codec": learned_codec(b)}))
    out = average([str(pa), str(pb), "--weight", "0.75", "--out", str(tmp_path / "m.pth")])
    w = "encoder.0.weight"
    assert torch.allclose(out["state_dict"][w], 0.25 * a.state_dict()[w] + 0.75 * b.state_dict()[w], atol=1e-6)
    model, codec, _ = load_codec_model(str(tmp_path / "m.pth"))
    assert codec.levels == 2 and torch.equal(model.state_dict()[w], out["state_dict"][w])
    other = save_checkpoint(tmp_path / "c.pth", make_checkpoint(build_model("LRAE_RD", latent_channels=4, width=16,
                                                                             levels=2)))
    with pytest.raises(SystemExit, match="must be the same model"):
        average([str(pa), str(other), "--weight", "0.5", "--out", str(tmp_path / "x.pth")])
