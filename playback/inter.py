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

A mask the sender never learns (feedback lost for longer than ``window`` frames) leaves it unable to
mirror: ``needs_intra()`` says so, and the sender codes an I-frame, which does not depend on the past.

This module imports neither ``models`` nor ``data``: models arrive as objects.

    encoder = InterEncoder(model, codec, geometry, gop=0, feedback=True)   # the sender's side, with its Mirror
    packets, inter = encoder.encode(x, t, quality)
    encoder.ack(t, mask)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from codec.packetize import packetize_latent
from playback.conceal import ShownFrame


def next_frame(model, z: torch.Tensor, mask: torch.Tensor, inter: bool | None, quality: int | None,
               state) -> tuple[object, str | None]:
    """The state after one frame of an I/P stream (its ``shown`` frame 8-bit exact) and the frame's
    concealment label.

    z (1,C,h,w): the symbols as received (lost channels zero), mask (1,C), 1 = received; ``inter``/``quality``:
    the frame's type and level from its packets (None if nothing arrived); ``state``: after the last frame.
    """
    received = int(mask.sum())
    if received == 0:
        return state, "repeat_last"
    state = model.play(state, z, mask, bool(inter), quality)
    return state, None if received == mask.shape[1] else model.fill_label


class InterPlayer:
    """Plays one I/P stream (module docstring): each frame's received latent and mask -> the frame shown."""

    policy = "inter"

    def __init__(self, model):
        if getattr(model, "kind", None) != "inter":
            raise ValueError("an I/P stream needs an inter codec (kind 'inter', e.g. LRAE_VC_P)")
        self.model = model
        self.reset()

    def reset(self) -> None:
        self.state = None

    def show(self, z: torch.Tensor, mask: torch.Tensor, inter: bool | None, quality: int | None,
             late: bool = False) -> ShownFrame:
        """The frame shown for this frame. ``late``: shown after its deadline; it is still decoded, because
        the next P-frame is coded against it, but labelled ``skipped_late`` (the sender's mirror, told
        the mask the receiver decoded, stays in step)."""
        if self.state is None:
            self.state = self.model.initial_state(tuple(z.shape[1:]))
        if quality is not None and not 0 <= quality < self.model.levels:
            raise ValueError(f"quality {quality} outside the model's levels 0..{self.model.levels - 1}")
        self.state, label = next_frame(self.model, z, mask, inter, quality, self.state)
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
        self.next_index = 0

    def state(self):
        """What the next frame is coded against: the mirror's last state."""
        return self.frames[max(self.frames)].state if self.frames else self.base

    def reference(self) -> torch.Tensor:
        """The mirror's last frame: what the receiver shows once everything sent so far arrived."""
        return self.state().shown

    def sent(self, index: int, symbols: torch.Tensor, inter: bool, quality: int) -> None:
        """Record frame ``index`` (the next one) as coded; decode it as if every channel arrives."""
        if index != self.next_index:
            raise ValueError(f"frame {index} sent out of order (expected {self.next_index})")
        self.next_index += 1
        self.frames[index] = Sent(symbols.detach().cpu(), bool(inter), int(quality))
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
        if not bool((entry.mask > 0.5).all()):  # the optimistic decode was wrong: replay from here
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
            e.state, _ = next_frame(self.model, e.symbols * mask[:, :, None, None], mask, e.inter, e.quality, state)
            state = e.state

    def _drop_before(self, index: int) -> None:
        for i in sorted(i for i in self.frames if i < index):
            self.base = self.frames.pop(i).state


class InterEncoder:
    """The sender's side of an I/P stream: picks each frame's type, codes it against the mirror's reference
    and packetizes it; ``ack`` takes the receiver's feedback.

    ``gop``: an I-frame every ``gop`` frames (0: only the first, and whenever the mirror lost track);
    ``feedback``: acknowledgements will come (else the mirror assumes everything arrived)."""

    def __init__(self, model, codec, geometry: tuple[int, int, int], gop: int = 0, feedback: bool = True,
                 window: int = 16):
        if gop < 0:
            raise ValueError(f"gop must be >= 0, got {gop}")
        self.model, self.codec, self.gop = model, codec, gop
        self.mirror = Mirror(model, geometry, window, feedback)

    def frame_type(self, index: int) -> bool:
        """True for a P-frame."""
        periodic = index == 0 or (self.gop > 0 and index % self.gop == 0)
        return not periodic and not self.mirror.needs_intra()

    @torch.no_grad()
    def code(self, x: torch.Tensor, index: int, quality: int) -> tuple[torch.Tensor, bool]:
        """Frame x (1,3,H,W) in [0,1] -> (its symbols (1,C,h,w) as the receiver will decode them, is a P-frame)."""
        inter = self.frame_type(index)
        y = self.model.encode_inter(x, self.mirror.state(), quality) if inter else self.model.intra.encode(x, quality)
        return self.codec.for_frame(inter).learned.coded(y[0], quality)[None], inter

    def packetize(self, z: torch.Tensor, index: int, inter: bool, quality: int, **packet_kwargs) -> list[bytes]:
        """The packets of frame ``index`` (entropy coding; packet_kwargs: codec.packetize.packetize_latent's); the
        mirror records the frame as sent."""
        packets = packetize_latent(z[0], index, self.codec, quality=quality, inter=inter, **packet_kwargs)
        self.mirror.sent(index, z, inter, quality)
        return packets

    def encode(self, x: torch.Tensor, index: int, quality: int, **packet_kwargs) -> tuple[list[bytes], bool]:
        """``code`` then ``packetize``: (packets, is a P-frame)."""
        z, inter = self.code(x, index, quality)
        return self.packetize(z, index, inter, quality, **packet_kwargs), inter

    def ack(self, index: int, mask: torch.Tensor) -> None:
        self.mirror.ack(index, mask)
