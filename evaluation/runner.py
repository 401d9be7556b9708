"""The evaluation behind evaluate.py: our codec over the exact wire path and the classic baselines, on
the same frames, under the same per-packet-slot loss draws.

Frames (:func:`load_sequence`): the TEST split of the data (data.split_videos with the seed; the
"sample" source's fixed split gives carphone), or every frame when the data is a single video; or the
split evaluate.py's ``--split`` names (``held-out`` = val + test: what a training run on the same data
and seed never saw, e.g. the photos held out of LRAE_RD's training; checkpoints/MANIFEST.md). Test
videos are center-cropped to ``size`` x ``size`` and played back to back as ONE stream (a video change
is a scene cut for every method); ``max_frames`` caps the total, shared out evenly over the videos.
Per clip (:func:`load_clips`, evaluate.py --per-clip): every video of the data is its own stream (at most
``max_frames`` each), evaluated alone; :func:`mean_rows` averages the clips' rows, each clip weighing the
same (a clip's figures are already means over its frames).

Loss (:func:`loss_points`, :func:`make_draws`): ``--loss`` is a family swept over the rates (random,
ge/burst, tail) or one spec (random:0.3, wifi, grace:0.3,3, trace:FILE, ...; network/loss/models.py).
Per point one (N, ``DRAW_SLOTS``) mask, 1 = delivered, from network.loss.draws with the run's seed: row f is
network.loss.frame_slots, exactly what sender_encode.py --loss SPEC --seed S drops in frame f (the same
seed at every rate, so for ``random`` the lost slots at a lower rate are also lost at a higher one).
Every method sends frame f's packets in slots 0, 1, ... of row f: ours channel 0 first, JPEG/WebP/H.264
their data packets, then FEC parity. ``tail`` is a per-frame deadline counted in packet slots: with
K = our packets per frame, the rate r loses every slot from K - round(r·K) on (for ours: the last
round(r·K) channels, PNC's tail drop; for every method: nothing after that slot arrives in time).

Ours (:class:`OurCodec`): each frame is encoded once - encoder, quantiser, entropy coder, packetiser
(codec.packetize.encode_frame) - and for each draw its delivered packets are parsed and entropy-decoded
(decode_packets) and shown by playback.conceal.Player, the receiver's own path, frame by frame with
its state carried across frames. Policies: ``zero+repeat-last`` (row "ours": lost channels zero, a
frame of which nothing arrived repeats the last shown frame) and ``convlstm`` ("ours+convlstm": the
ConvLSTM fill, always decoded). A frame is *fresh* if at least one of its packets arrived. Bytes are
payload bytes (packet minus the 53-byte header), as for the baselines.

Metrics (:func:`score`): on the displayed 8-bit RGB frames against the originals - mean per-frame PSNR,
SSIM and MS-SSIM (None when the frames are <= 160 px), SSIM in dB of the mean SSIM, mean payload bytes
and packets per frame sent, bpp, share of fresh frames, freeze time (a freeze = a run of non-fresh frames;
total and 95th-percentile freeze in ms at ``fps``), classifier accuracy on the displayed frames
(``accuracy``) and, for a model with ``classify``, its own head on the received latent (``head_accuracy``).
Timings (``encode_ms``, ``decode_ms``, per frame) are the only fields that differ between identical runs.

Rate-distortion curves (at 0 % loss and under loss) and BD-rates: evaluation/rd.py.
Plots and tables: evaluation/report.py.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from codec.packetize import decode_frame, encode_frame
from codec.wire import HEADER_SIZE, MAX_PACKETS_PER_FRAME, MODE_LEARNED
from data import DataError, FrameDataset, load_videos, split_videos
from evaluation import methods
from evaluation.baselines import PIL_FORMATS, decode_image, encode_image
from evaluation.methods import make_baseline
from evaluation.packets import as_frames
from models import has_head
from models.classifier import predict
from network.loss import DEFAULT_BURST_LEN, LOSS_MODELS, LossModel, TailLoss, draws, parse_loss
from playback.conceal import DEFAULT_POLICY, Player, parse_policy
from playback.inter import InterEncoder, InterPlayer
from utils import metrics

log = logging.getLogger(__name__)

DRAW_SLOTS = MAX_PACKETS_PER_FRAME  # 1024 slots of 1200 B: more than any method sends per frame
DEFAULT_FPS = 30.0  # frame rate of freeze times and of kbps budgets
OURS, OURS_TEMPORAL, ORIGINAL = methods.OURS.name, methods.OURS_TEMPORAL.name, methods.ORIGINAL.name


def parse_baselines(text: str) -> list[str]:
    """"jpeg,webp,h264,h264-fec" -> baseline names (registry groups expanded; exact names allowed; "none")."""
    groups, names = methods.groups(), [m.name for m in methods.of_kind("baseline")]
    out: list[str] = []
    for name in (t.strip() for t in text.split(",")):
        if not name or name == "none":
            continue
        if name not in groups and name not in names:
            raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(dict.fromkeys([*groups, *names]))} "
                             "or none")
        out += [m for m in groups.get(name, (name,)) if m not in out]
    return out


def parse_rates(text: str) -> list[float]:
    try:
        rates = [float(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ValueError(f"--rates must be comma-separated numbers, got {text!r}") from None
    if not rates or any(not 0.0 <= r < 1.0 for r in rates):
        raise ValueError(f"--rates must be loss rates in [0, 1), got {text!r}")
    return sorted(set(rates))


@dataclass
class Sequence:
    """The evaluated frames: uint8 (N,3,S,S), labels (N,) int64 (-1 unlabelled), class names, provenance."""

    frames: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    videos: list[str]
    split: str

    @property
    def labelled(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels >= 0).all())


EVAL_SPLITS = ("auto", "test", "val", "held-out", "all")


def pick_videos(specs: list[str], size: int, seed: int, split: str = "auto"):
    """(VideoSet, videos to evaluate, split label). ``split``: ``auto`` = the test split (every video when
    the data is a single video), ``test`` / ``val`` / ``held-out`` (val + test: everything a training run
    on the same ``specs`` and ``seed`` never trained on), or ``all``."""
    if split not in EVAL_SPLITS:
        raise ValueError(f"unknown split {split!r}; choose from {', '.join(EVAL_SPLITS)}")
    vs = load_videos(specs, size=size, seed=seed)
    if split == "all" or (split == "auto" and len(vs.videos) == 1):
        return vs, list(vs.videos), "all"
    parts = split_videos(vs, seed=seed)
    videos = parts["val"] + parts["test"] if split == "held-out" else parts["test" if split == "auto" else split]
    if not videos:
        raise DataError(f"the data's {'test' if split == 'auto' else split} split is empty ({len(vs.videos)} "
                        "videos); give at least 3 videos or a single video file")
    return vs, videos, "test" if split == "auto" else split


def load_sequence(specs: list[str], size: int, seed: int, max_frames: int | None, split: str = "auto") -> Sequence:
    """The videos of ``split`` (:func:`pick_videos`) back to back as one stream, see the module docstring."""
    vs, videos, split = pick_videos(specs, size, seed, split)
    left = max_frames if max_frames else sum(v.num_frames for v in videos)
    frames, labels = [], []
    for i, v in enumerate(videos):  # share the cap out evenly; what a short video leaves goes to the next
        take = min(v.num_frames, -(-left // (len(videos) - i)))
        ds = FrameDataset([v], crop=size)
        frames += [metrics.to_uint8(ds[t]["x"])[0] for t in range(take)]
        labels += [v.label] * take
        left -= take
    return Sequence(torch.stack(frames), torch.tensor(labels, dtype=torch.int64), list(vs.classes),
                    [v.name for v in videos], split)


def load_clips(specs: list[str], size: int, seed: int, max_frames: int | None, split: str = "all") -> list[Sequence]:
    """Every video of ``split`` (:func:`pick_videos`; by default all: the data is the test set) as its own
    Sequence, first ``max_frames``."""
    vs, videos, split = pick_videos(specs, size, seed, split)
    clips = []
    for v in videos:
        ds = FrameDataset([v], crop=size)
        take = min(v.num_frames, max_frames or v.num_frames)
        frames = torch.stack([metrics.to_uint8(ds[t]["x"])[0] for t in range(take)])
        clips.append(Sequence(frames, torch.full((take,), v.label, dtype=torch.int64), list(vs.classes), [v.name],
                              split))
    return clips


MEAN_FIELDS = ("bytes_per_frame", "packets_per_frame", "bpp", "psnr", "ssim", "ms_ssim", "ssim_db", "fresh_frames",
               "freeze_ms_total", "freeze_ms_p95", "accuracy", "head_accuracy", "encode_ms", "decode_ms")


def mean_rows(per_clip: list[list[dict]]) -> list[dict]:
    """Rows of several clips -> one row per method, loss condition, budget and RD point (every field but the
    figures, ``clip`` and ``params``), each figure the mean over the clips (None if a clip has none),
    ``clips`` = how many, ``params`` the first clip's or, where the clips' differ (a baseline matched to each
    clip's bytes), ``{"per_clip": [each clip's]}``. Rows keep the order of the first clip's."""
    groups: dict[str, list[dict]] = {}
    for rows in per_clip:
        for r in rows:
            key = repr({k: v for k, v in r.items() if k not in (*MEAN_FIELDS, "clip", "params")})
            groups.setdefault(key, []).append(r)
    out = []
    for rs in groups.values():
        row = {k: v for k, v in rs[0].items() if k != "clip"}
        if "params" in row and any(r["params"] != row["params"] for r in rs):
            row["params"] = {"per_clip": [r["params"] for r in rs]}
        for k in MEAN_FIELDS:
            if k in row:
                vals = [r[k] for r in rs]
                row[k] = None if any(v is None for v in vals) else float(np.mean(vals))
        row["clips"] = len(rs)
        out.append(row)
    return out


