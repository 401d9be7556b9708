"""conv_lstm_ae: shapes, pass-through of received channels, live step == sequence, the mask convention,
bidirectional alignment, temporal loss patterns, checkpoints, and a short training run through main()."""

import json

import pytest
import torch

import autoencoder_train_vid_sequence as vid
from evaluation import temporal as temporal_eval
from models import build_model, load_model
from playback.conceal import fill_clip
from utils.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is faster, and far faster on a shared, busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**kwargs):
    torch.manual_seed(0)
    model = build_model("conv_lstm_ae", ae="LRAE_VC", ae_kwargs={"width": 16, "blocks": 1, "up_width": 8},
                        hidden=8, **kwargs)
    for p in model.head.parameters():  # a trained-looking head: predictions are not copy-previous
        torch.nn.init.normal_(p, std=0.1)
    model.set_latent_stats(torch.randn(4, 16, 4, 4) * 3 + 1)
    assert model.latent_std.min() > 1 and "latent_std" in model.state_dict()
    return model.eval()


def random_mask(b, t, c, seed=0):
    return (torch.rand(b, t, c, generator=torch.Generator().manual_seed(seed)) > 0.5).float()


def test_shapes_and_api():
    model = tiny()
    x = torch.rand(2, 5, 3, 32, 48)
    with torch.no_grad():
        out = model(x, random_mask(2, 5, 16))
        assert out["x_hat"].shape == x.shape and 0 <= out["x_hat"].min() and out["x_hat"].max() <= 1
        for key in ("z_filled", "z", "z_sent"):
            assert out[key].shape == (2, 5, 16, 4, 6)
        assert out["mask"].shape == (2, 5, 16)
        assert model.latent_channels == 16 and model.ae.model_name == "LRAE_VC"
        assert model.encode(x).shape == (2, 5, 16, 4, 6) and model.encode(x[:, 0]).shape == (2, 16, 4, 6)
        assert model.decode(out["z_filled"], out["mask"]).shape == x.shape
        assert model(x, decode=False)["x_hat"] is None


def test_received_channels_pass_through_bitwise():
    model = tiny()
    mask = random_mask(2, 6, 16, seed=1)
    with torch.no_grad():
        out = model(torch.rand(2, 6, 3, 32, 32), mask)
    keep = mask.bool()[..., None, None].expand_as(out["z_sent"])
    assert torch.equal(out["z_filled"][keep], out["z_sent"][keep])  # exactly as received
    assert torch.all(out["z"][~keep] == 0)  # the received latent has the lost channels zeroed
    assert not torch.allclose(out["z_filled"][~keep], torch.zeros(1))  # lost ones are predicted


def test_mask_convention_one_means_received():
    model = tiny()
    x = torch.rand(1, 3, 3, 32, 32)
    with torch.no_grad():
        out = model(x, torch.ones(1, 3, 16))
        assert torch.equal(out["z_filled"], out["z_sent"])
        assert torch.allclose(out["x_hat"], model.ae.decode(out["z_sent"][0], torch.ones(3, 16))[None], atol=1e-6)
        lost_first = torch.ones(1, 3, 16)
        lost_first[0, :, 0] = 0
        assert torch.all(model(x, lost_first)["z"][0, :, 0] == 0)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(temporal_eval.training_masks("random", "iid", 2, 4, 16, 0, g), torch.ones(2, 4, 16))
    lossy = temporal_eval.lossy_frames("consecutive", 8, n=1, gap=3)
    m = temporal_eval.eval_masks("random", lossy, 16, 12, seed=0)
    assert m.sum(1).tolist() == [16 if not lossy[t] else 4 for t in range(8)]
    assert torch.equal(temporal_eval.eval_masks("tail", lossy, 16, 12, seed=0)[3], torch.tensor([1.0] * 4 + [0.0] * 12))


