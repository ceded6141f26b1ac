"""Audio2Lmk inference: speech + portrait -> mesh offsets + head poses -> 2D landmarks -> pose images.

As the official ``audio2vid.py``: the portrait's face (MediaPipe, IMAGE mode) gives the
canonical mesh ``lmks3d`` and the pose ``trans_mat``; Audio2Mesh adds per-frame offsets
to the mesh; Audio2Pose predicts 6D head poses in 5 s chunks, rotations halved and
smoothed (window 7), or a given pose sequence (a pose video) replaces them; each frame's
mesh is projected with ``trans_mat @ E(pose)`` and drawn as the lip-coloured pose image.

Unlike the official script, audio under 5 s and exact multiples of 5 s work
(:func:`models.audio2pose.chunk_bounds`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aniportrait.audio import frame_count, normalize
from aniportrait.geometry import NUM_VERTICES, landmarks_to_mesh, project_points
from aniportrait.pose import smooth_pose
from aniportrait.render import draw_pose_image
from aniportrait.retarget import FPS, Motion, PortraitFace, tile_mirrored

logger = logging.getLogger(__name__)

#: Official post-processing of the predicted poses: rotations scaled, then smoothed.
POSE_ROTATION_SCALE = 0.5
POSE_SMOOTH = 7
#: Audio2Pose runs on chunks of this many seconds (150 frames at 30 fps).
POSE_CHUNK_SECONDS = 5.0
#: Weight scale of the random tiny mesh head (the trained init is zero: it would not move).
_TINY_MESH_STD = 0.1


def portrait_face(image_rgb: np.ndarray, face_model: str | None = None) -> PortraitFace:
    """MediaPipe face of an RGB portrait (IMAGE mode, official options) as a :class:`PortraitFace`.

    Raises ``ValueError("no face found in the portrait")`` when MediaPipe finds none.
    """
    from aniportrait.face import DEFAULT_MODEL
    from aniportrait.landmarks import FaceLandmarkerRunner, LandmarkerSettings

    image = np.ascontiguousarray(image_rgb, np.uint8)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"the portrait must be an RGB image (H, W, 3), got shape {image.shape}")
    runner = FaceLandmarkerRunner(LandmarkerSettings(str(face_model or DEFAULT_MODEL), mode="image"))
    lmks, _, _, found = runner.detect(image)
    if not found:
        raise ValueError("no face found in the portrait")
    height, width = image.shape[:2]
    mesh, trans_mat = landmarks_to_mesh(lmks.astype(np.float64), width, height)
    return PortraitFace(mesh.astype(np.float32), trans_mat.astype(np.float32), width, height)


def iter_pose_images(lmks2d: np.ndarray, width: int, height: int) -> Iterator[np.ndarray]:
    """The official lip-coloured pose image (H, W, 3) uint8 of each frame's pixel landmarks."""
    for points in lmks2d:
        yield draw_pose_image(points, width, height, normalized=False)