def make_draws(loss: LossModel, n_frames: int, seed: int, our_packets: int) -> torch.Tensor:
    """(n_frames, DRAW_SLOTS) delivery mask for every method under one loss model (module docstring):
    network.loss.draws, so row f is what sender_encode.py --loss with the same seed drops in frame f.
    ``tail`` rows are drawn over our packets and nothing after them arrives."""
    if isinstance(loss, TailLoss):
        head = draws(loss, n_frames, our_packets, seed)
        rest = torch.full((n_frames, DRAW_SLOTS - our_packets), 0.0 if loss.lost else 1.0)
        return torch.cat([head, rest], dim=1)
    return draws(loss, n_frames, DRAW_SLOTS, seed)


def loss_points(specs: str | list[str], rates: list[float], our_packets: int,
                burst_len: float = DEFAULT_BURST_LEN) -> list[tuple[str, float, LossModel]]:
    """evaluate.py's --loss (one spec or several) as [(label, rate, model)]: a bare family (random, ge, burst,
    tail) at each of ``rates`` (``tail`` at rate r: the last round(r·K) of our K packets miss the deadline);
    any other spec is one model at its own mean rate. ``label`` (the rows' ``loss_model``) is the spec."""
    points = []
    for spec in [specs] if isinstance(specs, str) else specs:
        if spec in LOSS_MODELS and spec != "none":
            if spec == "tail":
                points += [(spec, r, TailLoss(round(r * our_packets))) for r in rates]
            else:
                points += [(spec, r, LOSS_MODELS[spec].at_rate(r, burst_len)) for r in rates]
            continue
        loss = parse_loss(spec)
        points.append((spec, loss.lost / max(our_packets, 1) if isinstance(loss, TailLoss) else loss.rate, loss))
    return points