def test_live_step_equals_sequence_forward():
    model = tiny(layers=2)
    mask = random_mask(2, 7, 16, seed=2)
    with torch.no_grad():
        out = model(torch.rand(2, 7, 3, 32, 32), mask)
        state, steps = None, []
        for t in range(7):
            filled, state = model.step(out["z"][:, t], mask[:, t], state)
            steps.append(filled)
            assert torch.equal(model.decoder_mask(state), out["decoder_mask"][:, t])
    assert torch.allclose(torch.stack(steps, 1), out["z_filled"], atol=1e-6)


def test_channels_never_received_are_decoded_as_lost():
    """A tail that never arrived has no past to fill it from: the fill decodes exactly as zero-fill."""
    model = tiny()
    with torch.no_grad():
        model.head[-1].weight.normal_()  # a trained-looking head that predicts something everywhere
    mask = torch.ones(1, 5, 16)
    mask[:, :, 10:] = 0  # channels 10.. never arrive
    mask[:, 2:, 3] = 0  # channel 3 arrives in frames 0-1 only: filled afterwards
    x = torch.rand(1, 5, 3, 32, 32)
    with torch.no_grad():
        out = model(x, mask)
        zero_fill = model.ae.decode(out["z"][0], mask[0])
    expected = mask.clone()
    expected[:, :, 3] = 1
    assert torch.equal(out["decoder_mask"], expected)
    assert not torch.allclose(out["z_filled"][:, :, 10:], torch.zeros(1))  # predicted, but not used:
    assert torch.allclose(out["x_hat"][0, :2], zero_fill[:2], atol=1e-6)  # frames 0-1 lost only the tail
    with torch.no_grad():  # later frames: channel 3 filled and used, the tail still decoded as lost
        assert torch.allclose(out["x_hat"][0], model.ae.decode(out["z_filled"][0], expected[0]), atol=1e-6)
        assert not torch.allclose(out["x_hat"][0, 2:], zero_fill[2:], atol=1e-4)


def test_untrained_model_is_copy_previous():
    torch.manual_seed(0)
    model = build_model("conv_lstm_ae", ae="LRAE_VC", hidden=8).eval()
    z, mask = torch.randn(2, 6, 16, 4, 4), random_mask(2, 6, 16, seed=3)
    with torch.no_grad():
        filled = model.fill(z * mask[..., None, None], mask)[0]
    copied, seen = fill_clip("copy", z * mask[..., None, None], mask)
    assert torch.equal(filled, copied) and torch.equal(seen, torch.cummax(mask, dim=1).values)


def test_bidirectional_states_are_aligned_in_time_and_not_live():
    model = tiny(bidirectional=True)
    z, mask = torch.rand(1, 6, 16, 4, 4), torch.ones(1, 6, 16)
    changed = z.clone()
    changed[:, 3] += 1.0
    with torch.no_grad():
        a, b = model.backward_states(z, mask), model.backward_states(changed, mask)
        differs = [(a[:, t] - b[:, t]).abs().max().item() > 0 for t in range(6)]
        assert differs == [True, True, True, True, False, False]  # state t sees frames t..T-1 only
        out = model(torch.rand(1, 4, 3, 32, 32), random_mask(1, 4, 16))
    assert out["z_filled"].shape == (1, 4, 16, 4, 4)
    with pytest.raises(RuntimeError, match="cannot run live"):
        model.step(z[:, 0], mask[:, 0])


def test_loss_patterns():
    assert temporal_eval.lossy_frames("consecutive", 12, n=3, gap=3).int().tolist() == [0, 0, 0, 1, 1, 1] * 2
    assert temporal_eval.lossy_frames("iid", 4).all()
    g = torch.Generator().manual_seed(5)
    masks = temporal_eval.training_masks("tail", "consecutive", 64, 10, 16, 12, g, bursts=(3,))
    lossy = (masks < 1).any(-1)
    assert not lossy[:, 0].any() and (lossy.sum(1) <= 3).all()
    again = temporal_eval.training_masks("tail", "consecutive", 64, 10, 16, 12, torch.Generator().manual_seed(5),
                                         bursts=(3,))
    assert torch.equal(masks, again)


