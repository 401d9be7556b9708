"""playback.conceal: the policies, and the live receiver reporting what evaluate.py reports.

The end-to-end test streams 24 frames of the sample clip at 112x112 over loopback TCP with the shipped
checkpoints and ``--loss random:0.3 --seed 1``, and checks that the receiver lost exactly the slots of
evaluate's draw and shows the same mean PSNR for both of evaluate's concealment policies.
"""

import json
import socket
import threading
from pathlib import Path

import pytest
import torch

import receiver_decode
import sender_encode
from evaluation import runner as evaluation
from models import build_model
from models.stack import load_stack
from network.loss import parse_loss
from playback.conceal import DEFAULT_POLICY, FILLS, Player, fill_clip, parse_policy
from tests.test_stream import free_port, wait_bound

ROOT = Path(__file__).resolve().parents[1]
LRAE, LSTM = ROOT / "checkpoints" / "LRAE_VC.pth", ROOT / "checkpoints" / "conv_lstm_ae.pth"
SIZE, FRAMES, LOSS, SEED = 112, 24, "random:0.3", 1


def test_policy_names_compose():
    assert parse_policy("zero") == ("zero", False)
    assert parse_policy("repeat-last") == parse_policy(DEFAULT_POLICY) == ("zero", True)
    assert parse_policy("copy+repeat-last") == ("copy", True)
    assert set(FILLS) == {"zero", "copy", "convlstm"}
    for bad in ("", "zero+copy", "nearest", "zero+repeat-last+repeat-last"):
        with pytest.raises(ValueError, match="bad concealment policy"):
            parse_policy(bad)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("conv_lstm_ae", ae="LRAE_VC", ae_kwargs={"width": 16, "blocks": 1, "up_width": 8},
                       hidden=8).eval()


def test_player_policies(tiny):
    model = tiny.ae
    z = torch.randn(3, 1, 16, 2, 2)
    masks = torch.tensor([[1.0] * 16, [0.0] * 16, [1.0] * 8 + [0.0] * 8])
    with pytest.raises(ValueError, match="needs a temporal model"):
        Player(model, "convlstm", temporal=model)  # a frame model is not kind "temporal"
    labels = {}
    for policy in ("zero", DEFAULT_POLICY, "copy", "convlstm"):
        player = Player(model, policy, temporal=tiny)
        shown = [player.show(z[t] * masks[t, None, :, None, None], masks[t:t + 1]) for t in range(3)]
        labels[policy] = [s.concealment for s in shown]
        if policy == DEFAULT_POLICY:
            assert shown[1].x_hat is shown[0].x_hat and not shown[1].decoded  # nothing arrived: repeat
        if policy == "copy":  # frame 2's lost channels come from frame 0, the last time they arrived
            assert torch.equal(shown[2].z[0, 8:], z[0, 0, 8:]) and shown[2].mask.all()
        late = player.show(z[0], masks[:1], late=True)
        assert late.concealment == "skipped_late" and late.x_hat is shown[2].x_hat
    assert labels == {"zero": [None, "all_lost_decode", "zero_fill"],
                      DEFAULT_POLICY: [None, "repeat_last", "zero_fill"],
                      "copy": [None, "copy_fill", "copy_fill"], "convlstm": [None, "temporal", "temporal"]}


def test_clip_fills_match_the_live_steps(tiny):
    """evaluation/temporal.py fills whole clips (fill_clip); frame by frame the Player's fills agree."""
    z = torch.randn(1, 5, 16, 2, 2)
    mask = (torch.rand(1, 5, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    received = z * mask[..., None, None]
    for name in FILLS:
        clip_z, clip_mask = fill_clip(name, received, mask, temporal=tiny)
        player = Player(tiny.ae, name, temporal=tiny)
        for t in range(5):
            step = player.show(received[:, t], mask[:, t])
            assert torch.allclose(step.z, clip_z[:, t], atol=1e-6) and torch.equal(step.mask, clip_mask[:, t])


def stream(out: Path) -> tuple[dict, list[dict]]:
    port = free_port()
    rx_args = ["--model-path", str(LRAE), "--temporal", str(LSTM), "--compare-zero-fill", "--reference", "sample",
               "--port", str(port), "--out-dir", str(out), "--once", "--deadline-ms", "60000",
               "--reorder-window", "4", "--no-png"]
    result = {}
    th = threading.Thread(target=lambda: result.update(rx=receiver_decode.main(rx_args)), daemon=True)
    th.start()
    wait_bound(port, socket.SOCK_STREAM)
    sender_encode.main(["--input", "sample", "--model-path", str(LRAE), "--port", str(port), "--size", str(SIZE),
                        "--fps", "0", "--deadline-ms", "0", "--loss", LOSS, "--seed", str(SEED),
                        "--max-frames", str(FRAMES)])
    th.join(300)
    assert not th.is_alive(), "receiver did not finish"
    return result["rx"], [json.loads(s) for s in (out / "metrics.jsonl").read_text().splitlines()]


def test_receiver_reports_what_evaluate_reports(tmp_path):
    summary, lines = stream(tmp_path / "rx")
    st = load_stack(str(LRAE), str(LSTM))  # what the receiver loads: LRAE_VC's codec, the ConvLSTM over it
    model, codec, temporal = st.model, st.codec, st.temporal
    seq = evaluation.load_sequence(["sample"], SIZE, SEED, FRAMES)
    ours = evaluation.OurCodec(model, codec, seq.frames, temporal)
    draws = evaluation.make_draws(parse_loss(LOSS), FRAMES, SEED, int(ours.counts.max()))
    assert [r["frame"] for r in lines] == list(range(FRAMES))
    for r, row, k in zip(lines, draws, ours.counts):  # the same packet slots lost
        assert r["received_packets"] == [j for j in range(k) if row[j] > 0.5], f"frame {r['frame']}"
    reference = evaluation.as_frames(seq.frames)
    for policy, key in ((DEFAULT_POLICY, "mean_psnr_zero_fill"), ("convlstm", "mean_psnr")):
        psnr = evaluation.quality(ours.run(draws, policy).frames, reference)["psnr"]
        assert summary[key] == pytest.approx(psnr, abs=1e-3), policy  # the receiver rounds per frame to 1e-4