@dataclass
class Shown:
    """What one method displayed for one draw: frames uint8 (N,H,W,3), fresh (N,), bytes/packets sent (N,)."""

    method: str
    frames: np.ndarray
    fresh: np.ndarray
    nbytes: np.ndarray
    packets: np.ndarray
    encode_ms: float
    decode_ms: float
    params: dict = field(default_factory=dict)
    head_pred: torch.Tensor | None = None  # labels from the model's own classifier head
    masks: torch.Tensor | None = None  # ours: (N, C) channels received


def delivered(packets: list[bytes], draws: torch.Tensor, f: int) -> list[bytes]:
    """Frame f's packets that arrive under a draw: packet k in slot k of row f, delivered where it is 1."""
    if len(packets) > draws.shape[1]:
        raise ValueError(f"frame {f} has {len(packets)} packets, the draw {draws.shape[1]} slots")
    return [p for p, ok in zip(packets, draws[f, :len(packets)].tolist()) if ok > 0.5]


class OurCodec:
    """Our codec on a fixed sequence: encodes once (at ``quality``, a learned-mode codec's level), then plays
    any loss draw through the receiver's path (codec.packetize.decode_frame, then playback.conceal.Player
    with a concealment policy, decoding at the quality the packets carry)."""

    def __init__(self, model, codec, frames: torch.Tensor, temporal=None, quality: int = 0):
        self.model, self.codec, self.temporal, self.quality = model, codec, temporal, quality
        self.geometry = tuple(model.latent_shape(frames.shape[-2], frames.shape[-1]))
        if len(frames):  # warm-up, untimed: the first call pays for allocations and lazy set-up
            asm = decode_frame(encode_frame(model, frames[0], 0, codec, quality), codec, self.geometry)
            Player(model).show(*asm.result(), quality=asm.quality)
        t0 = time.perf_counter()
        self.packets = [encode_frame(model, x, f, codec, quality) for f, x in enumerate(frames)]
        self.encode_ms = 1000.0 * (time.perf_counter() - t0) / max(len(frames), 1)
        self.nbytes = np.array([sum(len(p) - HEADER_SIZE for p in ps) for ps in self.packets], np.int64)
        self.counts = np.array([len(ps) for ps in self.packets], np.int64)

    @property
    def mean_bytes(self) -> float:
        return float(self.nbytes.mean())

    @torch.no_grad()
    def run(self, draws: torch.Tensor, policy: str = DEFAULT_POLICY) -> Shown:
        """Deliver frame f's packets where draws[f, :k_f] is 1, then conceal and decode as the receiver."""
        player = Player(self.model, policy, self.temporal)
        classify = self.model.classify if player.policy == DEFAULT_POLICY and has_head(self.model) else None
        shown, fresh, masks, heads = [], [], [], []
        spent, decoded = 0.0, 0
        for f, packets in enumerate(self.packets):
            got = delivered(packets, draws, f)
            t0 = time.perf_counter()
            asm = decode_frame(got, self.codec, self.geometry)
            z, mask = asm.result()
            out = player.show(z, mask, quality=asm.quality)
            if out.decoded:
                spent += time.perf_counter() - t0
                decoded += 1
            if classify is not None:
                heads.append(classify(z, mask).argmax(1))
            shown.append(metrics.to_uint8(out.x_hat))
            fresh.append(bool(got))
            masks.append(mask[0])
        params = {"bits": self.codec.bits, "quant_mode": self.codec.mode, "fill": player.policy}
        return Shown(method_name(player.policy), as_frames(torch.cat(shown)), np.array(fresh), self.nbytes.copy(),
                     self.counts.copy(), self.encode_ms, 1000.0 * spent / decoded if decoded else math.nan,
                     {**params, "quality": self.quality} if self.codec.mode == MODE_LEARNED else params,
                     torch.cat(heads) if heads else None, torch.stack(masks))


