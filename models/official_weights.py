"""Load the official AniPortrait checkpoints and the SD1.5 / AnimateDiff parts they need.

- One loader, :func:`load_into`, for every official file: it names the missing, unexpected
  and wrongly shaped keys, and accepts either naming of weight norm (``weight_g``/``weight_v``
  as torch 2.0 saved the official audio models, or ``parametrizations.weight.original0/1``).
- ``audio2mesh.pt``, ``audio2pose.pt``: ``Audio2MeshModel.load_official`` /
  ``Audio2PoseModel.load_official`` (wav2vec2 inside).
- ``pose_guider.pth``, ``reference_unet.pth``: strict loads (keys equal ours).
- ``denoising_unet.pth`` (+ ``motion_module.pth`` when the UNet has motion modules): strict on
  the union, as the official 3D UNet holds both.
- AnimateDiff weights: the original ``mm_sd_v15_v2.ckpt`` already uses the official names; a
  diffusers ``MotionAdapter`` (folder or hub id) is renamed by :func:`motion_adapter_to_official`.
- VAE and CLIP image encoder: ``from_pretrained`` on a local folder (or a hub id when online).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Official file of each module, as named in ``pretrained_model/``.
OFFICIAL_FILES = {"pose_guider": "pose_guider.pth", "reference_unet": "reference_unet.pth",
                  "denoising_unet": "denoising_unet.pth", "motion_module": "motion_module.pth"}
#: Newer torch's names of a weight-normed parameter's parts -> the names in the official files.
WEIGHT_NORM_NAMES = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a ``.pth``/``.pt``/``.ckpt`` (torch) or ``.safetensors`` file, on CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return state


def _official_key(key: str) -> str:
    """``key`` with weight-norm parts named as in the official files (``weight_g``/``weight_v``)."""
    for new, old in WEIGHT_NORM_NAMES.items():
        if key.endswith("." + new):
            return key[: -len(new)] + old
    return key


def load_into(module: nn.Module, state: Mapping[str, torch.Tensor], what: str, *, strict: bool = True,
              assign: bool = False) -> None:
    """Load ``state`` into ``module``, with an error that names the file's role and the first differences.

    Missing or unexpected keys fail with ``strict``; without it they are logged and the rest
    loads (as the official audio script's ``strict=False``). A tensor of another shape always
    fails, before anything is loaded.
    """
    state = {_official_key(k): v for k, v in state.items()}
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(own[k].shape)}" for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    problem = (f"{what}: the weights do not fit {type(module).__name__} ({len(missing)} missing, e.g. {missing[:3]}; "
               f"{len(unexpected)} unexpected, e.g. {unexpected[:3]}; {len(wrong)} of another shape, "
               f"e.g. {wrong[:3]}); check the file and the model config")
    if wrong or (strict and (missing or unexpected)):
        raise ValueError(problem)
    if missing or unexpected:
        log.warning("%s (loaded the rest)", problem)
        state = {k: v for k, v in state.items() if k in own}
    module.load_state_dict(state, strict=strict, assign=assign)


_ADAPTER_RENAMES = [(".norm1.", ".norms.0."), (".norm2.", ".norms.1."), (".norm3.", ".ff_norm."),
                    (".attn1.", ".attention_blocks.0."), (".attn2.", ".attention_blocks.1.")]


def motion_adapter_to_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a diffusers ``MotionAdapter`` state dict to the official ``motion_modules.j.temporal_transformer`` keys.

    diffusers keeps one ``pos_embed.pe`` per transformer block, applied before both attentions;
    the official layout holds the same table in each attention block's ``pos_encoder.pe``.
    """
    out = {}
    for key, value in state.items():
        key = re.sub(r"(\.motion_modules\.\d+)\.", r"\1.temporal_transformer.", key)
        if key.endswith(".pos_embed.pe"):
            for j in (0, 1):
                out[key.replace(".pos_embed.pe", f".attention_blocks.{j}.pos_encoder.pe")] = value
            continue
        for old, new in _ADAPTER_RENAMES:
            key = key.replace(old, new)
        out[key] = value
    return out


def load_motion_weights(source: str | Path) -> dict[str, torch.Tensor]:
    """Motion-module weights with official names from a file (official/AnimateDiff) or a MotionAdapter folder/hub id."""
    path = Path(source)
    if path.is_file():
        state = load_state_file(path)
        return motion_adapter_to_official(state) if any(".attn1." in k for k in state) else state
    from diffusers import MotionAdapter

    try:
        adapter = MotionAdapter.from_pretrained(str(source))
    except OSError as exc:
        raise FileNotFoundError(f"cannot load AnimateDiff motion weights from {source!r}: not a file, nor a "
                                f"diffusers MotionAdapter folder or reachable hub id ({exc})") from exc
    return motion_adapter_to_official(adapter.state_dict())


def load_motion_state(denoising_unet: nn.Module, state: dict[str, torch.Tensor], what: str, *,
                      assign: bool = False) -> None:
    """Load exactly the motion-module tensors of ``denoising_unet`` (official names), leaving the rest as it is."""
    own = {k for k in denoising_unet.state_dict() if ".motion_modules." in k}
    if set(state) != own:
        raise ValueError(f"{what}: {len(own - set(state))} motion-module keys missing, "
                         f"{len(set(state) - own)} unexpected; check the file and the model config")
    denoising_unet.load_state_dict(state, strict=False, assign=assign)


def _from_pretrained(cls, source: str | Path, subfolder: str, what: str, dtype: torch.dtype):
    kwargs = {"subfolder": subfolder} if (Path(source) / subfolder).is_dir() else {}
    try:
        return cls.from_pretrained(str(source), torch_dtype=dtype, **kwargs)
    except OSError as exc:
        raise FileNotFoundError(f"cannot load the {what} from {source!r}: give a local folder with its "
                                f"config.json and weights (or a hub id when online) ({exc})") from exc


def load_vae(source: str | Path, dtype: torch.dtype = torch.float32):
    """AutoencoderKL from a folder (sd-vae-ft-mse, or an SD1.5 folder with ``vae/``) or a hub id."""
    from diffusers import AutoencoderKL

    return _from_pretrained(AutoencoderKL, source, "vae", "VAE", dtype)


def load_image_encoder(source: str | Path, dtype: torch.dtype = torch.float32):
    """CLIPVisionModelWithProjection from a folder (``image_encoder`` of sd-image-variations) or a hub id."""
    from transformers import CLIPVisionModelWithProjection

    return _from_pretrained(CLIPVisionModelWithProjection, source, "image_encoder", "CLIP image encoder", dtype)


def load_sd15_unets(models, source: str | Path) -> None:
    """Initialise both UNets of ``models`` from an SD1.5 UNet (folder with ``unet/``, the ``unet`` folder, or a hub id).

    As the official training: the denoising UNet takes every tensor; the ReferenceNet all but
    ``conv_norm_out``/``conv_out``, which it does not have. Motion modules, if any, are left as they are.
    """
    from diffusers import UNet2DConditionModel

    state = _from_pretrained(UNet2DConditionModel, source, "unet", "SD1.5 UNet", torch.float32).state_dict()
    reference = {k: v for k, v in state.items() if not k.startswith(("conv_norm_out.", "conv_out."))}
    load_into(models.reference_unet, reference, "reference_unet from SD1.5")
    motion = {k: v for k, v in models.denoising_unet.state_dict().items() if ".motion_modules." in k}
    load_into(models.denoising_unet, state | motion, "denoising_unet from SD1.5")


def load_lmk2video_weights(models, weights: dict[str, str | Path], *, assign: bool = False) -> None:
    """Load official-format files into ``models`` (a ``Lmk2VideoModels``); keys of ``weights`` as :data:`OFFICIAL_FILES`.

    ``motion_module`` may be an official/AnimateDiff file or a MotionAdapter folder/hub id and is
    required exactly when the denoising UNet has motion modules. ``assign=True`` adopts the
    loaded tensors (for models built on the meta device).
    """
    if "pose_guider" in weights:
        load_into(models.pose_guider, load_state_file(weights["pose_guider"]), "pose_guider", assign=assign)
    if "reference_unet" in weights:
        load_into(models.reference_unet, load_state_file(weights["reference_unet"]), "reference_unet",
                  assign=assign)
    has_motion = any(".motion_modules." in k for k in models.denoising_unet.state_dict())
    if has_motion and "motion_module" not in weights:
        raise ValueError("the denoising UNet has motion modules: give a motion_module weights file")
    if "denoising_unet" in weights:
        state = dict(load_state_file(weights["denoising_unet"]))
        if has_motion:
            state.update(load_motion_weights(weights["motion_module"]))
        load_into(models.denoising_unet, state, "denoising_unet" + (" + motion_module" if has_motion else ""),
                  assign=assign)
    elif has_motion:
        load_motion_state(models.denoising_unet, load_motion_weights(weights["motion_module"]), "motion_module",
                          assign=assign)