def pose_images(lmks2d: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pose images (T, H, W, 3) uint8 of pixel landmarks (T, 468, 2)."""
    frames = list(iter_pose_images(lmks2d, width, height))
    return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8)


def fit_pose(pose: np.ndarray, frames: int) -> np.ndarray:
    """A given pose sequence (L, 6) fitted to ``frames``: as is, or played forth and back and tiled."""
    pose = np.asarray(pose, np.float64)
    if pose.ndim != 2 or pose.shape[1] != 6 or len(pose) == 0:
        raise ValueError(f"a pose sequence must be (L, 6) with L >= 1, got {pose.shape}")
    return pose if len(pose) == frames else tile_mirrored(pose, frames)


class Audio2Lmk:
    """Audio2Mesh + Audio2Pose (each with its wav2vec2) on one device; :meth:`motion` runs them."""

    def __init__(self, mesh_model: Any, pose_model: Any, device: str = "cpu") -> None:
        for what, model in (("Audio2Mesh", mesh_model), ("Audio2Pose", pose_model)):
            if model.audio_encoder is None:
                raise ValueError(f"the {what} model has no wav2vec2 inside; pass --wav2vec2")
        self.mesh_model = mesh_model.to(device).eval()
        self.pose_model = pose_model.to(device).eval()
        self.device = device

    @classmethod
    def from_checkpoints(cls, mesh: str, pose: str, *, wav2vec2: str | None = None, device: str = "cpu") -> Audio2Lmk:
        """Models from official files (``audio2mesh.pt``, ``audio2pose.pt``) or trainer checkpoints.

        ``wav2vec2`` (a folder or hub id) supplies the encoder of checkpoints trained on
        cached features, which hold none; a checkpoint with its own encoder keeps it.
        """
        from models import audio2mesh, audio2pose
        from models.wav2vec import load_audio_encoder

        models = []
        for path, module in ((mesh, audio2mesh), (pose, audio2pose)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"checkpoint {path} not found")
            models.append(module.from_checkpoint(path))
        needing = [model for model in models if model.audio_encoder is None]
        if needing and wav2vec2 is None:
            raise ValueError("the checkpoints hold no wav2vec2 encoder (trained on cached features); pass --wav2vec2")
        if needing:
            encoder = load_audio_encoder(wav2vec2)
            for model in needing:
                model.set_audio_encoder(encoder)
        elif wav2vec2 is not None:
            logger.info("both checkpoints hold their own wav2vec2; --wav2vec2 %s is not used", wav2vec2)
        return cls(*models, device=device)

    @classmethod
    def random_tiny(cls, seed: int = 0, audio_dim: int = 32, wav2vec2_dir: str | None = None) -> Audio2Lmk:
        """Tiny untrained models (tests and demos): random wav2vec2, or the one in ``wav2vec2_dir``."""
        import torch

        from models.audio2mesh import Audio2MeshConfig, Audio2MeshModel
        from models.audio2pose import Audio2PoseConfig, Audio2PoseModel
        from models.wav2vec import load_audio_encoder

        torch.manual_seed(seed)
        mesh = Audio2MeshModel(Audio2MeshConfig.tiny(audio_dim))
        pose = Audio2PoseModel(Audio2PoseConfig.tiny(audio_dim))
        torch.nn.init.normal_(mesh.out_fn.weight, std=_TINY_MESH_STD)
        if wav2vec2_dir is not None:
            encoder = load_audio_encoder(wav2vec2_dir)
            mesh.set_audio_encoder(encoder)
            pose.set_audio_encoder(encoder)
        return cls(mesh, pose)

    def motion(self, wave16k: np.ndarray, reference: PortraitFace, fps: float = FPS,
               pose: np.ndarray | None = None, *, pose_id: int = 0) -> Motion:
        """Mesh, head pose and pixel landmarks per frame (``ceil(seconds * fps)`` frames) of 16 kHz mono audio.

        ``pose`` (L, 6) replaces the predicted head poses (tiled forth and back to the
        length when L differs); ``pose_id`` picks Audio2Pose's identity embedding.
        """
        import torch

        wave = np.asarray(wave16k, np.float32).reshape(-1)
        minimum = self.mesh_model.audio_encoder.min_samples
        if len(wave) < minimum:
            raise ValueError(f"the audio is too short: {len(wave)} samples at 16 kHz, "
                             f"wav2vec2 needs at least {minimum}")
        num_ids = self.pose_model.config.num_ids
        if not 0 <= pose_id < num_ids:
            raise ValueError(f"pose_id must be within 0..{num_ids - 1}, got {pose_id}")
        frames = frame_count(len(wave), fps)
        values = torch.from_numpy(normalize(wave))[None].to(self.device)
        with torch.inference_mode():
            offsets = self.mesh_model(values, frames)[0].float().cpu().numpy()
            if pose is None:
                ids = torch.tensor([pose_id], device=self.device)
                raw = self.pose_model.infer(values, frames, ids, chunk_seconds=POSE_CHUNK_SECONDS, fps=fps)
                raw = raw[0].float().cpu().numpy().astype(np.float64)
                raw[:, :3] *= POSE_ROTATION_SCALE
                pose6d = smooth_pose(raw, POSE_SMOOTH)
            else:
                pose6d = fit_pose(pose, frames)
        mesh = offsets.astype(np.float64) + np.asarray(reference.lmks3d, np.float64)[:NUM_VERTICES]
        lmks2d = project_points(mesh, reference.trans_mat, pose6d, reference.width, reference.height)
        return Motion(mesh.astype(np.float32), pose6d.astype(np.float32), lmks2d.astype(np.float32))