class OurInterCodec:
    """Our I/P codec (an inter codec, models/pframe.py) on a fixed sequence, under a loss draw, over the stream's
    own path: playback.inter's InterEncoder codes each frame against its mirror of the receiver, the draw
    drops packets, the receiver's InterPlayer decodes what arrived, and the receiver's feedback (the mask
    of each frame) reaches the sender ``feedback_delay`` frames later (1: frame t's mask is known when frame
    t + 2 is coded). Coding depends on the feedback, so each draw is coded anew. ``gop``: an I-frame every
    ``gop`` frames (0: only the first). ``feedback=False``: the sender assumes everything arrives."""

    policy = "inter"

    def __init__(self, model, codec, frames: torch.Tensor, quality: int = 0, gop: int = 0, feedback: bool = True,
                 feedback_delay: int = 1, reference: str = "auto"):
        if feedback_delay < 0:
            raise ValueError(f"feedback delay must be >= 0 frames, got {feedback_delay}")
        self.model, self.codec, self.frames, self.quality = model, codec, frames, quality
        self.gop, self.feedback, self.delay, self.reference = gop, feedback, feedback_delay, reference
        self.geometry = tuple(model.latent_shape(frames.shape[-2], frames.shape[-1]))
        self.clean = self.run(torch.ones(len(frames), DRAW_SLOTS))  # nothing lost: bytes, packets, RD point
        self.nbytes, self.counts, self.encode_ms = self.clean.nbytes, self.clean.packets, self.clean.encode_ms

    @property
    def mean_bytes(self) -> float:
        return float(self.nbytes.mean())

    @torch.no_grad()
    def run(self, draws: torch.Tensor, policy: str = "inter") -> Shown:
        """Code, deliver (frame f's packets where draws[f, :k_f] is 1), decode, feed back, frame by frame."""
        encoder = InterEncoder(self.model, self.codec, self.geometry, gop=self.gop, feedback=self.feedback,
                               reference=self.reference)
        player = InterPlayer(self.model)
        shown, fresh, nbytes, counts, masks, types, pending = [], [], [], [], [], [], []
        enc_s = dec_s = 0.0
        for f, x in enumerate(self.frames):
            while pending and pending[0][0] <= f:
                encoder.ack(*pending.pop(0)[1:])
            t0 = time.perf_counter()
            packets, inter = encoder.encode(x[None].float() / 255.0, f, self.quality)
            enc_s += time.perf_counter() - t0
            got = delivered(packets, draws, f)
            t0 = time.perf_counter()
            asm = decode_frame(got, self.codec, self.geometry)
            z, mask = asm.result()
            out = player.show(z, mask, asm.inter, asm.quality, index=f, ref_age=asm.ref_age)
            dec_s += time.perf_counter() - t0
            if self.feedback:
                pending.append((f + 1 + self.delay, f, mask))
            shown.append(metrics.to_uint8(out.x_hat))
            fresh.append(bool(got))
            nbytes.append(sum(len(p) - HEADER_SIZE for p in packets))
            counts.append(len(packets))
            masks.append(mask[0])
            types.append(inter)
        n = max(len(self.frames), 1)
        params = {"quality": self.quality, "fill": self.policy, "gop": self.gop,
                  "feedback_delay": self.delay if self.feedback else None, "p_frames": int(sum(types)),
                  "reference": self.reference if self.feedback else "latest"}
        return Shown(method_name(self.policy), as_frames(torch.cat(shown)), np.array(fresh), np.array(nbytes),
                     np.array(counts), 1000.0 * enc_s / n, 1000.0 * dec_s / n, params, None, torch.stack(masks))


