"""Torch modules of both AniPortrait stages, named so official checkpoints load strictly.

Every model is a diffusers ``ModelMixin, ConfigMixin`` whose ``__init__`` arguments are its
config (``@register_to_config``): ``save_pretrained``/``from_pretrained`` round-trip it. Plain
``nn.Module`` classes here are building blocks of those models or training wrappers that only
compose them (``TeacherForcedHead``, ``Lmk2VideoNet``); ``AudioEncoder`` is a transformers model.
"""