def test_checkpoint_rebuilds_the_whole_model(tmp_path):
    model = tiny()
    path = save_checkpoint(tmp_path / "m.pth", make_checkpoint(model))
    loaded = load_model(path, expect="conv_lstm_ae")
    assert loaded.ae.config == model.ae.config
    x, mask = torch.rand(1, 3, 3, 32, 32), random_mask(1, 3, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x, mask)["x_hat"], model(x, mask)["x_hat"])


def test_two_step_training_then_continuation_with_drops(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    frame_ae = build_model("LRAE_VC", width=16, blocks=1, up_width=8)
    save_checkpoint(tmp_path / "ae.pth", make_checkpoint(frame_ae))
    common = ["--model", "conv_lstm_ae", "--data", "synthetic:1,8", "--size", "32", "--crop", "32",
              "--seq-len", "4", "--batch-size", "2", "--max-steps", "2", "--eval-frames", "4", "--amp", "none",
              "--eval-levels", "0,12", "--bursts", "1", "--model-args", '{"hidden": 8}']
    first = vid.main(common + ["--ae_path", "ae.pth", "--out-dir", "run1"])
    weights = first / "conv_lstm_ae_final_weights.pth"
    ckpt = load_checkpoint(weights)
    assert ckpt["model_kwargs"]["ae"] == "LRAE_VC" and ckpt["model_kwargs"]["ae_kwargs"]["width"] == 16
    assert {"args.json", "split.json", "metrics.jsonl", "last.pth", "temporal_eval.json",
            "temporal_eval.png", "loss_curve.png"} <= {p.name for p in first.iterdir()}
    second = vid.main(common + ["--model_path", str(weights), "--drops", "12", "--drop-mode", "tail",
                                "--out-dir", "run2"])
    assert (second / "conv_lstm_ae_dropUpTo_12_features_final_weights.pth").is_file()
    result = json.loads((second / "temporal_eval.json").read_text())
    assert {r["fill"] for r in result["rows"]} == set(temporal_eval.FILLS)
    row = temporal_eval.lookup(result, mode="tail", pattern="iid", lost=12, fill="convlstm")
    assert row["frames"] > 0 and row["psnr"] > 0
    with pytest.raises(SystemExit, match="ae_path"):
        vid.main(common + ["--model_path", "ae.pth", "--out-dir", "run3"])


def test_over_a_model_with_quality_levels(tmp_path, monkeypatch):
    """conv_lstm_ae over LRAE_RD: it fills the level-free latent of the top level (``ae.dequantize``), as the
    receiver's Player hands it, trains through main(), and its checkpoint carries the learned tables."""
    torch.manual_seed(0)
    model = build_model("conv_lstm_ae", ae="LRAE_RD", ae_kwargs={"latent_channels": 8, "width": 16, "blocks": 1,
                                                                 "up_width": 8, "levels": 3}, hidden=8).eval()
    x = torch.rand(1, 2, 3, 32, 32)
    with torch.no_grad():
        symbols = torch.round(model.ae.encode(x[0], 2))
        assert torch.allclose(model.encode(x)[0], model.ae.dequantize(symbols, 2))
        mask = torch.ones(1, 8)
        assert torch.allclose(model.decode(model.encode(x)[:, 0], mask), model.ae.decode(symbols[:1], mask, 2))
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "rd.pth", make_checkpoint(model.ae))
    out = vid.main(["--model", "conv_lstm_ae", "--data", "synthetic:1,8", "--size", "32", "--crop", "32",
                    "--seq-len", "4", "--batch-size", "2", "--max-steps", "2", "--eval-frames", "4", "--amp", "none",
                    "--eval-levels", "0,4", "--bursts", "1", "--model-args", '{"hidden": 8}', "--ae", "LRAE_RD",
                    "--ae_path", "rd.pth", "--freeze-ae", "--drops", "4", "--out-dir", "run"])
    ckpt = load_checkpoint(out / "conv_lstm_ae_dropUpTo_4_features_final_weights.pth")
    assert "learned_tables" in ckpt["extra"]["codec"]