def method_name(policy: str) -> str:
    """Our row's method name for a concealment policy: the registry entry with that fill (ours = zero fill
    with repeat-last, ours+convlstm), else ours+POLICY."""
    return {m.fill: m.name for m in methods.of_kind("ours")}.get(policy, f"{OURS}+{policy}")


def from_baseline(result) -> Shown:
    """A evaluation.baselines.BaselineResult as a Shown."""
    return Shown(result.method, result.frames, np.asarray(result.fresh, bool), np.asarray(result.nbytes),
                 np.asarray(result.packets), float(result.encode_ms), float(result.decode_ms), dict(result.params))


def _mean(values: torch.Tensor) -> float | None:
    v = float(values.mean()) if len(values) else math.nan
    return None if math.isnan(v) else v


def quality(shown_frames: np.ndarray, reference: np.ndarray, chunk: int = 16) -> dict:
    """Mean per-frame PSNR / SSIM / MS-SSIM (None if undefined) and SSIM dB of the mean SSIM."""
    p, s, m = [], [], []
    for i in range(0, len(reference), chunk):
        a, b = shown_frames[i:i + chunk], reference[i:i + chunk]
        p.append(metrics.psnr(a, b))
        s.append(metrics.ssim(a, b))
        m.append(metrics.ms_ssim(a, b))
    ssim = _mean(torch.cat(s))
    return {"psnr": _mean(torch.cat(p)), "ssim": ssim, "ms_ssim": _mean(torch.cat(m)),
            "ssim_db": None if ssim is None else float(metrics.ssim_db(ssim))}


def classifier_targets(seq: Sequence, classifier) -> torch.Tensor:
    """The sequence's labels as the classifier's class indices (mapped by class name when it has names)."""
    if not seq.labelled:
        raise DataError("--classifier needs labelled data (e.g. --data synthetic); these videos have no labels")
    names = getattr(classifier, "classes", None)
    if not names:
        if getattr(classifier, "num_classes", len(seq.classes)) != len(seq.classes):
            raise DataError(f"the classifier has {classifier.num_classes} classes, the data {len(seq.classes)}")
        return seq.labels.clone()
    missing = sorted({seq.classes[i] for i in seq.labels.tolist()} - set(names))
    if missing:
        raise DataError(f"the classifier does not know the classes {', '.join(missing)}")
    return torch.tensor([names.index(seq.classes[i]) for i in seq.labels.tolist()], dtype=torch.int64)


