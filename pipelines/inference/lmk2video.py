"""Lmk2Video: a reference portrait + pose images (lip-coloured landmark drawings) -> video frames.

As the official ``Pose2VideoPipeline`` (``pipeline_pose2vid_long.py``):

1. reference: VAE latents (``latent_dist.mean`` x 0.18215) of the portrait resized to the pose
   size (Lanczos), run once through the ReferenceNet at t=0 -> reference-attention bank; CLIP
   image embedding (224x224 bicubic, CLIP normalisation) -> cross-attention context (B,1,768);
2. DDIM (zero-SNR, trailing, v-prediction; "linear" betas as the released ``inference_v2.yaml``,
   see :func:`models.lmk2video.inference_scheduler`), 25 steps, classifier-free guidance 3.5 where the
   unconditional half has a zero CLIP embedding and no reference attention;
3. 16-frame context windows overlapping by 4, closed loop (the last window wraps to the first
   frames), predictions averaged over the windows that hold a frame; any T >= 1;
4. VAE decode -> uint8 RGB frames.

Pose feed (:func:`pose_input`, :mod:`pipelines.inference.conventions`): the official
``audio2vid.py`` passes uint8 arrays through ``VaeImageProcessor`` (no /255), i.e. ``2v-1`` in
[-1,509], while training (official and ours) uses [-1,1]. The PoseGuider stays in train mode
(BatchNorm on the batch statistics of each window, kept here via
:func:`models.pose_guider.batch_statistics`), so the first BatchNorm removes most of that
scale, but not all (the zero padding is not scaled with the input): the outputs differ. The
feed belongs to the weights: ``official`` for the official files, ``unit`` for weights our
trainer wrote (recorded next to them); an explicit feed overrides.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from models.lmk2video import (Lmk2VideoConfig, Lmk2VideoModels, add_motion_modules, build_models,
                              inference_scheduler)
from models.official_weights import (OFFICIAL_FILES, load_image_encoder, load_lmk2video_weights, load_vae)
from models.pose_guider import batch_statistics
from models.unets import denoise
from pipelines.inference.conventions import TRAINED_POSE_FEED, check_pose_feed, recorded_pose_feed

#: Folder names of the VAE and the image encoder inside an official ``pretrained_model/`` folder.
VAE_FOLDER, IMAGE_ENCODER_FOLDER = "sd-vae-ft-mse", "image_encoder"


def context_windows(num_frames: int, size: int = 16, overlap: int = 4) -> list[list[int]]:
    """Frame indices of each context window (official "uniform" schedule, step 0, closed loop)."""
    if num_frames <= size:
        return [list(range(num_frames))]
    if not 0 <= overlap < size:
        raise ValueError(f"context overlap must be in [0, {size}), got {overlap}")
    return [[(start + k) % num_frames for k in range(size)] for start in range(0, num_frames, size - overlap)]


def pose_input(images: torch.Tensor, feed: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The PoseGuider's input (N,3,H,W) of uint8 pose images (N,3,H,W), contiguous, in ``dtype``.

    ``unit``: ``v/127.5 - 1`` in [-1, 1] (training, official and ours); ``official``: ``2v - 1``
    in [-1, 509] (the official ``audio2vid.py``). Contiguous as the official tensors are: PyTorch's
    CPU BatchNorm on a channels-last float32 input is far less accurate (on the tiny golden
    pipeline, 10/255 off the official frames instead of 0.02/255).
    """
    check_pose_feed(feed)
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"pose images must be uint8 (N,3,H,W), got {images.dtype} {tuple(images.shape)}")
    values = images.contiguous().to(dtype)
    return values / 127.5 - 1.0 if feed == "unit" else values * 2.0 - 1.0


def clip_pixels(images: np.ndarray, size: int) -> torch.Tensor:
    """CLIP image-encoder input (N,3,size,size) float32 of uint8 RGB images (N,H,W,3).

    Bicubic resize to ``size``^2 (PIL), then ``CLIPImageProcessor``'s rescale (1/255) and
    CLIP normalisation, as the official pipeline. The one CLIP preprocessing: inference
    (the reference portrait) and the trainer (each sample's reference frame) both use it.
    """
    from PIL import Image
    from transformers import CLIPImageProcessorPil  # the PIL backend: torchvision is not a dependency

    resized = [Image.fromarray(np.asarray(image)).resize((size, size), Image.BICUBIC) for image in images]
    return CLIPImageProcessorPil(do_resize=False, do_center_crop=False)(images=resized, return_tensors="pt").pixel_values


