"""conv_lstm_ae: a frame autoencoder plus a ConvLSTM that fills the latent channels lost in transit.

The prototype's ConvLSTM_AE (PROTOTYPE.md 2.9-2.10) redone. ConvLSTM: Shi et al., "Convolutional
LSTM Network", NeurIPS 2015. What changed, and why:

- The ConvLSTM sees the received latent (lost channels zero) AND its mask (1 = received), so a lost
  channel is never confused with a channel whose values are zero (prototype bug 11).
- It also sees its own previous filled latent and predicts a residual over it: the prediction for a
  lost channel is ``previous filled latent + correction``. The correction head is zero-initialised, so
  an untrained model is exactly the "copy the lost channels from the previous frame" baseline and
  training can only start from there. The prediction lives in the frame decoder's latent space (no
  tanh-bounded state goes to the decoder).
- Received channels are passed through untouched: ``z_filled = where(mask, z, prediction)``, which for
  a 0/1 mask is ``mask*z + (1-mask)*prediction`` and is *bitwise* the received value wherever
  mask = 1 (torch.where selects, it does not compute), whatever the prediction holds.
- The filled latent is decoded with the mask of the channels received *at least once so far* in the
  stream (``decoder_mask``): a channel that never arrived has no past to fill it from, so the frame
  decoder treats it as lost, exactly as zero-fill does (with an all-ones mask the fill of never-seen
  tail channels cost 2 dB against zero-fill). The same rule as the copy-previous baseline.
- A stateful ``step`` for live use: the receiver calls it frame after frame without resetting the
  state, and gets exactly what ``forward`` computes on the whole sequence (same code path; tested).
- ``bidirectional=True`` adds a backward ConvLSTM over the received latents, its states aligned in time
  (state t summarises frames t..T-1; the prototype paired forward t with backward T-1-t). It needs
  future frames, so it is for offline evaluation only: ``step`` raises.

Shapes (PNC16, the default frame AE, at 224x224; LRAE_VC gives 16x28x28)::

    x_seq (B,T,3,224,224) -> z (B,T,16,32,32) -> z_filled (B,T,16,32,32) -> x_hat (B,T,3,224,224)
    mask_seq (B,T,16), 1 = received
"""

from __future__ import annotations

import torch
from torch import nn

from models.registry import build_model, register_model
from network.loss import apply_mask