def loss_fields(mode: str, rate: float, loss: LossModel) -> dict:
    """The loss columns of a results row: loss_model (evaluate's --loss), loss_rate, burst_len (None unless
    the loss model has bursts)."""
    return {"loss_model": mode, "loss_rate": rate, "burst_len": getattr(loss, "burst_len", None)}


def score(shown: Shown, reference: np.ndarray, loss: dict, classifier=None, targets: torch.Tensor | None = None,
          head_targets: torch.Tensor | None = None, fps: float = DEFAULT_FPS) -> dict:
    """One results.json row (see evaluate.py) for what a method displayed under one draw; ``loss`` holds the
    row's loss columns (:func:`loss_fields`), ``fps`` the frame rate freeze times are measured at."""
    h, w = reference.shape[1:3]
    row = {"method": shown.method, **loss,
           "bytes_per_frame": float(shown.nbytes.mean()), "packets_per_frame": float(shown.packets.mean()),
           "bpp": float(metrics.bpp(float(shown.nbytes.mean()), h, w)),
           **quality(shown.frames, reference), "fresh_frames": float(shown.fresh.mean()),
           **metrics.freeze_ms(shown.fresh, fps), "accuracy": None, "head_accuracy": None}
    if classifier is not None and targets is not None:
        pred = predict(classifier, torch.from_numpy(shown.frames).permute(0, 3, 1, 2))
        row["accuracy"] = float((pred == targets).float().mean())
    if shown.head_pred is not None and head_targets is not None:
        row["head_accuracy"] = float((shown.head_pred.cpu() == head_targets).float().mean())
    row.update(encode_ms=shown.encode_ms, decode_ms=shown.decode_ms, params=shown.params)
    return row


def original_row(seq: Sequence, loss: dict, classifier, targets) -> dict:
    """The "original" row: the classifier on the uncompressed frames (raw RGB bytes, no quality metrics)."""
    _, _, h, w = seq.frames.shape
    pred = predict(classifier, seq.frames)
    return {"method": ORIGINAL, **loss, "bytes_per_frame": float(3 * h * w),
            "packets_per_frame": None, "bpp": 24.0, "psnr": None, "ssim": None, "ms_ssim": None,
            "ssim_db": None, "fresh_frames": 1.0, "freeze_ms_total": 0.0, "freeze_ms_p95": 0.0,
            "accuracy": float((pred == targets).float().mean()),
            "head_accuracy": None, "encode_ms": None, "decode_ms": None, "params": {}}


def our_fills(temporal) -> list[str]:
    """The fills of the registry's entries for our frame codec that can run: the ConvLSTM fill needs
    ``temporal``. (The I/P stream's entry, "inter", is an inter codec's: :func:`our_runs`.)"""
    return [m.fill for m in methods.of_kind("ours") if m.fill != OurInterCodec.policy
            and (parse_policy(m.fill)[0] != "convlstm" or temporal is not None)]


@dataclass(frozen=True)
class InterOptions:
    """How an inter codec streams in the evaluation (evaluate.py --gop, --feedback-delay, --no-feedback)."""

    gop: int = 0
    feedback: bool = True
    feedback_delay: int = 1
    reference: str = "auto"  # what P-frames are coded against (playback.inter.InterEncoder)


def is_inter(model) -> bool:
    return getattr(model, "kind", None) == "inter"


def our_runs(model, codec, frames: torch.Tensor, temporal=None, quality: int = 0,
             inter: InterOptions | None = None) -> dict[str, OurCodec | OurInterCodec]:
    """Policy -> what plays it (``run(draws, policy)``): our frame codec's fills (:func:`our_fills`), and for an
    inter codec (kind "inter", models/pframe.py) its intra codec's fills plus its I/P stream ("inter")."""
    ours = OurCodec(model.intra if is_inter(model) else model, codec, frames, temporal, quality)
    runs: dict[str, OurCodec | OurInterCodec] = {fill: ours for fill in our_fills(temporal)}
    if is_inter(model):
        opts = inter or InterOptions()
        runs[OurInterCodec.policy] = OurInterCodec(model, codec, frames, quality, opts.gop, opts.feedback,
                                                   opts.feedback_delay, opts.reference)
    return runs


