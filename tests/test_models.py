"""Shape contracts, the registry, and checkpoint round-trips for every frame model."""

import pytest
import torch

from models import MODELS, FrameCodec, build_model, load_model
from utils.checkpoint import CheckpointError, make_checkpoint, save_checkpoint

FRAME_MODELS = sorted(n for n, c in MODELS.items() if issubclass(c, FrameCodec))
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
