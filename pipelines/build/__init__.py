"""The build job: a dataset's metadata in, WebDataset shards + ``manifest.parquet`` + ``release.json`` out.

:mod:`~pipelines.build.run` orchestrates; :mod:`~pipelines.build.config` and
:mod:`~pipelines.build.curation` hold its settings; :mod:`~pipelines.build.stages` the per-clip
transforms; :mod:`~pipelines.build.workarea` the per-clip cache that makes resume work;
:mod:`~pipelines.build.pack` and :mod:`~pipelines.build.release` the deterministic output.
This package imports none of them (a process that needs one module does not load the rest).
"""
