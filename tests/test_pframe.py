"""LRAE_VC_P (models/pframe.py): the P-frame codec's contract, packet independence of its latent, that it
starts as its intra codec, the nothing-received case, and that the reference steers the decode."""

import json

import pytest
import torch

from models import build_model, kind_of, load_model, model_names
from models.rd import LRAE_RD

TINY = {"intra_kwargs": {"latent_channels": 8, "width": 16, "blocks": 1, "up_width": 8, "levels": 3,
                         "tail_blocks": 1}}


def reads_reference(m):
    """The weights that read the reference, which start at zero (start_from_intra)."""
    return [m.encoder[0].weight[:, 3:], m.decoder[0].weight[:, 16:], m.project4.weight, m.merge_gate]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_model("LRAE_VC_P", **TINY)
    with torch.no_grad():
        for w in reads_reference(m)[:-1]:  # a trained-looking P codec
            w.normal_(std=0.05)
        m.merge_gate.fill_(0.5)
    return m.eval()


def frames(seed=0, n=2, side=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, side, side, generator=g), torch.rand(n, 3, side, side, generator=g)


def test_registered_as_inter_codec_sharing_the_quality_levels(model):
    assert kind_of(model) == "inter" and "LRAE_VC_P" in model_names("inter")
    assert model.latent_shape(64, 96) == (8, 8, 12) and model.levels == 3
    assert isinstance(model.intra, LRAE_RD) and type(model).dequantize is type(model.intra).dequantize
    assert torch.equal(model.lambdas, model.intra.lambdas), "a quality index means the same for I and P frames"
    intra = {id(p) for p in model.intra.parameters()}
    assert not any(id(p) in intra for g in model.param_groups() for p in g["params"])
    with pytest.raises(ValueError, match="not a frame codec with quality levels and LRAE_RD's transforms"):
        build_model("LRAE_VC_P", intra="LRAE_VC")


def test_forward_contract(model):
    x, ref = frames()
    out = model(x, ref, quality=torch.tensor([0, 2]))
    assert out["x_hat"].shape == x.shape and out["z"].shape == (2, 8, 4, 4)
    assert out["likelihoods"].shape == (2, 8, 4, 4) and bool((out["likelihoods"] > 0).all())
    assert torch.equal(out["z"], torch.round(out["z"])) and out["quality"].tolist() == [0, 2]
    assert bool(((out["x_hat"] >= 0) & (out["x_hat"] <= 1)).all())
    with pytest.raises(ValueError, match="reference"):
        model.encode(x, ref[:, :, :16])


def test_it_starts_as_its_intra_codec():
    """start_from_intra: the intra's transforms, gains and priors, blind to the reference - so training
    starts from the trained intra codec (a P codec started from random weights collapsed)."""
    torch.manual_seed(0)
    m = build_model("LRAE_VC_P", **TINY).eval()
    with torch.no_grad():
        for p in m.intra.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # "trained" intra weights, loaded after construction
        m.start_from_intra()
        assert all(float(w.abs().sum()) == 0 for w in reads_reference(m))
        x, ref = frames()
        a, b = m(x, ref, quality=1), m.intra(x, quality=1)
        assert torch.allclose(a["x_hat"], b["x_hat"], atol=1e-6)
        assert torch.allclose(a["likelihoods"], b["likelihoods"], atol=1e-6)


def test_the_merge_gate_learns_from_zero_in_either_direction():
    """The gate starts at 0 (the intra codec) and must get a gradient there whatever its sign (a clamped gate
    that one step pushed below 0 never opened again)."""
    torch.manual_seed(0)
    m = build_model("LRAE_VC_P", **TINY).train()
    x, ref = frames(4)
    for sign in (1.0, -1.0):
        m.zero_grad(set_to_none=True)
        with torch.no_grad():
            m.merge_gate.fill_(sign * 1e-3)
        out = m(x, ref, quality=torch.tensor([0, 1]))
        (out["x_hat"] - x).square().mean().backward()
        assert float(m.merge_gate.grad.abs()) > 0


def test_a_lost_channel_costs_only_that_channel(model):
    """Each channel's symbols come from the encoder alone (one packet each); the decoder's answer with a
    channel lost equals its answer when that channel's symbols are zeroed and flagged lost."""
    x, ref = frames(1, n=1)
    with torch.no_grad():
        z = torch.round(model.encode(x, ref, 1))
        mask = torch.ones(1, 8)
        mask[0, 3] = 0
        lost = model.decode(z * mask[:, :, None, None], ref, mask, 1)
        other = z.clone()
        other[0, 3] = 7.0  # whatever channel 3 held, it is not used once it is lost
        assert torch.equal(lost, model.decode(other * mask[:, :, None, None], ref, mask, 1))
        assert not torch.equal(lost, model.decode(z, ref, torch.ones(1, 8), 1))


def test_nothing_received_decodes_from_the_reference_alone(model):
    x, ref = frames(2, n=1)
    with torch.no_grad():
        z = torch.round(model.encode(x, ref, 2))
        none = torch.zeros(1, 8)
        a = model.decode(z * 0, ref, none, 2)
        assert torch.equal(a, model.decode(torch.randn_like(z) * 0, ref, none, 2))
        assert not torch.equal(a, model.decode(z * 0, ref.flip(-1), none, 2)), "the reference steers the decode"


def test_training_pass_has_gradients_everywhere(model):
    model.train()
    try:
        x, ref = frames(3)
        out = model(x, ref, torch.tensor([[1.0] * 6 + [0, 0], [1.0] * 8]))
        loss = (out["lmbda"] * 255 ** 2 * (out["x_hat"] - x).square().mean(dim=(1, 2, 3))).mean()
        loss = loss - torch.log2(out["likelihoods"]).sum() / (32 * 32 * 2)
        loss.backward()
        for name in ("encoder.0.weight", "context4.0.weight", "context8.0.weight", "decoder.0.weight",
                     "project4.weight", "decoder.4.1.body.2.weight", "merge.0.weight", "merge_gate", "log_gain"):
            grad = dict(model.named_parameters())[name].grad
            assert grad is not None and float(grad.abs().sum()) > 0, name
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_training_script_runs_and_reports_intra_vs_p(tmp_path, capsys):
    import pframe_train
    from utils.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    intra = build_model("LRAE_RD", **TINY["intra_kwargs"])
    save_checkpoint(tmp_path / "intra.pth", make_checkpoint(intra))
    common = ["--data", "synthetic:1,8", "--size", "32", "--crop", "32", "--seq-len", "3", "--batch-size", "2",
              "--max-steps", "2", "--eval-frames", "4", "--amp", "none", "--val-frames", "6"]
    out = pframe_train.main(["--intra", str(tmp_path / "intra.pth"), "--out-dir", str(tmp_path / "run"), *common])
    ckpt = load_checkpoint(out / "LRAE_VC_P_final.pth")
    assert ckpt["model"] == "LRAE_VC_P" and {"codec", "p_codec"} <= ckpt["extra"].keys()
    rows = json.loads((out / "pframe_eval.json").read_text())["rows"]
    assert [r["quality"] for r in rows] == [0, 1, 2] and all(r["p_bpp"] > 0 and r["intra_psnr"] > 0 for r in rows)
    assert "I+P dB" in capsys.readouterr().out
    model = load_model(out / "LRAE_VC_P_final.pth")
    assert all(torch.equal(a, b) for a, b in zip(model.intra.state_dict().values(), intra.state_dict().values())), \
        "the intra codec stays frozen"
    with pytest.raises(SystemExit, match="--intra .* or --model-path"):
        pframe_train.main(common)
