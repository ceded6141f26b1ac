"""Ray jobs, one sub-package per job.

- :mod:`pipelines.build`: metadata -> per-clip stages -> deterministic shards, manifest, release.
- :mod:`pipelines.tools`: read a finished release (inspect/stats, verify, card, export, preview).
- :mod:`pipelines.training`: streaming Audio2Lmk and Lmk2Video trainers on the shards.
- :mod:`pipelines.inference`: audio + portrait -> video, as a Ray batch job.
- :mod:`pipelines.runtime`: what every job shares: Ray start and the error contract.
"""
