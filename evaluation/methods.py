"""The registry of evaluated methods: what each row of results.json is, in one place.

One :class:`Method` entry per method says what it is and everything the runner and the report need:

- ``kind``: ``"ours"`` (our codec with a lost-channel ``fill``), ``"baseline"`` (a classic codec made by
  ``build``) or ``"reference"`` (the original frames, only with a classifier);
- ``group``: the ``--baselines`` name that selects it (``jpeg`` selects ``jpeg`` and ``jpeg-best``);
  ``None``: selectable by its exact name only;
- ``style``: matplotlib (colour, marker, line style) of its curves in every plot;
- ``fec``: packet-level FEC overhead fraction (:mod:`evaluation.h264`);
- ``sweep``: the settings of its rate-distortion curve at 0 % loss (``sweep_key``: quality or crf);
- ``strip``: shown in strip.png; ``even_size``: needs even frame sides (H.264's yuv420p);
- ours: ``rate_points(model, ckpt, spec) -> [(params, wire codec)]``, the operating points of our codec:
  one per quantiser bit depth of ``--rd-bits``, or for a model with learned tables (wire mode 2, LRAE_RD)
  one per quality level (``params = {"quality": q}``; the bits do not apply).

Adding a baseline is one ``register(Method(...))`` below with a ``build`` function
``(method, frames, target_bytes, setting, mtu, qualities, keyint, preset) -> run(draws) -> BaselineResult``
that encodes once at ``setting`` (quality / CRF), or matched to ``target_bytes`` (mean payload bytes per
frame, FEC parity included) when that is given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial

from codec.packetize import codec_from_checkpoint
from codec.wire import MODE_LEARNED
from evaluation.baselines import QUALITIES, ImageCodec
from evaluation.h264 import encode_h264, matched_h264
from evaluation.packets import MTU, BaselineResult
from playback.conceal import DEFAULT_POLICY

DEFAULT_QUALITY, DEFAULT_CRF = 50, 23.0
RD_QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)  # JPEG / WebP at 0 % loss
RD_CRFS = (18.0, 23.0, 28.0, 33.0, 38.0, 43.0, 51.0)  # H.264 at 0 % loss
FALLBACK_STYLE = ("0.5", ".", "-")

Run = Callable[..., BaselineResult]


@dataclass(frozen=True)
class Method:
    """One evaluated method (see the module docstring for the fields)."""

    name: str
    kind: str
    style: tuple[str, str, str]
    group: str | None = None
    build: Callable[..., Run] | None = None
    fec: float = 0.0
    sweep: tuple = ()
    sweep_key: str | None = None
    strip: bool = False
    even_size: bool = False
    fill: str | None = None
    rate_points: Callable[..., list] | None = None


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is registered twice")
    if method.kind not in ("ours", "baseline", "reference"):
        raise ValueError(f"unknown kind {method.kind!r} of {method.name!r}")
    METHODS[method.name] = method
    return method


def _image(codec: str, best: bool, m: Method, frames, target_bytes, setting, mtu, qualities, keyint, preset) -> Run:
    table = ImageCodec(frames, codec)
    if best:
        if target_bytes is None:
            raise ValueError(f"{m.name} needs a byte budget (target_bytes)")
        return lambda draws: table.run_best(draws, target_bytes, qualities, mtu)
    if target_bytes is not None:
        q = table.matched_quality(target_bytes, qualities)
    else:
        q = DEFAULT_QUALITY if setting is None else setting
    return lambda draws: table.run(draws, q, mtu, method=m.name)


def _h264(m: Method, frames, target_bytes, setting, mtu, qualities, keyint, preset) -> Run:
    if target_bytes is None:
        stream = encode_h264(frames, crf=DEFAULT_CRF if setting is None else setting, keyint=keyint, preset=preset)
    else:
        stream = matched_h264(frames, target_bytes, fec=m.fec, keyint=keyint, preset=preset, mtu=mtu)
    return lambda draws: stream.run(draws, fec=m.fec, mtu=mtu, method=m.name)


def _h264_intra(m: Method, frames, target_bytes, setting, mtu, qualities, keyint, preset) -> Run:
    """H.264 with every frame an IDR frame (keyint 1): the intra-only anchor for an image codec."""
    return _h264(m, frames, target_bytes, setting, mtu, qualities, 1, preset)


def our_rate_points(model, ckpt: dict | None, bits: Iterable[int]) -> list[tuple[dict, object]]:
    """Ours' rate points: each quality level of a learned-mode codec, else one wire codec per quantiser
    bit depth (calibration from ``ckpt``)."""
    bits = list(bits)
    codec = codec_from_checkpoint(model, ckpt)
    if codec.mode == MODE_LEARNED and bits:  # no bits ("--rd-bits none"): no rate points
        return [({"quality": q}, codec) for q in range(codec.levels)]
    return [({"bits": int(b)}, codec_from_checkpoint(model, ckpt, bits=int(b))) for b in bits]


OURS = register(Method("ours", "ours", ("C3", "o", "-"), strip=True, fill=DEFAULT_POLICY,
                     rate_points=our_rate_points))
OURS_TEMPORAL = register(Method("ours+convlstm", "ours", ("C1", "s", "-"), strip=True, fill="convlstm",
                                rate_points=our_rate_points))
OURS_COPY = register(Method("ours+copy", "ours", ("C4", "P", "-"), fill="copy", rate_points=our_rate_points))
OURS_P = register(Method("ours-p", "ours", ("C3", "*", "-"), strip=True, fill="inter", rate_points=our_rate_points))
ORIGINAL = register(Method("original", "reference", ("k", "", ":")))
register(Method("jpeg", "baseline", ("C0", "^", "--"), "jpeg", partial(_image, "jpeg", False), sweep=RD_QUALITIES,
                sweep_key="quality", strip=True))
register(Method("jpeg-best", "baseline", ("C9", "v", "--"), "jpeg", partial(_image, "jpeg", True)))
register(Method("webp", "baseline", ("C2", "D", "--"), "webp", partial(_image, "webp", False), sweep=RD_QUALITIES,
                sweep_key="quality"))
register(Method("webp-best", "baseline", ("C8", "d", "--"), None, partial(_image, "webp", True)))
register(Method("h264", "baseline", ("C4", "x", "-."), "h264", _h264, sweep=RD_CRFS, sweep_key="crf", strip=True,
                even_size=True))
register(Method("h264-intra", "baseline", ("C7", "1", "-."), "h264-intra", _h264_intra, sweep=RD_CRFS,
                sweep_key="crf", even_size=True))
register(Method("h264-fec20", "baseline", ("C5", "+", "-."), "h264-fec", _h264, fec=0.2, even_size=True))
register(Method("h264-fec50", "baseline", ("C6", "*", "-."), "h264-fec", _h264, fec=0.5, even_size=True))


def of_kind(kind: str) -> list[Method]:
    return [m for m in METHODS.values() if m.kind == kind]


def groups() -> dict[str, tuple[str, ...]]:
    """``--baselines`` group name -> its baselines, in registration order."""
    out: dict[str, tuple[str, ...]] = {}
    for m in of_kind("baseline"):
        if m.group is not None:
            out[m.group] = (*out.get(m.group, ()), m.name)
    return out


def style(name: str) -> tuple[str, str, str]:
    """The plot style of a method (grey dots for a name that is not registered)."""
    return METHODS[name].style if name in METHODS else FALLBACK_STYLE


def strip_methods() -> list[str]:
    return [m.name for m in METHODS.values() if m.strip]


def make_baseline(name: str, frames, target_bytes: float | None = None, setting: float | None = None,
                  mtu: int = MTU, qualities: Iterable[int] = QUALITIES, keyint: int = 30,
                  preset: str = "medium") -> Run:
    """Prepare baseline ``name`` on ``frames``; returns ``run(draws) -> BaselineResult``.

    Encoding happens once here (or lazily on the first run); every call of ``run`` reuses it. With
    ``target_bytes`` the byte budget is matched (``jpeg``/``webp``: closest quality; ``*-best``: best
    quality within the budget per draw; ``h264*``: the CRF whose total bytes, parity included, are
    closest); without it ``setting`` (quality or CRF; default 50 / 23) is used.
    """
    m = METHODS.get(name)
    if m is None or m.kind != "baseline":
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(m.name for m in of_kind('baseline'))}")
    return m.build(m, frames, target_bytes, setting, mtu, list(qualities), keyint, preset)