class ConvLSTMCell(nn.Module):
    """One ConvLSTM step: one convolution of [x, h] gives the gates i, f, o, g; c' = f*c + i*g, h' = o*tanh(c')."""

    def __init__(self, in_channels: int, hidden: int, kernel: int = 3):
        super().__init__()
        self.hidden = hidden
        self.conv = nn.Conv2d(in_channels + hidden, 4 * hidden, kernel, padding=kernel // 2)
        with torch.no_grad():
            self.conv.bias[hidden:2 * hidden].fill_(1.0)  # forget gate starts open

    def forward(self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None):
        if state is None:
            zeros = x.new_zeros(x.shape[0], self.hidden, *x.shape[2:])
            state = (zeros, zeros)
        h, c = state
        i, f, o, g = self.conv(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, (h, c)


def run_cells(cells: nn.ModuleList, x: torch.Tensor, states: list | None):
    """One time step through a stack of cells; returns the top hidden state and the new states."""
    states = states if states is not None else [None] * len(cells)
    new = []
    for cell, s in zip(cells, states):
        x, s = cell(x, s)
        new.append(s)
    return x, new


@register_model("conv_lstm_ae", kind="temporal")
class ConvLSTMAE(nn.Module):
    """A registered frame autoencoder (``ae``, default PNC16) with a ConvLSTM filling lost latent channels.

    x_seq: (B,T,3,H,W) in [0,1]; mask_seq: (B,T,C), 1 = received (None = everything arrived).
    ``forward`` -> {"x_hat": (B,T,3,H,W), "z_filled": (B,T,C,h,w), "z": (B,T,C,h,w) as received
    (lost channels zero), "z_sent": the encoder's latent before loss, "mask": (B,T,C),
    "decoder_mask": (B,T,C) channels received at least once up to t}.
    ``step(z_t (B,C,h,w), mask_t (B,C), state) -> (z_filled_t, state)``; state None = first frame;
    decode ``z_filled_t`` with ``decoder_mask(state)``.

    The LSTM runs at the latent resolution (32x32 for PNC16 at 224) in float32 even under autocast;
    ``hidden`` (default 32) keeps it cheap next to the frame decoder. Per step its input is
    [received latent, mask planes, previous filled latent] (3C channels, latents normalised per channel
    with ``latent_mean``/``latent_std``, see ``set_latent_stats``); the head sees the LSTM state and that
    input and predicts a correction to the previous filled latent (in units of ``latent_std``).
    """

    def __init__(self, ae: str = "PNC16", ae_kwargs: dict | None = None, hidden: int = 32, layers: int = 1,
                 kernel: int = 3, bidirectional: bool = False):
        super().__init__()
        self.ae = build_model(ae, **(ae_kwargs or {}))
        if self.ae.kind != "frame":
            raise ValueError(f"ae={ae!r} is not a frame autoencoder")
        if hidden < 1 or layers < 1 or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"bad ConvLSTM size: hidden={hidden} layers={layers} kernel={kernel} (odd kernel)")
        c = self.latent_channels = self.ae.latent_channels
        self.stride = self.ae.stride
        self.bidirectional = bidirectional
        self.cells = nn.ModuleList([ConvLSTMCell(3 * c if i == 0 else hidden, hidden, kernel) for i in range(layers)])
        self.back_cells = nn.ModuleList(
            [ConvLSTMCell(2 * c if i == 0 else hidden, hidden, kernel) for i in range(layers)]
        ) if bidirectional else None
        head_in = hidden * (2 if bidirectional else 1) + 3 * c
        self.head = nn.Sequential(nn.Conv2d(head_in, hidden, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
                                  nn.Conv2d(hidden, c, 1))
        nn.init.zeros_(self.head[-1].weight)  # untrained = copy-previous, exactly
        nn.init.zeros_(self.head[-1].bias)
        # per-channel latent statistics: the LSTM works on normalised latents (saved with the weights)
        self.register_buffer("latent_mean", torch.zeros(c))
        self.register_buffer("latent_std", torch.ones(c))

    @torch.no_grad()
    def set_latent_stats(self, z: torch.Tensor) -> None:
        """Normalise the LSTM's inputs with the per-channel mean/std of sample latents (..., C, h, w).

        Frame AEs differ by 10x in latent scale (PNC16's ReLU latent ~0.1, LRAE_VC's ~1); the training
        script calls this once before training. A dead channel's std is floored at 1 % of the largest.
        """
        flat = z.detach().float().transpose(0, -3).reshape(z.shape[-3], -1)
        std = flat.std(dim=1)
        self.latent_mean.copy_(flat.mean(dim=1))
        self.latent_std.copy_(std.clamp_min(max(0.01 * float(std.max()), 1e-6)))

    # -- the frame autoencoder, applied per frame -------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(..., 3, H, W) -> (..., C, h, w), any leading dims (frames are independent). For a frame model
        with quality levels (LRAE_RD) the level-free latent of its top level (``ae.dequantize``): what the
        receiver's fills work on (playback/conceal.py)."""
        lead = x.shape[:-3]
        z = self.ae.dequantize(self.ae.encode(x.reshape(-1, *x.shape[-3:])))
        return z.reshape(*lead, *z.shape[1:])

    def decode(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(..., C, h, w) and mask (..., C) or None -> (..., 3, H, W) with the frame decoder (``ae.synthesize``)."""
        lead = z.shape[:-3]
        flat_mask = None if mask is None else mask.reshape(-1, mask.shape[-1])
        x = self.ae.synthesize(z.reshape(-1, *z.shape[-3:]), flat_mask)
        return x.reshape(*lead, *x.shape[1:])

    # -- filling ------------------------------------------------------------------------------------------
    def _step(self, z, mask, state, context=None):
        with torch.autocast(z.device.type, enabled=False):
            planes = mask.float()[:, :, None, None].expand(z.shape).contiguous()
            received = apply_mask(z.float(), mask)
            cells, prev, seen = state if state is not None else (None, torch.zeros_like(received), None)
            seen = mask.float() if seen is None else torch.maximum(seen, mask.float())
            inp = torch.cat([self._norm(received) * planes, planes, self._norm(prev)], dim=1)
            h, cells = run_cells(self.cells, inp, cells)
            features = [h, inp] if context is None else [h, context, inp]
            prediction = prev + self.head(torch.cat(features, dim=1)) * self.latent_std[:, None, None]
            filled = torch.where(planes > 0.5, received, prediction)
        return filled, (cells, filled, seen)

    @staticmethod
    def decoder_mask(state) -> torch.Tensor:
        """(B,C) mask to decode the latest filled latent with: the channels received at least once."""
        return state[2]

    def _norm(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]

    def step(self, z_t: torch.Tensor, mask_t: torch.Tensor, state=None):
        """Live use, one frame: received latent (B,C,h,w) and mask (B,C) -> (filled latent, new state).

        Feed the returned state back with the next frame; None starts a sequence.
        """
        if self.bidirectional:
            raise RuntimeError("a bidirectional conv_lstm_ae needs future frames: it cannot run live "
                               "(step); use forward() on whole sequences for offline evaluation")
        return self._step(z_t, mask_t, state)

    def backward_states(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Backward ConvLSTM over (B,T,C,h,w) received latents -> (B,T,hidden,h,w), aligned in time:
        entry t depends on frames t..T-1 only."""
        with torch.autocast(z.device.type, enabled=False):
            planes = mask.float()[..., None, None].expand(z.shape)
            received = self._norm(z.float()) * planes
            states, out = None, []
            for t in reversed(range(z.shape[1])):
                h, states = run_cells(self.back_cells, torch.cat([received[:, t], planes[:, t]], dim=1), states)
                out.append(h)
        return torch.stack(out[::-1], dim=1)

    def fill(self, z: torch.Tensor, mask: torch.Tensor, state=None):
        """Fill a whole sequence: z (B,T,C,h,w) as received, mask (B,T,C) -> (z_filled, state)."""
        context = self.backward_states(z, mask) if self.bidirectional else None
        out = []
        for t in range(z.shape[1]):
            filled, state = self._step(z[:, t], mask[:, t], state, None if context is None else context[:, t])
            out.append(filled)
        return torch.stack(out, dim=1), state

    def forward(self, x_seq: torch.Tensor, mask_seq: torch.Tensor | None = None, quantizer=None,
                decode: bool = True, frames: list[int] | None = None) -> dict:
        """x_seq (B,T,3,H,W), mask_seq (B,T,C) or None. ``decode=False`` skips the decoder (x_hat None);
        ``frames`` decodes only those time steps (x_hat (B,len(frames),3,H,W); training on a CPU budget).

        The filled latent is decoded with ``decoder_mask``: the channels received at least once so far.
        """
        z_sent = self.encode(x_seq)
        if quantizer is not None:
            z_sent = quantizer(z_sent)
        if mask_seq is None:
            mask_seq = torch.ones(z_sent.shape[:3], device=z_sent.device)
        mask_seq = mask_seq.to(z_sent.device, torch.float32)
        z = apply_mask(z_sent, mask_seq)
        z_filled, _ = self.fill(z, mask_seq)
        seen = torch.cummax(mask_seq, dim=1).values
        x_hat = None
        if decode:
            picked = (z_filled, seen) if frames is None else (z_filled[:, frames], seen[:, frames])
            x_hat = self.decode(*picked)
        return {"x_hat": x_hat, "z_filled": z_filled, "z": z, "z_sent": z_sent, "mask": mask_seq,
                "decoder_mask": seen}
