"""I/P streams: the one path from a frame's received latent to the frame shown, and the sender's mirror of it.

    player = InterPlayer(model)                  # model: an inter codec (kind "inter": models/latent_p.py, pframe.py)
    asm = decode_frame(kept, codec, geometry)    # codec.packetize; asm.inter: a P-frame
    shown = player.show(*asm.result(), inter=asm.inter, quality=asm.quality)

    mirror = Mirror(model, geometry)             # the sender's copy of the receiver's state
    state = mirror.state()                       # what frame t is coded against
    mirror.sent(t, symbols, inter, quality)      # after coding frame t
    mirror.ack(t, mask)                          # the receiver's feedback: channels it decoded for frame t

**The state** the receiver keeps from frame to frame is the inter codec's (models/base.InterState): the
frame it showed last, rounded to 8 bits (so the sender and the receiver hold it bit for bit), and, for a
codec that predicts in the latent (LRAE_RD_P), its last latent. Before the first frame the frame is
mid-grey. The rule, on both sides (:func:`next_frame`), for frame t with latent z and mask:

- some channel arrived: the codec plays it (``model.play``): an I-frame through the intra codec, a
  P-frame against the state; lost channels are filled as the codec says (``model.fill_label``);
- nothing arrived: the receiver cannot know the frame's type or level, so the state stays and its frame
  is shown again.

**Feedback and resync** (what WebRTC does with RTCP, and GRACE with its state resync). The receiver
reports for each frame the mask of the channels it decoded. The sender keeps each frame it sent (its
symbols, type and level) and mirrors the receiver: frames whose mask it knows are played exactly as the
receiver played them; the frames after the last acknowledged one, whose fate it does not know yet,
optimistically as if everything arrived. Frame t is coded against the mirror's last state. So when
nothing is lost the sender's state is the receiver's exactly; when frame k lost channels, the frames
coded before the feedback arrived are decoded by the receiver against a state that differs from the
encoder's, and from the feedback on the sender's state is the receiver's again: the error lasts one
round trip, it does not drift. Without feedback the sender assumes everything arrives, and only
I-frames (``--gop``) bound the drift.

**The reference of a P-frame** can also be an older state: the newest one the feedback confirmed
(``InterEncoder(reference="acked")``; ``auto`` does so while the feedback reports 8 % of the channels
lost or more). Its age travels in the packets (codec/wire.py); the receiver (:class:`InterPlayer`, given
each frame's index and age) and the mirror keep the states of the last ``HISTORY`` frames. The model then
predicts the channels that arrived from that state and keeps the others from the last one
(``model.play(..., reference)``): every channel that arrives is exactly what the sender coded, at the
price of coding the change over the round trip.

A mask the sender never learns (feedback lost for longer than ``window`` frames) leaves it unable to
mirror: ``needs_intra()`` says so, and the sender codes an I-frame, which does not depend on the past.

This module imports neither ``models`` nor ``data``: models arrive as objects.

    encoder = InterEncoder(model, codec, geometry, gop=0, feedback=True)   # the sender's side, with its Mirror
    packets, inter = encoder.encode(x, t, quality)
    encoder.ack(t, mask)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from codec.packetize import packetize_latent
from playback.conceal import ShownFrame

HISTORY = 32  # states kept per side: a P-frame's reference age is 0..31 (codec/wire.py)
REFERENCES = ("auto", "latest", "acked")
AUTO_LOSS = 0.08  # "auto" codes against the acknowledged state from this share of channels lost (README)


def next_frame(model, z: torch.Tensor, mask: torch.Tensor, inter: bool | None, quality: int | None,
               state, reference=None) -> tuple[object, str | None]:
    """The state after one frame of an I/P stream (its ``shown`` frame 8-bit exact) and the frame's
    concealment label.

    z (1,C,h,w): the symbols as received (lost channels zero), mask (1,C), 1 = received; ``inter``/``quality``:
    the frame's type and level from its packets (None if nothing arrived); ``state``: after the last frame;
    ``reference``: the older state a P-frame was coded against (None: ``state``).
    """
    received = int(mask.sum())
    if received == 0:
        return state, "repeat_last"
    state = model.play(state, z, mask, bool(inter), quality, reference)
    return state, None if received == mask.shape[1] else model.fill_label


class States:
    """The states after the last ``HISTORY`` frames, by frame index (a P-frame may name an older one)."""

    def __init__(self):
        self.by_index: dict[int, object] = {}

    def add(self, index: int, state) -> None:
        self.by_index[index] = state
        for old in [i for i in self.by_index if i <= index - HISTORY]:
            del self.by_index[old]

    def get(self, index: int):
        return self.by_index.get(index)


class InterPlayer:
    """Plays one I/P stream (module docstring): each frame's received latent and mask -> the frame shown."""

    policy = "inter"

    def __init__(self, model):
        if getattr(model, "kind", None) != "inter":
            raise ValueError("an I/P stream needs an inter codec (kind 'inter', e.g. LRAE_VC_P)")
        self.model = model
        self.reset()

    def reset(self) -> None:
        self.state, self.states, self.next_index = None, States(), 0

    def show(self, z: torch.Tensor, mask: torch.Tensor, inter: bool | None, quality: int | None,
             late: bool = False, index: int | None = None, ref_age: int | None = 0) -> ShownFrame:
        """The frame shown for this frame. ``late``: shown after its deadline; it is still decoded, because
        the next P-frame is coded against it, but labelled ``skipped_late`` (the sender's mirror, told
        the mask the receiver decoded, stays in step). ``index``: the frame's index (default: one after the
        last); ``ref_age``: a P-frame's reference age from its packets (codec/wire.py). A reference this
        player does not hold (a frame it never saw) is replaced by the last state, labelled
        ``stale_reference``; the sender resyncs from the feedback."""
        if self.state is None:
            self.state = self.model.initial_state(tuple(z.shape[1:]))
        if quality is not None and not 0 <= quality < self.model.levels:
            raise ValueError(f"quality {quality} outside the model's levels 0..{self.model.levels - 1}")
        index = self.next_index if index is None else index
        reference, stale = None, False
        if inter and ref_age:
            reference = self.states.get(index - 1 - ref_age)
            stale = reference is None
        self.state, label = next_frame(self.model, z, mask, inter, quality, self.state, reference)
        self.states.add(index, self.state)
        self.next_index = index + 1
        label = "stale_reference" if stale else label
        return ShownFrame(self.state.shown, z, mask, "skipped_late" if late else label, 0.0, label != "repeat_last")

    @property
    def last(self) -> torch.Tensor | None:
        """The last frame shown (None before the first)."""
        return None if self.state is None else self.state.shown


