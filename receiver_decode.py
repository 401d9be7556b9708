"""Receive LRAE-VC packets, close each frame at its deadline, fill what was lost, decode, score, save.

Start the receiver first and wait for "Listening on HOST:PORT" (the seed's command works as is)::

    python receiver_decode.py --model_path="PNC_final_w_random_drops.pth" --host=127.0.0.1 --port=8080
    python receiver_decode.py --model-path LRAE_VC_final_w_random_drops.pth --port 8080 --out-dir runs/rx \\
        --once --reference sample                       # PSNR/SSIM against the original frames
    python receiver_decode.py --model-path CKPT --transport udp --deadline-ms 30 --temporal conv_lstm_ae.pth
    python receiver_decode.py --model-path checkpoints/LRAE_VC.pth --temporal checkpoints/conv_lstm_ae.pth \\
        --compare-zero-fill --reference sample --once --port 0 --out-dir runs/rx   # what demo.py runs
    python receiver_decode.py --model-path LRAE_VC_P.pth --transport udp --reference sample   # an I/P stream

The models come from the checkpoints' own metadata (models.stack.load_stack, as evaluate.py loads
them). Each frame goes through playback.conceal.Player, the path evaluate.py plays too: with a
conv_lstm_ae (``--model-path`` or ``--temporal``) policy ``convlstm`` (its stateful ``step`` fills lost
channels), otherwise ``zero+repeat-last`` by default (lost channels stay zero, the decoder is told which; a frame
of which nothing arrived repeats the last shown frame, and is decoded only if there is no earlier one).
A frame of which nothing arrived is reported with ``"status": "lost"``. Bad packets (malformed,
corrupt, foreign, duplicated, late, wrong key, another model) are dropped, counted, and logged once
per kind.

``--policy`` picks another concealment (``copy``: a lost channel keeps its last received value, the
fill for a model without a ConvLSTM, e.g. LRAE_RD). ``--compare-zero-fill`` (with a policy other than
zero fill): every frame is also decoded the plain way, from the same received packets - lost channels
zero, a frame of which nothing arrived repeats the last zero-fill frame - while the main policy keeps
its state across frames as usual. The main policy stays the main variant (PNGs, ``psnr``/``ssim``,
latency); the extra decode runs in the writer thread, off the live path, timed as ``zero_fill_ms``.
metrics.jsonl adds ``concealment_zero_fill`` and, with ``--reference``, ``psnr_zero_fill``/
``ssim_zero_fill``; with ``--reference`` the receiver also writes side_by_side.mp4 (original |
zero-fill | the policy's fill, labelled).

I/P streams (an inter codec, kind "inter": models/latent_p.py, models/pframe.py; sender_encode.py): every
frame goes through playback.inter.InterPlayer in order - an I-frame through the intra codec, a P-frame against
the receiver's state (its last latent, or its last shown frame); a frame of which nothing arrived (or whose
type is unknown) repeats the last shown frame, on both sides. After each frame is shown the receiver sends a
feedback packet (codec/wire.py) with the channel masks of its last ``--feedback-frames`` frames: over TCP on
the connection's reverse direction, over UDP to the address the stream's packets come from; the sender's
mirror of the receiver follows it. ``--no-feedback`` sends none. metrics.jsonl adds ``frame_type`` (I, P, or
null when nothing arrived); the summary adds ``feedback_sent`` and ``last_frame_sha256`` (the last shown frame
as 8-bit RGB; the sender's ``mirror_sha256`` equals it when both ended in step). With ``--reference`` and
``--side-by-side`` it writes side_by_side.mp4 (original | the I/P stream). ``--policy``, ``--temporal`` and
``--compare-zero-fill`` do not apply.

Writes to ``--out-dir``: frame_NNNNN.png (and decoded.mp4 with ``--mp4``), metrics.jsonl (one line
per frame: frame, status, quality, bytes, packets, channels_received, latency_ms, stage times, psnr/ssim with
``--reference``, pred with a classifier) and summary.json, also printed at exit. Later streams of
the same run go to stream_NN/ subfolders. It serves stream after stream until Ctrl+C (``--once``:
exit after one stream). A run never destroys an earlier one: an ``--out-dir`` holding files is refused
unless ``--overwrite``; without ``--out-dir`` a later run writes receiver_output/run-NNN/. Limits,
timeouts, the replay cache (replay_cache.json) and the threat model: README, "Receiver limits and
threat model".
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import torch

from codec.wire import MAX_FEEDBACK_FRAMES, PacketError, parse, read_key
from data import read_frames
from models import has_head
from models.stack import load_stack
from network.feedback import FeedbackReports
from network.reassembly import Reassembler
from network.replay import ReplayCache
from network.transport import TRANSPORTS, open_receiver
from playback.conceal import DEFAULT_POLICY, Player, parse_policy
from playback.inter import InterPlayer
from playback.output import (
    DropLog,
    FrameWriter,
    RecordLog,
    ReferenceFrames,
    choose_out_dir,
    digest,
    side_by_side,
    summarize,
    to_hwc,
)
from utils.argtypes import int_in, non_negative, positive
from utils.checkpoint import CheckpointError

log = logging.getLogger("receiver")
DEFAULT_OUT = "receiver_output"
MAX_BURST = 256  # packets read back to back before deadlines are checked again
PANEL_NAMES = {"convlstm": "ConvLSTM fill", "copy": "copy fill"}  # side_by_side.mp4: original | zero-fill | this


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model-path", "--model_path", required=True,
                   help="checkpoint of the frame model (or of conv_lstm_ae)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int_in(0, 65535), default=8080, help="port to listen on (0: any free port)")
    p.add_argument("--transport", choices=TRANSPORTS, default="tcp", help="tcp (length-prefixed) or udp")
    p.add_argument("--deadline-ms", "--deadline_ms", type=positive(), default=30.0,
                   help="a frame closes this long after its capture time; what is missing then is lost")
    p.add_argument("--reorder-window", type=int_in(1, 1024), default=8, help="frames kept open at most")
    p.add_argument("--max-gap", type=int_in(0, 3000), default=30,
                   help="longest run of frames of which nothing arrived that is concealed frame by frame; "
                        "longer gaps are skipped and counted (frames_skipped)")
    p.add_argument("--idle-timeout", type=positive(), default=5.0,
                   help="a stream that sends nothing for this many seconds ends (TCP: its connection is "
                        "closed)")
    p.add_argument("--packet-timeout", type=positive(), default=2.0,
                   help="TCP: a packet must arrive whole within this many seconds of its first byte, and, while "
                        "another sender waits, a served connection must send a valid packet within this many seconds")
    p.add_argument("--max-waiting", type=int_in(0, 64), default=4,
                   help="TCP: senders that may wait for their turn (told so); more are refused")
    p.add_argument("--max-age", type=positive(), default=2.0,
                   help="with --key-file: packets captured longer ago than this (beyond the measured "
                        "clock skew) are refused as stale")
    p.add_argument("--max-size", type=int_in(8, 8192), default=512,
                   help="largest frame side accepted (bounds memory)")
    p.add_argument("--max-lag-ms", type=non_negative(), default=0.0,
                   help="catch up when decoding is too slow: a frame already this old is not decoded but "
                        "concealed by the last one (concealment 'skipped_late'); 0 = decode every frame")
    p.add_argument("--temporal", default=None, help="conv_lstm_ae checkpoint that fills lost channels")
    p.add_argument("--policy", default=None,
                   help="concealment policy (playback/conceal.py): zero, copy or convlstm, optionally +repeat-last; "
                        f"default: convlstm with a temporal model, else {DEFAULT_POLICY}")
    p.add_argument("--compare-zero-fill", "--compare_zero_fill", action="store_true",
                   help="with a temporal model: also decode every frame with zero fill and score both "
                        "(and write side_by_side.mp4 with --reference)")
    p.add_argument("--classifier", default=None, help="classifier checkpoint (forward(x) -> logits)")
    p.add_argument("--out-dir", "--out_dir", default=None,
                   help=f"where frames and metrics go; must not hold an earlier run unless --overwrite "
                        f"(default: {DEFAULT_OUT}/, or {DEFAULT_OUT}/run-NNN/ if that holds one)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the receiver's files of an earlier run in --out-dir")
    p.add_argument("--png", action=argparse.BooleanOptionalAction, default=True, help="write PNG frames")
    p.add_argument("--mp4", action=argparse.BooleanOptionalAction, default=False, help="write decoded.mp4")
    p.add_argument("--side-by-side", action="store_true",
                   help="with --reference: write side_by_side.mp4, original | shown (an I/P stream's; "
                        "--compare-zero-fill writes it with the zero-fill panel anyway)")
    p.add_argument("--mp4-fps", type=positive(), default=30.0, help="frame rate of the mp4")
    p.add_argument("--reference", default=None, help="original frames (video, folder, 'sample') for PSNR/SSIM")
    p.add_argument("--feedback", action=argparse.BooleanOptionalAction, default=True,
                   help="inter codec: send the sender feedback after each frame (which channels were decoded)")
    p.add_argument("--feedback-frames", type=int_in(1, MAX_FEEDBACK_FRAMES), default=8,
                   help="inter codec: frames reported in each feedback packet (the newest ones)")
    p.add_argument("--once", action="store_true", help="exit after one stream")
    p.add_argument("--key-file", default=None, help="shared HMAC-SHA256 key; unauthenticated packets are dropped")
    p.add_argument("--threads", type=int_in(1, 256), default=1, help="torch CPU threads")
    return p.parse_args(argv)


def load_models(args):
    """(frame model, wire codec, temporal model or None, classifier or None): models.stack.load_stack."""
    st = load_stack(args.model_path, args.temporal, args.classifier)
    if st.model.kind == "inter":
        if args.policy is not None or args.compare_zero_fill:
            raise ValueError(f"{args.model_path} holds an inter codec ({st.model.model_name}): its frames play "
                             "through its I/P path (playback/inter.py); --policy and --compare-zero-fill do not apply")
        args.policy = InterPlayer.policy
        return st.model, st.codec, st.temporal, st.classifier
    args.policy = args.policy or ("convlstm" if st.temporal is not None else DEFAULT_POLICY)
    Player(st.model, args.policy, st.temporal)  # a bad policy, or convlstm without a temporal model: one line
    if args.compare_zero_fill and parse_policy(args.policy)[0] == "zero":
        raise ValueError("--compare-zero-fill needs another policy than zero fill (--policy copy, or a temporal "
                         "model: --temporal conv_lstm_ae checkpoint)")
    return st.model, st.codec, st.temporal, st.classifier


class FrameSink:
    """Decodes handed-out frames in order and records them."""

    def __init__(self, args, model, codec, temporal, classifier):
        self.args, self.model, self.codec = args, model, codec
        self.temporal, self.classifier = temporal, classifier
        self.compare = args.compare_zero_fill
        self.inter = model.kind == "inter"  # an I/P stream: InterPlayer (module docstring)
        self.out = Path(args.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.metrics = open(self.out / "metrics.jsonl", "x", buffering=1)  # choose_out_dir cleared the way
        self.writer = FrameWriter(args.mp4_fps)
        self.records = RecordLog()
        self.streams = self.stream_frames = 0
        self.stream_id = None
        if self.inter:
            self.player, self.zero = InterPlayer(model), None
            self.panels = ("original", "I/P stream")
        else:
            self.player = Player(model, args.policy, temporal)  # the main variant, on the live path
            self.panels = ("original", "zero-fill", PANEL_NAMES.get(parse_policy(args.policy)[0], args.policy))
            self.zero = Player(model, DEFAULT_POLICY)  # writer thread only: --compare-zero-fill
        self.zero_stream = None

    def begin_stream(self, stream_id: int) -> None:
        self.writer.close_video()
        self.stream_id = stream_id
        self.player.reset()
        self.dir = self.out if self.streams == 0 else self.out / f"stream_{self.streams:02d}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.reference = ReferenceFrames(self.args.reference, read_frames)
        self.streams += 1
        self.stream_frames = 0

    @torch.no_grad()
    def handle(self, frame) -> torch.Tensor:
        """Show, record and write one frame; returns the mask (1,C) it was decoded with (the feedback)."""
        if frame.stream_id != self.stream_id:
            self.begin_stream(frame.stream_id)
        c = frame.geometry[0]
        self.stream_frames += 1
        t0 = time.perf_counter()
        if frame.assembly is not None:
            (z, mask), quality = frame.assembly.result(), frame.assembly.quality
        else:
            z, mask, quality = torch.zeros(1, *frame.geometry), torch.zeros(1, c), None
        received = int(mask.sum())
        status = "ok" if received == c else ("partial" if frame.assembly is not None else "lost")
        late = (self.args.max_lag_ms > 0 and frame.capture is not None
                and (time.time() - frame.capture) * 1e3 > self.args.max_lag_ms)
        inter = frame.assembly.inter if frame.assembly is not None else None
        if self.inter:
            ref_age = frame.assembly.ref_age if frame.assembly is not None else None
            shown = self.player.show(z, mask, inter, quality, late, frame.index, ref_age)
        else:
            shown = self.player.show(z, mask, late, quality)
        x_hat, fill_s, concealment = shown.x_hat, shown.fill_s, shown.concealment
        decode_s = time.perf_counter() - t0 - fill_s
        done = time.time()
        rec = {"stream": f"{frame.stream_id:08x}", "frame": frame.index, "status": status,
               "bytes": frame.bytes, "packets": len(frame.received), "packets_expected": frame.packet_count or None,
               "received_packets": sorted(frame.received), "channels_received": received, "channels": c,
               "concealment": concealment, "close_reason": frame.reason,
               "quality": quality if self.inter else self.player.quality,
               "latency_ms": None, "arrival_ms": None, "wait_ms": None,
               "entropy_ms": round(frame.entropy_s * 1e3, 3), "fill_ms": round(fill_s * 1e3, 3),
               "decode_ms": round(decode_s * 1e3, 3)}
        capture = frame.capture
        if capture is not None:
            rec["latency_ms"] = round((done - capture) * 1e3, 3)
            rec["arrival_ms"] = round((frame.last_arrival - capture) * 1e3, 3)
            rec["wait_ms"] = round((frame.closed_at - capture) * 1e3, 3)
            rec["capture_s"] = frame.capture_us / 1e6
        if self.inter:
            rec["frame_type"] = None if inter is None else ("P" if inter else "I")
            rec["ref_age"] = ref_age
        logits = None
        if self.classifier is not None:
            logits = self.classifier(x_hat)["logits"]
        elif has_head(self.model):
            logits = self.model.classify(shown.z, shown.mask)
        if logits is not None:
            prob = torch.softmax(logits.float(), dim=1)[0]
            rec["pred"], rec["pred_prob"] = int(prob.argmax()), round(float(prob.max()), 4)
            names = getattr(self.classifier if self.classifier is not None else self.model, "classes", None)
            if names and rec["pred"] < len(names):
                rec["pred_class"] = names[rec["pred"]]
        compare = (z, mask, late, quality) if self.compare else None  # decoded in the writer thread
        wanted = (self.compare or self.args.side_by_side) and self.args.reference
        sbs = self.dir / "side_by_side.mp4" if wanted else None
        self.writer.call(self._record, rec, x_hat, compare, self.reference, sbs)
        if self.args.png:
            self.writer.png(self.dir / f"frame_{frame.index:05d}.png", x_hat)
        if self.args.mp4:
            self.writer.video_frame(self.dir / "decoded.mp4", x_hat)
        return mask

    def _record(self, rec: dict, x_hat: torch.Tensor, compare: tuple | None, reference: ReferenceFrames,
                sbs: Path | None) -> None:
        """Writer thread: the zero-fill decode (--compare-zero-fill), scores against the reference, the
        side-by-side frame, then the metrics line."""
        rec.update(reference.score(rec["frame"], x_hat))
        if compare is not None:
            t1 = time.perf_counter()
            if self.zero_stream != rec["stream"]:
                self.zero.reset()
                self.zero_stream = rec["stream"]
            zero = self.zero.show(*compare)
            x_zero, rec["concealment_zero_fill"] = zero.x_hat, zero.concealment
            rec["zero_fill_ms"] = round((time.perf_counter() - t1) * 1e3, 3)
            rec.update({f"{k}_zero_fill": v for k, v in reference.score(rec["frame"], x_zero).items()})
        if sbs is not None:
            ref = reference.frame(rec["frame"], x_hat.shape[-1])
            ref = None if ref is None or ref.shape[-2:] != x_hat.shape[-2:] else to_hwc(ref)
            if compare is None:  # --side-by-side alone: original | shown
                panels, labels = [ref, to_hwc(x_hat)], [self.panels[0], self.panels[-1]]
            else:
                panels, labels = [ref, to_hwc(x_zero), to_hwc(x_hat)], list(self.panels)
            try:
                self.writer.write_video(sbs, side_by_side(panels, labels))
            except Exception as e:  # as for every other file: say what failed, keep receiving
                log.warning("cannot write %s: %s", sbs, e)
        self.metrics.write(json.dumps(rec) + "\n")
        self.records.append(rec)

    def close(self, drops: Counter, **extra) -> dict:
        self.writer.close()
        self.metrics.close()
        summary = summarize(self.records)
        if self.records.total > len(self.records):
            summary.update(frames=self.records.total, summary_over_last_frames=len(self.records))
        summary.update(streams=self.streams, dropped_packets=dict(drops), **extra, policy=self.player.policy)
        if self.inter:
            summary.update(concealment_of_lost_frames="repeat_last",
                           last_frame_sha256=digest(self.player.last) if self.player.last is not None else None)
        else:
            summary.update(concealment_of_lost_frames="repeat_last" if self.player.repeat_last
                           else self.player.fill.label)
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary


def one_line(summary: dict) -> str:
    """The figures of a summary that fit a log line."""
    parts = [f"{summary['bytes_per_frame'] or 0:.0f} B/frame",
             f"{summary['frames_lost']} lost",
             f"latency p50 {summary['latency_ms_p50'] or 0:.1f} ms"]
    if summary.get("mean_psnr") is not None:
        parts.append(f"PSNR {summary['mean_psnr']:.2f} dB")
    return ", ".join(parts)


@torch.no_grad()
def warm_up(model, size: int = 224) -> None:
    """One decode before the first frame, so its latency is not the allocator's and kernels' warm-up (an
    inter codec: an I- and a P-frame, through a throwaway InterPlayer)."""
    try:
        z = torch.zeros(1, *model.latent_shape(size, size))
        if model.kind == "inter":
            player, mask = InterPlayer(model), torch.ones(1, z.shape[1])
            player.show(z, mask, False, 0)
            player.show(z, mask, True, 0)
            return
        model.decode(z)
    except ValueError:  # a model that cannot take 224x224 frames: the first frame warms it up
        pass


def serve(args, model, codec, temporal, classifier) -> dict:
    key = read_key(args.key_file)
    out, replay_path = choose_out_dir(args.out_dir, args.overwrite, DEFAULT_OUT)
    args.out_dir = str(out)
    warm_up(model)
    reasm = Reassembler(codec, args.deadline_ms, args.reorder_window, max_side=args.max_size,
                        max_gap=args.max_gap, idle_timeout=args.idle_timeout, max_age=args.max_age if key else None,
                        replay=ReplayCache(replay_path))
    tcp = {"packet_timeout": args.packet_timeout, "max_waiting": args.max_waiting} if args.transport == "tcp" else {}
    rx = open_receiver(args.transport, args.host, args.port, **tcp)
    sink = FrameSink(args, model, codec, temporal, classifier)
    drops = DropLog(log)
    reports = FeedbackReports(args.feedback_frames, key) if sink.inter and args.feedback else None
    reply_to = None  # UDP: where the stream's valid packets come from (feedback goes there)
    host, port = rx.address[:2]
    last_datagram = None  # --once: give up on a sender whose packets are all refused
    last_valid = time.time()  # TCP: close a connection that sends nothing valid for --idle-timeout
    try:  # from "Listening on" on, Ctrl+C / SIGTERM end here with the summary
        print(f"Listening on {host}:{port}", flush=True)
        while True:
            wait = reasm.next_timeout()
            ev = rx.poll(0.5 if wait is None else min(wait, 0.5))
            active, started = reasm.stream is not None, reasm.started
            frames, burst, ended = [], 0, False
            while ev.kind == "packet":  # take everything already queued before checking deadlines
                now = last_datagram = time.time()
                dropped = drops.counts.total()
                got, end = handle_packet(ev.data, key, reasm, drops, now)
                if drops.counts.total() == dropped:
                    reply_to = ev.source
                frames, ended = frames + got, ended or end
                if reasm.stream is not None:
                    last_valid = now
                burst += 1
                if burst >= MAX_BURST or ((active or reasm.started > started) and reasm.stream is None):
                    break
                ev = rx.poll(0)
            now = time.time()
            if ev.kind == "opened":
                log.info("sender connected from %s", ev.info)
                drops.reset()
                last_valid = now
            first_packet_s = min(args.idle_timeout, args.packet_timeout)  # senders start right after "S"
            if (args.transport == "tcp" and reasm.stream is None and not active and rx.waiting
                    and now - last_valid > first_packet_s):  # a silent connection gives way to a waiting one
                ev = rx.disconnect(f"no valid packets for {first_packet_s:g} s") or ev
                last_valid = now
            if ev.kind == "closed":
                log.info("connection ended: %s", ev.info)
                frames += reasm.end_stream(now)
            frames += reasm.tick(time.time())
            for frame in frames:
                send_feedback(rx, reports, frame, hand_out(sink, frame, drops), reply_to)
            if ended:  # told only once its frames are handed out
                rx.acknowledge_end()
            if (active or reasm.started > started) and reasm.stream is None:
                if ev.kind != "closed" and rx.disconnect("its stream ended"):
                    log.info("connection ended: its stream ended")
                drops.reset()
                sink.writer.flush()
                this_stream = sink.records.tail(sink.stream_frames)
                log.info("stream ended after %d frames: %s%s", sink.stream_frames, one_line(summarize(this_stream)),
                         "" if args.once else "; waiting for the next stream (Ctrl+C: summary of all, exit)")
                if args.once:
                    break
            elif args.once and reasm.stream is None and not rx.waiting and (
                    ev.kind == "closed" or (last_datagram and now - last_datagram > args.idle_timeout)):
                log.warning("the sender went away without a valid stream (%s)",
                            ", ".join(f"{k}: {v}" for k, v in drops.counts.items()) or "no packets")
                break
    except KeyboardInterrupt:
        log.info("interrupted: closing")
    finally:
        for frame in reasm.end_stream():
            send_feedback(rx, reports, frame, hand_out(sink, frame, drops), reply_to)
        reasm.replay.save()
        rx.close()
        extra = {"feedback_sent": reports.sent if reports is not None else 0} if sink.inter else {}
        summary = sink.close(drops.counts, frames_skipped=reasm.skipped, **extra)
    return summary


def send_feedback(rx, reports: FeedbackReports | None, frame, mask, reply_to) -> None:
    """After frame ``frame`` was shown with ``mask`` (None: it failed): the feedback of the last frames."""
    if reports is not None and mask is not None:
        rx.send_feedback(reports.add(frame.stream_id, frame.index, mask), reply_to)


def handle_packet(data: bytes, key: bytes | None, reasm: Reassembler, drops: DropLog, now: float):
    """One received packet -> (frames it hands out, whether it ended the stream). Never raises: a bad
    packet is dropped and counted, and so is one that trips an unexpected error (traceback logged once)."""
    try:
        packet = parse(data, key)
        return reasm.push(packet, now), packet.header.end
    except PacketError as e:
        drops.note(e)
    except Exception as e:  # noqa: BLE001 - the receiver outlives any one packet
        if "internal" not in drops.counts:
            log.exception("packet handling failed")
        drops.note(PacketError("internal", f"{type(e).__name__}: {e}"))
    return [], False


def hand_out(sink: FrameSink, frame, drops: DropLog) -> torch.Tensor | None:
    """Decode and record one closed frame: the mask it was decoded with, or None if an unexpected error
    cost that frame (not the receiver)."""
    try:
        return sink.handle(frame)
    except Exception as e:  # noqa: BLE001
        if "frame_error" not in drops.counts:
            log.exception("frame %d could not be handled", frame.index)
        drops.counts["frame_error"] += 1
        log.debug("frame %d: %s", frame.index, e)
    return None


def stop_on_signals() -> None:
    """Ctrl+C (SIGINT) and SIGTERM both end the receiver cleanly: the summary is printed and summary.json
    written. SIGINT is re-armed because a non-interactive shell starts background jobs with it ignored."""
    if threading.current_thread() is not threading.main_thread():
        return  # signal handlers can only be set there (e.g. main() called from a test thread)

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, args.threads))
    stop_on_signals()
    try:
        models = load_models(args)
        summary = serve(args, *models)
    except (CheckpointError, ValueError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
