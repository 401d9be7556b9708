"""Shape contracts, the registry, and checkpoint round-trips for every frame model."""

import pytest
import torch
import torch.nn.functional as F

from models import build_model, load_model, model_names
from utils.checkpoint import CheckpointError, make_checkpoint, save_checkpoint

FRAME_MODELS = model_names("frame")
LATENTS = {"PNC": (10, 32, 32), "PNC16": (16, 32, 32), "PNC32": (32, 32, 32),
           "PNC_with_classification": (10, 32, 32), "LRAE_VC": (16, 28, 28)}


def test_registry_lists_the_seed_models():
    assert set(LATENTS) <= set(FRAME_MODELS)


@pytest.mark.parametrize("name", sorted(LATENTS))
def test_shapes_at_224(name):
    torch.manual_seed(0)
    model = build_model(name).eval()
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        z = model.encode(x)
        assert tuple(z.shape) == (2, *LATENTS[name])
        assert model.latent_shape(224, 224) == LATENTS[name]
        x_hat = model.decode(z)
        assert x_hat.shape == x.shape
        assert 0.0 <= x_hat.min() and x_hat.max() <= 1.0
        out = model(x, torch.ones(2, z.shape[1]))
    assert {"x_hat", "z", "mask"} <= set(out)
    if "classification" in name:
        assert out["logits"].shape == (2, model.num_classes)


def test_lrae_vc_is_not_tied_to_224():
    model = build_model("LRAE_VC").eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 96, 160))
    assert out["z"].shape == (1, 16, 12, 20) and out["x_hat"].shape == (1, 3, 96, 160)
    with pytest.raises(ValueError, match="multiples of 8"):
        model.encode(torch.rand(1, 3, 100, 100))


def test_forward_zeroes_lost_channels_and_decoder_sees_only_the_latent():
    model = build_model("LRAE_VC").eval()
    x = torch.rand(2, 3, 64, 64)
    mask = torch.tensor([[1.0] * 8 + [0.0] * 8, [0.0] * 8 + [1.0] * 8])
    with torch.no_grad():
        out = model(x, mask)
        assert torch.all(out["z"][0, 8:] == 0) and torch.all(out["z"][1, :8] == 0)
        # decode(z, mask) from the received latent alone reproduces forward: no bypass of the bottleneck
        assert torch.allclose(model.decode(out["z"], mask), out["x_hat"])


def test_build_model_rejects_unknown_names_and_arguments():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("NOPE")
    with pytest.raises(ValueError, match="bad arguments"):
        build_model("PNC", nonsense=1)


@pytest.mark.parametrize("name", sorted(LATENTS))
def test_checkpoint_round_trip_weights_only(tmp_path, name):
    torch.manual_seed(1)
    kwargs = {"num_classes": 5} if "classification" in name else {}
    model = build_model(name, **kwargs)
    path = save_checkpoint(tmp_path / "m.pth", make_checkpoint(model, epoch=3, step=7, args={"x": 1}))
    raw = torch.load(path, weights_only=True)
    assert raw["model"] == name and raw["model_kwargs"] == model.config
    loaded = load_model(path)
    assert type(loaded) is type(model) and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


def test_load_model_refuses_another_model_and_garbage(tmp_path):
    path = save_checkpoint(tmp_path / "pnc.pth", make_checkpoint(build_model("PNC")))
    with pytest.raises(CheckpointError, match="holds a PNC model"):
        load_model(path, expect="LRAE_VC")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.pth")


@pytest.mark.parametrize("ste", [True, False])
def test_pnc_clamp_forward_is_the_prototypes_and_gradient_passes_only_straight_through(ste):
    torch.manual_seed(0)
    model = build_model("PNC", ste_clamp=ste)
    with torch.no_grad():
        model.final.bias.copy_(torch.tensor([-5.0, 0.5, 5.0]))  # red far below 0, blue far above 1
    x = torch.rand(1, 3, 28, 28)
    out = model(x)["x_hat"]
    assert torch.all(out[:, 0] == 0) and torch.all(out[:, 2] == 1)  # forward: the hard clamp either way
    F.mse_loss(out, x).backward()
    grad = model.final.bias.grad
    if ste:  # the straight-through clamp pushes red up and blue down, back into [0, 1]
        assert grad[0] < 0 < grad[2]
    else:  # the hard clamp gives no gradient: those channels stay dead
        assert grad[0] == 0 and grad[2] == 0


def test_joint_head_keeps_class_names_and_learns_a_latent_cue():
    """Encoder + head, trained on cross-entropy alone, separate held-out frames of two classes that
    differ only in brightness (in eval mode, i.e. with BatchNorm's running statistics)."""
    torch.manual_seed(0)
    model = build_model("PNC_with_classification", num_classes=2, classes=["dark", "bright"])
    assert load_model(make_checkpoint(model)).classes == ["dark", "bright"]
    with pytest.raises(ValueError, match="class names"):
        build_model("PNC_with_classification", num_classes=3, classes=["a"])
    g = torch.Generator().manual_seed(0)
    y = torch.arange(32) % 2

    def frames():
        return (0.3 * torch.rand(32, 3, 56, 56, generator=g) + 0.2 + 0.4 * y[:, None, None, None]).clamp(0, 1)

    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = frames()
    for _ in range(40):
        loss = F.cross_entropy(model(x)["logits"], y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        assert (model(frames())["logits"].argmax(1) == y).float().mean() == 1.0