@dataclass
class Sent:
    """One frame as the sender coded it, and the mirror's view of it."""

    symbols: torch.Tensor  # (1,C,h,w), every channel
    inter: bool
    quality: int
    ref_age: int = 0  # a P-frame's reference: the state after frame index - 1 - ref_age
    mask: torch.Tensor | None = None  # the receiver's mask, once acknowledged
    state: object = None  # the mirror's state after it (exact once it and all before it are acknowledged)


class Mirror:
    """The sender's copy of what the receiver shows (module docstring).

    ``feedback=False``: no acknowledgements will come; every frame is taken as fully received. ``window``:
    frames a mask may stay unknown before the sender must code an I-frame to resync (``needs_intra``)."""

    def __init__(self, model, geometry: tuple[int, int, int], window: int = 16, feedback: bool = True):
        self.model, self.window, self.feedback = model, window, feedback
        self.base = model.initial_state(geometry)  # the state before the oldest frame kept
        self.frames: dict[int, Sent] = {}
        self.settled = States()  # final states of the frames dropped from ``frames`` (P-frames may refer to them)
        self.losses: deque[float] = deque(maxlen=HISTORY)  # acknowledged frames: the share of channels lost
        self.next_index = 0

    def state(self):
        """What the next frame is coded against: the mirror's last state."""
        return self.frames[max(self.frames)].state if self.frames else self.base

    def reference(self) -> torch.Tensor:
        """The mirror's last frame: what the receiver shows once everything sent so far arrived."""
        return self.state().shown

    def state_at(self, index: int):
        """The mirror's state after frame ``index`` (None if it kept none)."""
        return self.frames[index].state if index in self.frames else self.settled.get(index)

    def acked_age(self, index: int) -> int:
        """The reference age (codec/wire.py) of frame ``index`` coded against the newest state that is final
        (it and every frame before it acknowledged); 0 if there is none the receiver still holds."""
        pending = [i for i, e in self.frames.items() if e.mask is None]
        known = min(pending) - 1 if pending else index - 1
        age = index - 1 - known
        return age if 0 <= age <= HISTORY - 1 and known >= 0 and self.state_at(known) is not None else 0

    def sent(self, index: int, symbols: torch.Tensor, inter: bool, quality: int, ref_age: int = 0) -> None:
        """Record frame ``index`` (the next one) as coded; decode it as if every channel arrives."""
        if index != self.next_index:
            raise ValueError(f"frame {index} sent out of order (expected {self.next_index})")
        self.next_index += 1
        self.frames[index] = Sent(symbols.detach().cpu(), bool(inter), int(quality), int(ref_age))
        self._replay(index)
        if not self.feedback:  # nothing will be acknowledged: this decode is final
            self._drop_before(index)
        elif len(self.frames) > 4 * self.window:  # feedback has been dead for long: stale frames go
            self._drop_before(min(self.frames) + 1)

    def ack(self, index: int, mask: torch.Tensor) -> None:
        """The receiver decoded frame ``index`` with ``mask`` (1,C) (a repeated or late report is harmless)."""
        entry = self.frames.get(index)
        if entry is None or entry.mask is not None:
            return  # already settled, or forgotten
        entry.mask = mask.detach().cpu().float().reshape(1, -1)
        self.losses.append(1.0 - float((entry.mask > 0.5).float().mean()))
        if self.losses[-1] > 0:  # the optimistic decode was wrong: replay from here
            self._replay(index)
        if not entry.inter and bool((entry.mask > 0.5).any()):  # an I-frame that arrived: nothing after
            self._drop_before(index)  # it depends on earlier frames
        while self.frames and self.frames[min(self.frames)].mask is not None and len(self.frames) > 1:
            self._drop_before(min(self.frames) + 1)  # acknowledged at the front: final

    def needs_intra(self) -> bool:
        """True if the receiver's state can no longer be mirrored: a frame sent more than ``window`` frames
        ago is still unacknowledged and no I-frame sent after it may have repaired that."""
        stale = [i for i, e in self.frames.items() if e.mask is None and self.next_index - i > self.window]
        if not stale:
            return False
        last = max(stale)
        return not any(not e.inter and (e.mask is None or bool(e.mask.any())) for i, e in self.frames.items()
                       if i > last)

    def _replay(self, start: int) -> None:
        """Play frames start.. again, each after the one before, known masks or all channels."""
        state = self.frames[start - 1].state if start - 1 in self.frames else self.base
        for i in range(start, max(self.frames) + 1):
            e = self.frames[i]
            mask = e.mask if e.mask is not None else torch.ones(1, e.symbols.shape[1])
            reference = self.state_at(i - 1 - e.ref_age) if e.inter and e.ref_age else None
            e.state, _ = next_frame(self.model, e.symbols * mask[:, :, None, None], mask, e.inter, e.quality, state,
                                    reference)
            state = e.state

    def _drop_before(self, index: int) -> None:
        for i in sorted(i for i in self.frames if i < index):
            self.base = self.frames.pop(i).state
            self.settled.add(i, self.base)


