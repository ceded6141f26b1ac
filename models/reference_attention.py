"""Reference attention: ReferenceNet self-attention inputs joined into the denoising UNet's keys/values.

Facts of the official ``ReferenceAttentionControl`` (``fusion_blocks="full"``), kept here:

- The ReferenceNet runs on the reference latents at t=0 with the CLIP image embedding as context;
  every ``attn1`` (self-attention of a transformer block) stores its input (the normed hidden
  states) in a bank, and runs as usual.
- The denoising UNet's ``attn1`` of the same block (matched by module name; the official
  sort-by-width-then-zip gives the same pairs) attends with keys/values
  ``cat([hidden, bank], dim=1)`` (its own projections), the bank repeated for every frame of
  its sample.
- Samples without the reference (the unconditional half of classifier-free guidance, and the
  training steps that drop the condition) use plain self-attention.

Implemented with diffusers attention processors: :class:`ReferenceAttention` installs a writer on
the ReferenceNet and a reader on the denoising UNet that share one bank. The bank is kept until
the next :meth:`ReferenceAttention.write` or :meth:`ReferenceAttention.clear`, so that gradient
checkpointing can recompute the readers during backward.
"""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention, AttnProcessor2_0


class _Bank:
    def __init__(self) -> None:
        self.features: dict[str, torch.Tensor] = {}
        self.mask: torch.Tensor | None = None


class _Writer:
    """Stores the self-attention input of one ReferenceNet block, then attends as usual."""

    def __init__(self, bank: _Bank, name: str):
        self.bank, self.name, self.base = bank, name, AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        self.bank.features[self.name] = hidden_states
        return self.base(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


class _Reader:
    """Self-attention of one denoising-UNet block over its own tokens plus the banked reference tokens."""

    def __init__(self, bank: _Bank, name: str):
        self.bank, self.name, self.base = bank, name, AttnProcessor2_0()

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, **kwargs) -> torch.Tensor:
        reference = self.bank.features.get(self.name)
        mask = self.bank.mask
        if reference is None or (mask is not None and not bool(mask.any())):
            return self.base(attn, hidden_states, None, attention_mask, temb)
        rows = hidden_states.shape[0]
        reference = reference.to(hidden_states.dtype).repeat_interleave(rows // reference.shape[0], 0)
        if mask is None or bool(mask.all()):
            return self._joined(attn, hidden_states, reference, attention_mask, temb)
        # Each row attends on its own: the reading rows join the reference, the others run plain.
        use = mask.to(hidden_states.device).repeat_interleave(rows // mask.shape[0])
        out = torch.empty_like(hidden_states)
        out[use] = self._joined(attn, hidden_states[use], reference[use], _rows(attention_mask, use), temb)
        out[~use] = self.base(attn, hidden_states[~use], None, _rows(attention_mask, ~use), temb)
        return out

    def _joined(self, attn: Attention, hidden_states: torch.Tensor, reference: torch.Tensor,
                attention_mask, temb) -> torch.Tensor:
        return self.base(attn, hidden_states, torch.cat([hidden_states, reference], dim=1), attention_mask, temb)


def _rows(attention_mask: torch.Tensor | None, use: torch.Tensor) -> torch.Tensor | None:
    """The attention mask of the selected rows (None stays None)."""
    return None if attention_mask is None else attention_mask[use]


def _self_attentions(unet: UNet2DConditionModel) -> dict[str, Attention]:
    return {name: m for name, m in unet.named_modules()
            if name.endswith(".attn1") and ".transformer_blocks." in name and isinstance(m, Attention)}


class ReferenceAttention:
    """Writer processors on ``reference_unet``, reader processors on ``denoising_unet``, one shared bank.

    Batch layout: the denoising UNet's rows (B*F frames, sample-major) must be a whole multiple
    of the reference batch; row ``i`` reads reference sample ``i // (rows // reference_batch)``.
    """

    def __init__(self, reference_unet: UNet2DConditionModel, denoising_unet: UNet2DConditionModel):
        self.reference_unet = reference_unet
        self.bank = _Bank()
        writers, readers = _self_attentions(reference_unet), _self_attentions(denoising_unet)
        if writers.keys() != readers.keys():
            raise ValueError("the ReferenceNet and the denoising UNet have different transformer blocks")
        for name, attn in writers.items():
            attn.set_processor(_Writer(self.bank, name))
        for name, attn in readers.items():
            attn.set_processor(_Reader(self.bank, name))

    def write(self, reference_latents: torch.Tensor, encoder_hidden_states: torch.Tensor) -> None:
        """Run the ReferenceNet at t=0 on reference_latents (N,4,h,w) with context (N,L,D); fills the bank.

        Gradients flow into the ReferenceNet when grad is enabled (stage 1 trains it).
        """
        self.clear()
        timestep = torch.zeros(reference_latents.shape[0], device=reference_latents.device, dtype=torch.long)
        self.reference_unet(reference_latents, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=False)

    def set_mask(self, mask: torch.Tensor | None) -> None:
        """Which denoiser samples read the reference: (S,) bool, S dividing the rows; None = all."""
        self.bank.mask = mask

    def clear(self) -> None:
        """Forget the reference: the denoising UNet then runs plain self-attention."""
        self.bank.features.clear()
        self.bank.mask = None
