"""Write the frames of a clip or of a whole dataset as JPEG files.

    python prepare_frames.py sample UCF_224x224x3_PNC_FrameCorr_input_imgs/   # the seed sender's folder (carphone)
    python prepare_frames.py clip.mp4 my_frames/ --max-frames 300
    python prepare_frames.py /data/UCF-101 /data/ucf101_frames --tree          # decode once, train fast

Clip mode (default): INPUT is anything ``sender_encode.py --input`` streams (a video file, a folder of
frames, "sample" = the embedded carphone clip); its frames, resized and center-cropped to ``--size``,
become ``OUT/00000.jpg``, ``OUT/00001.jpg``, ... — a folder ``sender_encode.py --input_dir`` streams.

``--tree``: INPUT is one or more data sources (``--data`` of the training scripts, data/sources.py); every
video's frames (short side ``--size``, not cropped) become ``OUT/<class>/<video>/<frame>.jpg``, or
``OUT/<video>/<frame>.jpg`` when the source has no labels: the frame-folder layout, which loads back with
the same classes and is decoded per frame instead of per video (UCF-101 ``.avi`` files decode whole).

OUT must be empty or new: nothing already there is overwritten. JPEG quality ``--quality`` (default 95).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

from data import DataError, load_videos, read_frames
from evaluation.baselines import encode_image

log = logging.getLogger("prepare_frames")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("input", nargs="+", help="a clip (clip mode) or data sources (--tree)")
    p.add_argument("out", help="output folder (created; must be empty if it exists)")
    p.add_argument("--tree", action="store_true", help="whole dataset as <class>/<video>/<frame>.jpg")
    p.add_argument("--size", type=int, default=224, help="short side (clip mode: also the square crop)")
    p.add_argument("--max-frames", type=int, default=None, help="at most this many frames (per video with --tree)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality 1-95")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic source (--tree)")
    return p.parse_args(argv)


def save(frame, path: Path, quality: int) -> None:
    """uint8 (3,H,W) tensor -> JPEG file (the JPEG baseline's encoder)."""
    path.write_bytes(encode_image(frame, "jpeg", quality))


def write_clip(spec: str, out: Path, size: int, max_frames: int | None, quality: int) -> int:
    n = 0
    for n, frame in enumerate(tqdm(read_frames(spec, size), desc=spec, unit="frame"), start=1):
        save(frame, out / f"{n - 1:05d}.jpg", quality)
        if max_frames is not None and n >= max_frames:
            break
    return n


def write_tree(specs: list[str], out: Path, size: int, max_frames: int | None, quality: int, seed: int) -> int:
    videos = load_videos(specs, size=size, seed=seed, max_frames=max_frames)
    n = 0
    for v in tqdm(videos.videos, desc="videos", unit="video"):
        name = v.name.replace("/", "_")
        if videos.classes and v.label >= 0:
            cls = videos.classes[v.label]
            name = name[len(cls) + 1:] if name.startswith(cls + "_") else name  # "Class/video" -> video
            folder = out / cls / name
        else:
            folder = out / name
        folder.mkdir(parents=True, exist_ok=False)
        for t, frame in enumerate(v.frames()):
            save(frame, folder / f"{t:05d}.jpg", quality)
            n += 1
    return n


def main(argv=None):
    args = parse_args(argv if argv is not None else sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SystemExit(f"error: {out} exists and is not an empty folder; nothing was written")
    if not args.tree and len(args.input) > 1:
        raise SystemExit("error: clip mode takes one input; use --tree for several data sources")
    if not 1 <= args.quality <= 95 or args.size < 1 or (args.max_frames is not None and args.max_frames < 1):
        raise SystemExit("error: --quality must be 1-95, --size and --max-frames at least 1")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        if args.tree:
            n = write_tree(args.input, out, args.size, args.max_frames, args.quality, args.seed)
        else:
            n = write_clip(args.input[0], out, args.size, args.max_frames, args.quality)
    except DataError as e:
        if created and not any(out.iterdir()):
            os.rmdir(out)
        raise SystemExit(f"error: {e}") from None
    print(f"wrote {n} frames to {out}")
    return n


if __name__ == "__main__":
    main(sys.argv[1:])
