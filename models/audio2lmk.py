"""Audio2Lmk as trained: the teacher-forced forward of an Audio2Mesh or Audio2Pose head.

:class:`TeacherForcedHead` makes one training computation the ``forward`` of one module, so
that DistributedDataParallel (which hooks ``forward``) sees it.
"""

from __future__ import annotations

import torch
from torch import nn

from models.audio2mesh import Audio2MeshModel
from models.audio2pose import Audio2PoseModel, shift_poses


class TeacherForcedHead(nn.Module):
    """The training forward of a model's ``head`` on cached wav2vec2 features.

    A plain ``nn.Module``, not a ``ModelMixin``: it has no weights or config of its own, it
    wraps a model that saves and loads itself (its state-dict keys get a ``model.`` prefix here).
    """

    def __init__(self, model: Audio2MeshModel | Audio2PoseModel) -> None:
        super().__init__()
        if not isinstance(model, (Audio2MeshModel, Audio2PoseModel)):
            raise TypeError(f"expected an Audio2MeshModel or Audio2PoseModel, got {type(model).__name__}")
        self.model = model

    def forward(self, features: torch.Tensor, id_index: torch.Tensor, poses: torch.Tensor) -> torch.Tensor:
        """Predictions of ``features`` (B, T, audio_dim): mesh offsets (B, T, V, 3), or poses (B, T, 6)
        from the identities ``id_index`` (B,) and the target ``poses`` (B, T, 6) shifted by one frame
        (:func:`~models.audio2pose.shift_poses`). Audio2Mesh ignores ``id_index`` and ``poses``."""
        if isinstance(self.model, Audio2MeshModel):
            return self.model.head(features)
        return self.model.head(features, id_index, shift_poses(poses))
