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