def primary(runs: dict) -> OurCodec | OurInterCodec:
    """The run the baselines' byte budget and the tail deadlines follow: the I/P stream if there is one."""
    return runs.get(OurInterCodec.policy) or next(iter(runs.values()))


def evaluate_sequence(model, codec, temporal, seq: Sequence, *, mode: str | list[str], rates: list[float],
                      baselines: list[str], seed: int, burst_len: float = DEFAULT_BURST_LEN, quality: int = 0,
                      classifier=None, strip_rate=0.3, fps: float = DEFAULT_FPS, progress: bool = True,
                      inter: InterOptions | None = None) -> dict:
    """Every method at every loss rate on one sequence.
    Returns {"rows", "strip", "target_bytes", "our_packets", "losses", "rates"}.

    ``mode`` is evaluate.py's --loss, one spec or several: a family swept over ``rates`` (random, ge, burst,
    tail) or a full spec (random:0.3, wifi, trace:FILE, ...; its rate is the model's); the result's
    "losses" are the (label, rate, loss model) conditions evaluated (:func:`loss_points`), "rates" their
    rates. Ours runs with each concealment policy of the registry's entries (:func:`our_runs`; an inter codec
    also as an I/P stream with ``inter``'s GOP and feedback), coded at ``quality`` (a learned-mode codec's
    level, else 0). Per rate ONE draw (:func:`make_draws`) is made and handed to every method. The
    baselines' byte budget is our mean payload bytes per frame with nothing lost (the I/P stream's for an
    inter codec; their matched-bytes searches run in make_baseline).
    ``strip`` holds the displayed frames of the registry's strip methods at the rate closest to ``strip_rate``.
    """
    reference = as_frames(seq.frames)
    for c in PIL_FORMATS:  # warm Pillow's codecs up, so the first timed encode is not a cold one
        decode_image(encode_image(reference[0], c))
    runs = our_runs(model, codec, seq.frames, temporal, quality, inter)
    ours = primary(runs)
    our_packets = int(ours.counts.max())
    if ours.counts.min() != our_packets:
        log.warning("our frames use %d..%d packets; tail deadlines count from %d", ours.counts.min(), our_packets,
                    our_packets)
    target = ours.mean_bytes
    log.info("ours: %.0f B/frame payload in %d packets; matching the baselines to it", target, our_packets)
    runners = {m: make_baseline(m, reference, target_bytes=target) for m in tqdm(
        baselines, desc="encode baselines", disable=not progress, leave=False)}
    targets = classifier_targets(seq, classifier) if classifier is not None else None
    head_targets = classifier_targets(seq, model) if has_head(model) and seq.labelled else None
    losses = loss_points(mode, rates, our_packets, burst_len)
    rates = [r for _, r, _ in losses]
    strip_at = min(rates, key=lambda r: abs(r - strip_rate))
    fills = list(runs)
    rows, strip = [], {}
    bar = tqdm(total=len(rates) * (len(fills) + len(runners)), desc="loss conditions", disable=not progress)
    for label, rate, loss_model in losses:
        draws = make_draws(loss_model, len(reference), seed, our_packets)
        loss = loss_fields(label, rate, loss_model)
        if classifier is not None:
            rows.append(original_row(seq, loss, classifier, targets))
        for job in [*fills, *runners.values()]:  # every method gets this very draw
            shown = runs[job].run(draws, job) if isinstance(job, str) else from_baseline(job(draws))
            rows.append(score(shown, reference, loss, classifier, targets, head_targets, fps))
            if rate == strip_at and shown.method in methods.strip_methods():
                strip[shown.method] = shown.frames
            bar.set_postfix(rate=rate, method=shown.method)
            bar.update()
    bar.close()
    return {"rows": rows, "strip": {"rate": strip_at, "frames": strip, "reference": reference},
            "target_bytes": target, "our_packets": our_packets, "losses": losses, "rates": rates}
