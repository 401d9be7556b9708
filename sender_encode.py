"""Encode frames, quantise and entropy code the latent, and stream it as packets (channel 0 first).

Start the receiver first (receiver_decode.py); the seed's command works as is::

    python sender_encode.py --input_dir="UCF_224x224x3_PNC_FrameCorr_input_imgs/" \\
        --model_path="PNC_final_w_random_drops.pth" --host=127.0.0.1 --port=8080
    python sender_encode.py --input clip.mp4 --model-path LRAE_VC_final_w_random_drops.pth --port 8080 \\
        --loss random:0.3 --seed 1                     # emulate 30 % packet loss (reproducible)
    python sender_encode.py --model-path CKPT --transport udp --fps 30 --deadline-ms 30 --key-file key.txt
    python sender_encode.py --model-path LRAE_RD.pth --kbps 300 --fps 30   # a model with quality levels
    python sender_encode.py --model-path LRAE_RD.pth --quality 2           # one fixed level
    python sender_encode.py --model-path LRAE_VC_P.pth --kbps 300 --gop 60 # an I/P stream (inter codec)

Input: ``--input`` (video file, frame folder or "sample", the embedded clip; the default) or the
seed's ``--input_dir``; frames are resized and center-cropped to ``--size``. The model class comes
from the checkpoint's own metadata. Frames are paced at ``--fps`` (0 = as fast as possible); each
frame's packets are sent in channel order until ``--deadline-ms`` after its capture, the rest are
dropped (PNC-style). ``--loss`` drops packet slots at the sender (none, random:P, ge:P,L, burst:P,L,
tail:K, grace:P,N, trace:FILE, presets wifi/cellular/lossy-wifi/congested; network/loss/models.py),
seeded by ``--seed``: frame i loses the slots of row i of evaluate.py's draws for the same spec and seed
(network.loss.frame_slots). The stream ends with an end-of-stream packet. Over TCP the sender retries
connecting for ``--connect-timeout`` s if the receiver is not up yet, waits (as long again) if the
receiver says it is busy with another sender, fails if it refuses, and reports ``end_confirmed``:
whether the receiver acknowledged the end-of-stream packet (null over UDP).
Prints a summary (frames, bytes/frame, achieved kbit/s, packets, stage times) at the end; ``--stats``
writes one JSON line per frame.

Quality levels (a model with learned tables, LRAE_RD; others have only level 0): ``--quality Q`` codes
every frame at level Q (default: the top level); ``--kbps N`` (needs ``--fps`` > 0) picks the level
frame by frame to hold N kbit/s of coded packets (headers included, before any emulated loss): a leaky
bucket whose fullness (bytes sent beyond the budget so far) is paid back over the next few frames, a PI
controller on the coded size with the levels as actuator (codec/rate.py). The first frame is coded at
every level once to learn the sizes of the levels.

I/P streams (an inter codec, kind "inter", models/latent_p.py, models/pframe.py): each frame is an
I-frame (the intra codec) or a P-frame coded against the sender's mirror of the receiver's state
(playback.inter.InterEncoder): its last one, or with ``--reference acked`` (``auto``, the default: while
the feedback reports 8 % of the channels lost or more) the newest one the feedback confirmed, whose age
the packets carry. The receiver reports the channels it decoded for each frame (feedback packets,
codec/wire.py); the sender reads them without blocking before each frame and hands them to the mirror, so
its reference is the receiver's again within one round trip. Bad or foreign feedback is counted and
ignored. ``--gop N``: an I-frame every N frames (0: only the first, and whenever the feedback has been
missing for too long to mirror the receiver); ``--no-feedback``: ignore feedback (the mirror assumes
every packet arrives; only I-frames bound the drift). With rate control the first frame's levels are
measured as I-frames. The summary adds ``p_frames``, ``feedback_received``, ``feedback_dropped`` (by
reason), ``feedback_latest_frame`` and ``mirror_sha256`` (the sender's final reference as 8-bit RGB; the
receiver's ``last_frame_sha256`` equals it when both ended in step). After the end packet the sender
applies the feedback that arrives before the receiver's ``E`` (TCP) or, over UDP, waits up to
``--feedback-wait`` s for the report on the last frame (only if feedback came during the stream).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import sys
import time

import torch

from codec.packetize import check_quality, encode_latent, packetize_latent
from codec.rate import RateController
from codec.wire import MAX_BITS, MAX_PACKETS_PER_FRAME, MAX_PAYLOAD, MIN_BITS, end_packet, read_key
from data import DataError, read_frames
from models import load_codec_model
from network.feedback import FeedbackReader
from network.loss import LossEmulator
from network.transport import TRANSPORTS, open_sender
from playback.inter import REFERENCES, InterEncoder
from playback.output import DropLog, digest, percentile
from utils.argtypes import int_in, non_negative, positive
from utils.checkpoint import CheckpointError

log = logging.getLogger("sender")
UDP_END_REPEATS = 3


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--input", "--input-dir", "--input_dir", dest="input", default="sample",
                   help="video file, folder of frames, or 'sample' (the embedded clip)")
    p.add_argument("--model-path", "--model_path", required=True, help="checkpoint of the frame model")
    p.add_argument("--host", default="127.0.0.1", help="receiver address")
    p.add_argument("--port", type=int_in(1, 65535), default=8080, help="receiver port")
    p.add_argument("--transport", choices=TRANSPORTS, default="tcp", help="tcp (length-prefixed) or udp")
    p.add_argument("--size", type=int_in(8, 8192), default=224, help="frame side after resize and center crop")
    p.add_argument("--fps", type=non_negative(), default=30.0, help="pacing (0 = as fast as possible)")
    p.add_argument("--deadline-ms", "--deadline_ms", type=non_negative(), default=30.0,
                   help="stop sending a frame's packets this long after its capture (0 = never)")
    p.add_argument("--loss", default="none",
                   help="emulated packet loss: none, random:P, ge:P,L, burst:P,L, tail:K, grace:P,N, trace:FILE[,K], "
                        "wifi, cellular, lossy-wifi, congested (network/loss/models.py)")
    p.add_argument("--seed", type=int_in(0), default=0, help="seed of the emulated loss")
    p.add_argument("--bits", type=int_in(MIN_BITS, MAX_BITS), default=None,
                   help="quantisation bits (default: the checkpoint's calibration, else 4)")
    p.add_argument("--channels-per-packet", type=int_in(1, MAX_PACKETS_PER_FRAME), default=1,
                   help="latent channels grouped per packet")
    p.add_argument("--max-payload", type=int_in(16, MAX_PAYLOAD), default=MAX_PAYLOAD,
                   help="payload bytes per packet at most")
    rate = p.add_mutually_exclusive_group()
    rate.add_argument("--quality", type=int_in(0, 255), default=None,
                      help="quality level of every frame (a model with levels; default: its top level)")
    rate.add_argument("--kbps", type=positive(), default=None,
                      help="target bitrate: pick the quality level per frame to hold it (needs --fps > 0)")
    p.add_argument("--gop", type=int_in(0), default=0,
                   help="inter codec: an I-frame every N frames (0: only the first and when the mirror must resync)")
    p.add_argument("--feedback", action=argparse.BooleanOptionalAction, default=True,
                   help="inter codec: apply the receiver's feedback to the mirror (--no-feedback: ignore it)")
    p.add_argument("--reference", choices=REFERENCES, default="auto",
                   help="inter codec: code P-frames against the mirror's last state (latest), the newest state the "
                        "feedback confirmed (acked), or acked while 8 %% of the channels are lost or more (auto)")
    p.add_argument("--feedback-wait", type=non_negative(), default=2.0,
                   help="inter codec over UDP: after the end, wait this long (s) for the last frame's feedback")
    p.add_argument("--max-frames", type=int_in(1), default=None, help="stop after this many frames")
    p.add_argument("--loop", action="store_true", help="restart the input when it ends (use with --max-frames)")
    p.add_argument("--key-file", default=None, help="shared HMAC-SHA256 key file")
    p.add_argument("--connect-timeout", type=non_negative(), default=30.0, help="TCP: keep retrying this long (s)")
    p.add_argument("--stream-id", type=int_in(0, 2**32 - 1), default=None, help="32-bit stream id (default: random)")
    p.add_argument("--stats", default=None, help="write per-frame sender timings here (JSON lines)")
    p.add_argument("--threads", type=int_in(1, 256), default=1, help="torch CPU threads")
    return p.parse_args(argv)


def looped(spec: str, size: int):
    while True:
        empty = True
        for frame in read_frames(spec, size=size):
            empty = False
            yield frame
        if empty:
            return


def stream(args) -> dict:
    model, codec, _ = load_codec_model(args.model_path, bits=args.bits, max_payload=args.max_payload,
                                       channels_per_packet=args.channels_per_packet)
    inter = model.kind == "inter"
    if args.gop and not inter:
        raise ValueError(f"--gop needs an inter codec (kind 'inter', e.g. LRAE_VC_P); {model.model_name} codes "
                         "every frame on its own")
    intra = model.intra if inter else model  # what codes I-frames (and the rate controller's first look)
    model.check_size(args.size, args.size)
    control = None
    if args.kbps is not None:
        if codec.levels < 2:
            raise ValueError(f"--kbps needs a model with quality levels; {model.model_name} has one (use --bits)")
        if args.fps <= 0:
            raise ValueError("--kbps needs a frame rate (--fps > 0)")
        control = RateController(args.kbps, args.fps, codec.levels)
    fixed = check_quality(codec.levels - 1 if args.quality is None else args.quality, codec)
    key = read_key(args.key_file)
    emulator = LossEmulator(args.loss, args.seed)
    frames = looped(args.input, args.size) if args.loop else read_frames(args.input, size=args.size)
    stream_id = args.stream_id if args.stream_id is not None else random.SystemRandom().getrandbits(32)
    geometry = tuple(model.latent_shape(args.size, args.size))
    interval = 1.0 / args.fps if args.fps > 0 else 0.0
    deadline = args.deadline_ms / 1000.0
    blank = torch.zeros(1, 3, args.size, args.size)
    if inter:  # warm-up (allocator, kernels, entropy tables) before the clock starts: an I- and a P-frame
        warm = InterEncoder(model, codec, geometry, feedback=False)
        for t in range(2):
            warm.encode(blank, t, fixed)
    else:
        with torch.no_grad():
            packetize_latent(encode_latent(model, blank, codec, fixed)[0], 0, codec, quality=fixed)
    encoder = (InterEncoder(model, codec, geometry, args.gop, args.feedback, reference=args.reference)
               if inter else None)
    reader = FeedbackReader(stream_id, geometry[0], key, DropLog(log).note) if inter else None
    frames = iter(frames)  # the first frame (and the rate ladder) is ready before the receiver's slot is taken
    first = next(frames, None)
    if first is not None:
        frames = itertools.chain([first], frames)
        if control is not None:  # what each level costs on frame 0
            x0 = first[None].float() / 255.0
            control.start([coded_size(intra, x0, codec, q) for q in range(codec.levels)])
    stats_file = open(args.stats, "w", buffering=1) if args.stats else None
    sender = open_sender(args.transport, args.host, args.port, args.connect_timeout)
    log.info("streaming %s to %s:%d over %s as stream %08x (%s, latent %dx%dx%d, %d bits, %s, %s)",
             args.input, args.host, args.port, args.transport, stream_id, model.model_name, *geometry,
             codec.bits, ("calibrated ranges", "per-frame ranges", "learned tables")[codec.mode],
             f"rate control to {args.kbps:g} kbit/s" if control is not None else f"quality {fixed}")
    if inter:
        log.info("I/P stream: %s, feedback %s", f"an I-frame every {args.gop} frames" if args.gop else
                 "I-frames only first and to resync", "on" if args.feedback else "ignored (--no-feedback)")

    def take_feedback(wait: float = 0.0) -> None:
        for index, mask in reader.take(sender.feedback(wait)):
            if args.feedback:
                encoder.ack(index, mask)

    rows, count, t0 = [], 0, None
    try:
        for i, frame in enumerate(frames):
            if args.max_frames is not None and i >= args.max_frames:
                break
            x = frame[None].float() / 255.0
            if t0 is None:
                t0 = time.monotonic()
            lag = time.monotonic() - (t0 + i * interval)
            if lag < 0:
                time.sleep(-lag)
            capture = time.time()
            if encoder is not None:
                take_feedback()
            t1 = time.perf_counter()
            quality = control.choose() if control is not None else fixed
            if encoder is not None:  # an I/P stream: coded against the mirror of the receiver
                z, p_frame, age = encoder.code(x, i, quality)
                t2 = time.perf_counter()
                packets = encoder.packetize(z, i, p_frame, quality, age, stream_id=stream_id,
                                            capture_us=int(capture * 1e6), key=key)
                t3 = time.perf_counter()
            else:
                with torch.no_grad():
                    z = encode_latent(model, x, codec, quality)[0]
                t2 = time.perf_counter()
                packets = packetize_latent(z, i, codec, quality=quality, stream_id=stream_id,
                                           capture_us=int(capture * 1e6), key=key)
                t3 = time.perf_counter()
            if control is not None:
                control.update(quality, sum(map(len, packets)))
            keep = emulator.pattern(i, len(packets))
            sent, sent_bytes, late = [], 0, 0
            for j, (packet, ok) in enumerate(zip(packets, keep)):
                if not ok:
                    continue
                if deadline > 0 and time.time() > capture + deadline:
                    late = sum(keep[j:])
                    break
                sender.send(packet)
                sent.append(j)
                sent_bytes += len(packet)
            t4 = time.perf_counter()
            row = {"frame": i, "quality": quality, "packets": len(packets), "sent": sent, "bytes_sent": sent_bytes,
                   "bytes_encoded": sum(map(len, packets)), "deadline_dropped": late,
                   "lag_ms": round(max(lag, 0.0) * 1e3, 3), "encode_ms": round((t2 - t1) * 1e3, 3),
                   "entropy_ms": round((t3 - t2) * 1e3, 3), "send_ms": round((t4 - t3) * 1e3, 3)}
            if inter:
                row.update(p_frame=p_frame, ref_age=age, feedback_latest_frame=reader.latest)
            rows.append(row)
            if stats_file:
                stats_file.write(json.dumps(row) + "\n")
            count = i + 1
        end = end_packet(stream_id, count, int(time.time() * 1e6), codec.fingerprint, geometry, codec.bits,
                         codec.mode, key)
        for _ in range(UDP_END_REPEATS if args.transport == "udp" else 1):
            sender.send(end)
        end_confirmed = sender.finish()
        if end_confirmed is False:
            log.warning("the receiver did not confirm the end of the stream within 30 s: it lost it, dropped "
                        "the connection or is far behind; its results may be incomplete")
        if encoder is not None:  # TCP: the feedback that came before the E; UDP: wait for the last frame's
            take_feedback()
            end_wait = time.monotonic() + args.feedback_wait
            while (args.transport == "udp" and reader.received and reader.latest < count - 1
                   and time.monotonic() < end_wait):
                take_feedback(end_wait - time.monotonic())
    finally:
        sender.close()
        if stats_file:
            stats_file.close()
    out = {**summarize(rows, stream_id, args.fps, args.kbps), "end_confirmed": end_confirmed}
    if encoder is not None:
        out.update(p_frames=sum(r["p_frame"] for r in rows), feedback_received=reader.received,
                   feedback_dropped=dict(reader.dropped), feedback_latest_frame=reader.latest,
                   mirror_sha256=digest(encoder.mirror.reference()))
    return out


@torch.no_grad()
def coded_size(model, x: torch.Tensor, codec, quality: int) -> int:
    """Bytes of packets of frame x at ``quality`` (the rate controller's first look at the levels)."""
    return sum(map(len, packetize_latent(encode_latent(model, x, codec, quality)[0], 0, codec, quality=quality)))


def summarize(rows: list[dict], stream_id: int, fps: float = 0.0, kbps: float | None = None) -> dict:
    """The printed summary; ``kbps_encoded``: coded packets in kbit/s at ``fps`` (None at fps 0)."""
    n = len(rows)
    encoded = sum(r["bytes_encoded"] for r in rows)
    out = {"stream": f"{stream_id:08x}", "frames": n,
           "packets_per_frame": sum(r["packets"] for r in rows) / n if n else None,
           "kbps_encoded": encoded * 8 / 1000 * fps / n if n and fps > 0 else None, "kbps_target": kbps,
           "quality_mean": sum(r["quality"] for r in rows) / n if n else None,
           "bytes_per_frame_encoded": encoded / n if n else None,
           "bytes_per_frame_sent": sum(r["bytes_sent"] for r in rows) / n if n else None,
           "packets_lost_emulated": sum(r["packets"] - len(r["sent"]) - r["deadline_dropped"] for r in rows),
           "packets_deadline_dropped": sum(r["deadline_dropped"] for r in rows),
           "lag_ms_max": max((r["lag_ms"] for r in rows), default=None)}
    for k in ("encode_ms", "entropy_ms", "send_ms"):
        vals = [r[k] for r in rows]
        out[k + "_p50"], out[k + "_p95"] = percentile(vals, 50), percentile(vals, 95)
    return {k: (round(v, 3) if isinstance(v, float) else v) for k, v in out.items()}


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, args.threads))
    try:
        summary = stream(args)
    except (DataError, CheckpointError, ValueError, ConnectionError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    except KeyboardInterrupt:
        raise SystemExit("interrupted") from None
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