class InterEncoder:
    """The sender's side of an I/P stream: picks each frame's type, codes it against the mirror's reference
    and packetizes it; ``ack`` takes the receiver's feedback.

    ``gop``: an I-frame every ``gop`` frames (0: only the first, and whenever the mirror lost track);
    ``feedback``: acknowledgements will come (else the mirror assumes everything arrived);
    ``reference``: what a P-frame is coded against - ``latest``: the mirror's last state (the frames still
    under way taken as arrived: the fewest bits, but a channel lost in one of them leaves the receiver off
    until the catch-up after the feedback); ``acked``: the newest state the feedback confirmed (its age in
    the packets; more bits, since the change spans the round trip, and a received channel is always
    exact); ``auto``: ``acked`` while the feedback of the last 32 frames reported at least ``AUTO_LOSS`` of the
    channels lost, else ``latest``."""

    def __init__(self, model, codec, geometry: tuple[int, int, int], gop: int = 0, feedback: bool = True,
                 window: int = 16, reference: str = "auto"):
        if gop < 0:
            raise ValueError(f"gop must be >= 0, got {gop}")
        if reference not in REFERENCES:
            raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
        self.model, self.codec, self.gop, self.reference = model, codec, gop, reference
        self.mirror = Mirror(model, geometry, window, feedback)

    def frame_type(self, index: int) -> bool:
        """True for a P-frame."""
        periodic = index == 0 or (self.gop > 0 and index % self.gop == 0)
        return not periodic and not self.mirror.needs_intra()

    def ref_age(self, index: int) -> int:
        """The reference age of P-frame ``index`` under the ``reference`` policy."""
        mirror = self.mirror
        if not mirror.feedback or self.reference == "latest":
            return 0
        if self.reference == "auto" and sum(mirror.losses) < AUTO_LOSS * max(len(mirror.losses), 1):
            return 0
        return mirror.acked_age(index)

    @torch.no_grad()
    def code(self, x: torch.Tensor, index: int, quality: int) -> tuple[torch.Tensor, bool, int]:
        """Frame x (1,3,H,W) in [0,1] -> (its symbols (1,C,h,w) as the receiver will decode them, is a P-frame,
        reference age)."""
        inter = self.frame_type(index)
        if not inter:
            z = self.model.intra.encode(x, quality)
            return self.codec.for_frame(False).learned.coded(z[0], quality)[None], False, 0
        age = self.ref_age(index)
        state = self.mirror.state_at(index - 1 - age) if age else self.mirror.state()
        y = self.model.encode_inter(x, state, quality)
        return self.codec.for_frame(True).learned.coded(y[0], quality)[None], True, age

    def packetize(self, z: torch.Tensor, index: int, inter: bool, quality: int, ref_age: int = 0,
                  **packet_kwargs) -> list[bytes]:
        """The packets of frame ``index`` (entropy coding; packet_kwargs: codec.packetize.packetize_latent's); the
        mirror records the frame as sent."""
        packets = packetize_latent(z[0], index, self.codec, quality=quality, inter=inter, ref_age=ref_age,
                                   **packet_kwargs)
        self.mirror.sent(index, z, inter, quality, ref_age)
        return packets

    def encode(self, x: torch.Tensor, index: int, quality: int, **packet_kwargs) -> tuple[list[bytes], bool]:
        """``code`` then ``packetize``: (packets, is a P-frame)."""
        z, inter, age = self.code(x, index, quality)
        return self.packetize(z, index, inter, quality, age, **packet_kwargs), inter

    def ack(self, index: int, mask: torch.Tensor) -> None:
        self.mirror.ack(index, mask)
