"""aniportrait: the pure core of aniportrait-data (schema, geometry, rendering, media I/O).

Nothing in this package imports Ray: the same functions run in a test, a loop or a
Ray actor (see ``pipelines/`` for the orchestration).
"""

__version__ = "0.1.0"