class Lmk2Video:
    """Generator around a :class:`~models.lmk2video.Lmk2VideoModels` set (eval mode, no grad)."""

    def __init__(self, models: Lmk2VideoModels, config: Lmk2VideoConfig, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32, pose_feed: str = TRAINED_POSE_FEED):
        self.models, self.config, self.pose_feed = models, config, check_pose_feed(pose_feed)
        self.device, self.dtype = torch.device(device), dtype
        for name in ("vae", "image_encoder", "reference_unet", "denoising_unet", "pose_guider"):
            module = getattr(models, name).to(self.device).eval().requires_grad_(False)
            if module.dtype != dtype:
                module.to(dtype=dtype)
        self.scheduler = inference_scheduler(config)

    @classmethod
    def from_pretrained(cls, weights: dict[str, str | Path] | str | Path, config: Lmk2VideoConfig | None = None,
                        device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                        pose_feed: str | None = None) -> Lmk2Video:
        """Load official-format weights.

        ``weights``: a dict with ``vae`` and ``image_encoder`` (folders or hub ids) and the files
        ``pose_guider``, ``reference_unet``, ``denoising_unet`` and optionally ``motion_module``
        (see :data:`models.official_weights.OFFICIAL_FILES`); or an official ``pretrained_model/``
        folder holding those files plus ``sd-vae-ft-mse/`` and ``image_encoder/``. ``pose_feed``
        None takes the one recorded next to the PoseGuider file (:func:`recorded_pose_feed`).
        """
        config = config or Lmk2VideoConfig.official()
        if not isinstance(weights, dict):
            folder = Path(weights)
            if not folder.is_dir():
                raise FileNotFoundError(f"weights folder not found: {folder}")
            weights = {k: folder / f for k, f in OFFICIAL_FILES.items() if (folder / f).is_file()}
            weights |= {"vae": folder / VAE_FOLDER, "image_encoder": folder / IMAGE_ENCODER_FOLDER}
        needed = {"vae", "image_encoder", "pose_guider", "reference_unet", "denoising_unet"}
        if needed - weights.keys():
            raise ValueError(f"missing weights: {', '.join(sorted(needed - weights.keys()))}")
        vae = load_vae(weights["vae"], dtype)
        image_encoder = load_image_encoder(weights["image_encoder"], dtype)
        with torch.device("meta"):  # every tensor comes from the files (assign=True below)
            models = build_models(config, vae=vae, image_encoder=image_encoder)
            if "motion_module" in weights:
                add_motion_modules(models.denoising_unet, config)
        load_lmk2video_weights(models, weights, assign=True)
        if pose_feed is None:
            pose_feed = recorded_pose_feed(Path(weights["pose_guider"]).parent)
        return cls(models, config, device, dtype, pose_feed)

    @classmethod
    def random_tiny(cls, seed: int = 0, device: str | torch.device = "cpu", motion: bool = True,
                    pose_feed: str = TRAINED_POSE_FEED) -> Lmk2Video:
        """Tiny random models (64x64 frames) for tests; zero-initialised layers are randomised too."""
        torch.manual_seed(seed)
        config = Lmk2VideoConfig.tiny()
        models = build_models(config)
        zero_init = [models.pose_guider.final_proj]
        if motion:
            zero_init += [m.temporal_transformer.proj_out for m in add_motion_modules(models.denoising_unet, config)]
        for layer in zero_init:
            torch.nn.init.normal_(layer.weight, std=0.05)
        return cls(models, config, device, pose_feed=pose_feed)

    @torch.no_grad()
    def generate(self, reference: np.ndarray, pose_images: np.ndarray, *, steps: int = 25, guidance: float = 3.5,
                 context_frames: int = 16, context_overlap: int = 4, seed: int = 0,
                 progress: bool = True, pose_feed: str | None = None) -> np.ndarray:
        """reference (H',W',3) uint8 RGB, pose_images (T,H,W,3) uint8 -> frames (T,H,W,3) uint8 (H,W multiples of 8).

        ``guidance <= 1`` turns classifier-free guidance off. The PoseGuider's batch statistics
        need more than one value per channel: below 128 px, T=1 needs guidance on (doubled batch).
        ``pose_feed`` (``official`` or ``unit``) overrides the generator's own for this call.
        """
        pose_images, reference = np.asarray(pose_images), np.asarray(reference)
        if pose_images.ndim != 4 or pose_images.shape[0] < 1 or pose_images.shape[-1] != 3:
            raise ValueError(f"pose_images must be (T,H,W,3) with T >= 1, got {pose_images.shape}")
        if reference.ndim != 3 or reference.shape[-1] != 3:
            raise ValueError(f"reference must be an (H,W,3) RGB image, got {reference.shape}")
        frames, height, width = pose_images.shape[:3]
        if height % 8 or width % 8:
            raise ValueError(f"frame size must be a multiple of 8, got {width}x{height}")
        m, scale = self.models, self.config.vae_scaling
        clip = self._clip_embedding(reference)
        reference_latents = m.vae.encode(self._reference_pixels(reference, width, height)).latent_dist.mean * scale
        use_cfg = guidance > 1.0
        context = torch.cat([torch.zeros_like(clip), clip]) if use_cfg else clip
        m.reference_attention.write(reference_latents, clip)
        m.reference_attention.set_mask(torch.tensor([False, True]) if use_cfg else None)
        pose = pose_input(torch.from_numpy(pose_images).to(self.device).permute(0, 3, 1, 2),
                          pose_feed or self.pose_feed, self.dtype)
        channels, latent_h, latent_w = reference_latents.shape[1:]
        shape = (1, channels, frames, latent_h, latent_w)
        generator = torch.Generator("cpu").manual_seed(seed)
        scheduler = self.scheduler
        scheduler.set_timesteps(steps, device=self.device)
        latents = torch.randn(shape, generator=generator).to(self.device, self.dtype) * scheduler.init_noise_sigma
        windows = context_windows(frames, context_frames, context_overlap)
        try:
            for t in tqdm(scheduler.timesteps, desc="lmk2video", disable=not progress):
                total = torch.zeros((2 if use_cfg else 1, *shape[1:]), device=self.device, dtype=self.dtype)
                count = torch.zeros(frames, device=self.device, dtype=self.dtype)
                for window in windows:
                    x = latents[:, :, window]
                    x = scheduler.scale_model_input(torch.cat([x, x]) if use_cfg else x, t)
                    with batch_statistics(m.pose_guider):  # official: the doubled CFG batch goes in
                        features = m.pose_guider(torch.cat([pose[window]] * len(x)))
                    total[:, :, window] += denoise(m.denoising_unet, x, t, context, features)
                    count[window] += 1
                prediction = total / count.view(1, 1, frames, 1, 1)
                if use_cfg:
                    uncond, cond = prediction.chunk(2)
                    prediction = uncond + guidance * (cond - uncond)
                latents = scheduler.step(prediction, t, latents).prev_sample
        finally:
            m.reference_attention.clear()
        return self._decode(latents[0].transpose(0, 1) / scale)

    def _reference_pixels(self, reference: np.ndarray, width: int, height: int) -> torch.Tensor:
        """(1,3,H,W) in [-1,1]; Lanczos resize to the pose size as the official VaeImageProcessor."""
        from PIL import Image

        image = Image.fromarray(reference)
        if image.size != (width, height):
            image = image.resize((width, height), Image.LANCZOS)
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1)[None]
        return pixels.to(self.device, self.dtype) / 127.5 - 1.0

    def _clip_embedding(self, reference: np.ndarray) -> torch.Tensor:
        """CLIP image embedding (1,1,D) of the reference (:func:`clip_pixels`)."""
        pixels = clip_pixels(reference[None], self.models.image_encoder.config.image_size)
        embeds = self.models.image_encoder(pixels.to(self.device, self.dtype)).image_embeds
        return embeds[:, None]

    def _decode(self, latents: torch.Tensor, chunk: int = 8) -> np.ndarray:
        """latents (T,4,h,w) (unscaled) -> (T,H,W,3) uint8."""
        out = []
        for start in range(0, latents.shape[0], chunk):
            images = self.models.vae.decode(latents[start:start + chunk]).sample
            images = ((images.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
            out.append(images.permute(0, 2, 3, 1).cpu().numpy())
        return np.concatenate(out)
