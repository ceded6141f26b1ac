"""Audio2Lmk inference: speech + portrait -> mesh offsets + head poses -> 2D landmarks -> pose images.

As the official ``audio2vid.py``: the portrait's face (MediaPipe, IMAGE mode) gives the
canonical mesh ``lmks3d`` and the pose ``trans_mat``; Audio2Mesh adds per-frame offsets
to the mesh; Audio2Pose predicts 6D head poses in 5 s chunks, then its checkpoint's
post-processing (:class:`~pipelines.inference.conventions.PosePostprocess`: official files rotations x0.5
and smoothing over 7 frames, our trainer's checkpoints what they record, x1.0) applies, or a
given pose sequence (a pose video) replaces them; each frame's mesh is projected with
``trans_mat @ E(pose)`` and drawn as the lip-coloured pose image.

Both audio models encode the whole utterance once, as the trainers' cached features are
made (the official script encodes each 5 s Audio2Pose chunk on its own: the same under
10 s, the only lengths it supports). Unlike the official script, audio under 5 s and exact
multiples of 5 s work (:func:`models.audio2pose.chunk_bounds`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from aniportrait.audio import frame_count, normalize
from aniportrait.geometry import NUM_VERTICES, landmarks_to_mesh, project_points
from aniportrait.render import draw_pose_image
from aniportrait.retarget import FPS, Motion, PortraitFace, tile_mirrored
from pipelines.inference.conventions import OFFICIAL_POSTPROCESS, TRAINED_POSTPROCESS, PosePostprocess

logger = logging.getLogger(__name__)

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


def load_audio_model(path: str | Path, kind: str) -> tuple[Any, dict[str, Any]]:
    """The ``kind`` (``audio2mesh`` or ``audio2pose``) model of an official file (wav2vec2 inside)
    or of a trainer checkpoint of any format version (its model config inside, usually no wav2vec2),
    and the inference conventions recorded with it: an official ``audio2pose.pt`` gets
    :data:`~pipelines.inference.conventions.OFFICIAL_POSTPROCESS`, a checkpoint its ``config["inference"]``
    (empty when written before it existed)."""
    from models.audio2mesh import Audio2MeshModel
    from models.audio2pose import Audio2PoseModel
    from models.official_weights import load_into
    from pipelines.training.checkpoint import TrainerCheckpoint, is_trainer_checkpoint, load_checkpoint

    model_cls = {"audio2mesh": Audio2MeshModel, "audio2pose": Audio2PoseModel}[kind]
    name = Path(path).name
    if not Path(path).is_file():
        raise FileNotFoundError(f"checkpoint {path} not found")
    contents = load_checkpoint(path)
    if not isinstance(contents, Mapping):
        raise ValueError(f"{name} holds a {type(contents).__name__}, not a state dict or a trainer checkpoint")
    if not is_trainer_checkpoint(contents):
        try:
            model = model_cls.load_official(contents)
        except ValueError as exc:
            raise ValueError(f"{name} (an official {kind} file?): {exc}") from exc
        return model, OFFICIAL_POSTPROCESS.to_dict() if kind == "audio2pose" else {}
    checkpoint = TrainerCheckpoint.from_dict(contents, name)
    if checkpoint.kind != kind:
        raise ValueError(f"{name} is an {checkpoint.kind} checkpoint, not {kind}")
    model = model_cls.from_config(checkpoint.config["model"])
    load_into(model, checkpoint.models[kind], f"{name} ({kind} checkpoint, step {checkpoint.step})")
    return model.eval(), dict(checkpoint.config.get("inference") or {})


class Audio2Lmk:
    """Audio2Mesh + Audio2Pose (each with its wav2vec2) on one device; :meth:`motion` runs them.

    ``pose_postprocess`` is what becomes of Audio2Pose's raw poses (the pose checkpoint's
    convention, :class:`~pipelines.inference.conventions.PosePostprocess`).
    """

    def __init__(self, mesh_model: Any, pose_model: Any, device: str = "cpu",
                 pose_postprocess: PosePostprocess | None = None) -> None:
        for what, model in (("Audio2Mesh", mesh_model), ("Audio2Pose", pose_model)):
            if model.audio_encoder is None:
                raise ValueError(f"the {what} model has no wav2vec2 inside; pass --wav2vec2")
        self.mesh_model = mesh_model.to(device).eval()
        self.pose_model = pose_model.to(device).eval()
        self.device = device
        self.pose_postprocess = pose_postprocess or TRAINED_POSTPROCESS

    @classmethod
    def from_checkpoints(cls, mesh: str, pose: str, *, wav2vec2: str | None = None, device: str = "cpu",
                         pose_scale: float | None = None, pose_smooth: int | None = None) -> Audio2Lmk:
        """Models from official files (``audio2mesh.pt``, ``audio2pose.pt``) or trainer checkpoints.

        ``wav2vec2`` (a folder or hub id) supplies the encoder of checkpoints trained on
        cached features, which hold none; a checkpoint with its own encoder keeps it. The
        head-pose post-processing is the pose checkpoint's (official file: rotations x0.5,
        smoothing 7; trainer checkpoint: what it records, else x1.0 and 7); ``pose_scale`` and
        ``pose_smooth`` override it.
        """
        from models.wav2vec import load_audio_encoder

        mesh_model, _ = load_audio_model(mesh, "audio2mesh")
        pose_model, conventions = load_audio_model(pose, "audio2pose")
        models = [mesh_model, pose_model]
        needing = [model for model in models if model.audio_encoder is None]
        if needing and wav2vec2 is None:
            raise ValueError("the checkpoints hold no wav2vec2 encoder (trained on cached features); pass --wav2vec2")
        if needing:
            encoder = load_audio_encoder(wav2vec2)
            for model in needing:
                model.set_audio_encoder(encoder)
        elif wav2vec2 is not None:
            logger.info("both checkpoints hold their own wav2vec2; --wav2vec2 %s is not used", wav2vec2)
        postprocess = PosePostprocess.from_dict(conventions, TRAINED_POSTPROCESS).overridden(pose_scale, pose_smooth)
        return cls(*models, device=device, pose_postprocess=postprocess)

    @classmethod
    def random_tiny(cls, seed: int = 0, audio_dim: int = 32, wav2vec2_dir: str | None = None,
                    pose_scale: float | None = None, pose_smooth: int | None = None) -> Audio2Lmk:
        """Tiny untrained models (tests and demos): random wav2vec2, or the one in ``wav2vec2_dir``;
        the head-pose post-processing of a checkpoint trained here, ``pose_scale``/``pose_smooth`` overriding it."""
        import torch

        from models.audio2mesh import Audio2MeshModel
        from models.audio2pose import Audio2PoseModel
        from models.wav2vec import load_audio_encoder

        torch.manual_seed(seed)
        mesh = Audio2MeshModel(**Audio2MeshModel.tiny_config(audio_dim))
        pose = Audio2PoseModel(**Audio2PoseModel.tiny_config(audio_dim))
        torch.nn.init.normal_(mesh.out_fn.weight, std=_TINY_MESH_STD)
        if wav2vec2_dir is not None:
            encoder = load_audio_encoder(wav2vec2_dir)
            mesh.set_audio_encoder(encoder)
            pose.set_audio_encoder(encoder)
        return cls(mesh, pose, pose_postprocess=TRAINED_POSTPROCESS.overridden(pose_scale, pose_smooth))

    def drawn_pose_id(self, seed: int) -> int:
        """An Audio2Pose identity (head-motion style) drawn from ``seed``: uniform over the model's
        identities as the official script's ``random.randint(0, 99)``, but reproducible."""
        return random.Random(seed).randrange(self.pose_model.config.num_ids)

    def motion(self, wave16k: np.ndarray, reference: PortraitFace, fps: float = FPS,
               pose: np.ndarray | None = None, *, pose_id: int = 0) -> Motion:
        """Mesh, head pose and pixel landmarks per frame (``ceil(seconds * fps)`` frames) of 16 kHz mono audio.

        ``pose`` (L, 6) replaces the predicted head poses (tiled forth and back to the
        length when L differs); ``pose_id`` picks Audio2Pose's identity embedding. Predicted
        poses go through :attr:`pose_postprocess`.
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
                pose6d = self.pose_postprocess(raw[0].float().cpu().numpy())
            else:
                pose6d = fit_pose(pose, frames)
        mesh = offsets.astype(np.float64) + np.asarray(reference.lmks3d, np.float64)[:NUM_VERTICES]
        lmks2d = project_points(mesh, reference.trans_mat, pose6d, reference.width, reference.height)
        return Motion(mesh.astype(np.float32), pose6d.astype(np.float32), lmks2d.astype(np.float32))
