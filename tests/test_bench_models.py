"""benchmarks/bench_models.py: timing columns, including the entropy decode of a checkpoint's packets."""

from benchmarks import bench_models


def test_checkpoint_gets_an_entropy_decode_column(capsys):
    report = bench_models.main(["--checkpoint", "checkpoints/LRAE_VC.pth", "--precision", "fp32", "--iters", "1",
                                "--warmup", "0", "--threads", "1", "--size", "64"])
    (row,) = report["results"]
    assert row["model"] == "LRAE_VC" and row["entropy_decode_ms"]["median"] > 0
    assert row["packets"] == 16 and row["payload_bytes"] > 16 * 53
    assert "entropy dec" in capsys.readouterr().out


def test_built_models_have_no_entropy_column(capsys):
    report = bench_models.main(["--models", "LRAE_VC", "--precision", "fp32", "--iters", "1", "--warmup", "0",
                                "--threads", "1", "--size", "64"])
    assert "entropy_decode_ms" not in report["results"][0]
    assert "entropy dec" not in capsys.readouterr().out


def test_inter_codec_times_a_p_frame_and_its_packets(tmp_path):
    import torch

    from models import build_model
    from models.rd_tables import learned_codec
    from utils.checkpoint import make_checkpoint, save_checkpoint

    torch.manual_seed(0)
    model = build_model("LRAE_VC_P", intra_kwargs={"latent_channels": 8, "width": 16, "blocks": 1, "up_width": 8,
                                                   "levels": 2})
    path = save_checkpoint(tmp_path / "p.pth", make_checkpoint(model, extra={
        "codec": learned_codec(model.intra), "p_codec": learned_codec(model)}))
    report = bench_models.main(["--checkpoint", str(path), "--precision", "fp32", "bf16", "--iters", "1",
                                "--warmup", "0", "--threads", "1", "--size", "64"])
    rows = {r["precision"]: r for r in report["results"]}
    assert rows["fp32"]["model"] == "LRAE_VC_P" and rows["fp32"]["packets"] == 8
    assert rows["fp32"]["entropy_decode_ms"]["median"] > 0 and rows["bf16"]["decode_ms"]["median"] > 0
