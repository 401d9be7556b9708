"""The simple classifier: SimpleCNN's contract, a 2-step classifier_train.py run, evaluate.py --classifier.
(That the synthetic frames carry a single-frame motion cue is checked without training in tests/test_data.py.)"""

import json

import pytest
import torch

import classifier_train
import evaluate
from models import build_model, kind_of, load_model
from models.classifier import predict
from utils.checkpoint import make_checkpoint, save_checkpoint

TINY = ["--data", "synthetic:5,3", "--size", "64", "--batch-size", "4", "--model-args", '{"width": 8}']


def test_simple_cnn_shapes_any_input_size():
    torch.manual_seed(0)
    model = build_model("SimpleCNN", num_classes=3, width=4, input_size=32, classes=["a", "b", "c"]).eval()
    for side in (32, 56, 224):
        assert model(torch.rand(2, 3, side, side))["logits"].shape == (2, 3)
    x = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8)
    assert torch.equal(predict(model, x, batch_size=2), predict(model, x.float() / 255.0))
    with pytest.raises(ValueError):
        build_model("SimpleCNN", num_classes=3, classes=["a", "b"])


def test_checkpoint_round_trip_keeps_class_names(tmp_path):
    model = build_model("SimpleCNN", num_classes=2, width=4, classes=["x", "y"])
    loaded = load_model(save_checkpoint(tmp_path / "c.pth", make_checkpoint(model)))
    assert loaded.classes == ["x", "y"] and kind_of(loaded) == "classifier"
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cls") / "run"
    classifier_train.main(["--out-dir", str(out), *TINY, "--max-steps", "2"])
    return out


def test_two_step_run_writes_the_run_folder(trained):
    for name in ("args.json", "split.json", "metrics.jsonl", "last.pth", "SimpleCNN_final.pth",
                 "best.pth", "test.json"):
        assert (trained / name).is_file(), name
    ckpt = torch.load(trained / "SimpleCNN_final.pth", weights_only=True)
    assert ckpt["model"] == "SimpleCNN" and ckpt["model_kwargs"]["num_classes"] == 8
    split = json.loads((trained / "split.json").read_text())
    assert not set(split["train"]) & (set(split["val"]) | set(split["test"]))  # split by video
    assert sorted(ckpt["extra"]["train_videos"]) == sorted(split["train"])
    assert json.loads((trained / "args.json").read_text())["colour_jitter"] == 0.4
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert any("train_loss" in r for r in records) and any("val_acc" in r for r in records)
    assert 0.0 <= json.loads((trained / "test.json").read_text())["test_acc"] <= 1.0


def test_resume_continues_the_run(trained, tmp_path):
    before = torch.load(trained / "last.pth", weights_only=True)["step"]
    out = tmp_path / "again"
    classifier_train.main(["--out-dir", str(out), *TINY, "--max-steps", "1"])
    classifier_train.main(["--out-dir", str(out), *TINY, "--max-steps", "2", "--resume"])
    assert torch.load(out / "last.pth", weights_only=True)["step"] == before


def test_refuses_unlabelled_data(tmp_path):
    with pytest.raises(SystemExit, match="unlabelled"):
        classifier_train.main(["--out-dir", str(tmp_path / "x"), "--data", "sample", "--size", "32",
                               "--max-steps", "1"])


def test_evaluate_reports_accuracy_beside_the_originals(trained, tmp_path):
    torch.manual_seed(0)
    codec = save_checkpoint(tmp_path / "lrae.pth", make_checkpoint(build_model("LRAE_VC", width=16, up_width=8)))
    out = evaluate.main(["--model_path", str(codec), "--data", "synthetic:5,3", "--size", "64", "--max-frames", "8",
                         "--rates", "0,0.5", "--baselines", "jpeg,h264", "--rd-bits", "none",
                         "--classifier", str(trained / "SimpleCNN_final.pth"), "--out", str(tmp_path / "eval")])
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["classifier_overlap_videos"] == 0  # same data and seed: the test split was held out
    rows = res["results"]
    originals = [r for r in rows if r["method"] == "original"]
    assert [r["loss_rate"] for r in originals] == [0.0, 0.5]
    assert len({r["accuracy"] for r in originals}) == 1
    assert all(r["accuracy"] is not None for r in rows)
    assert {r["method"] for r in rows} == {"original", "ours", "ours+copy", "jpeg", "jpeg-best", "h264"}
