"""Torch modules of both AniPortrait stages, named so official checkpoints load strictly."""
