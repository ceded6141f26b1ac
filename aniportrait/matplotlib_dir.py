"""Keep matplotlib's config and font cache out of the user's home directory.

MediaPipe's ``vision`` package imports ``matplotlib.pyplot`` (for its drawing helpers),
which writes a font cache and a config folder under ``$HOME`` the first time it is
imported. A build writes only under ``--out``, ``--work-dir`` and the temp dir, so every
``import mediapipe`` (it imports the vision tasks) and every matplotlib import calls
:func:`keep_matplotlib_in_temp` first.
"""

from __future__ import annotations

import os
import tempfile


def keep_matplotlib_in_temp() -> None:
    """Point ``MPLCONFIGDIR`` at a per-user folder in the temp dir, unless the user set it.

    The folder is stable, so the font cache is built once per machine, not per process.
    """
    if not os.environ.get("MPLCONFIGDIR"):
        uid = os.getuid() if hasattr(os, "getuid") else 0
        os.environ["MPLCONFIGDIR"] = os.path.join(tempfile.gettempdir(), f"aniportrait-matplotlib-{uid}")

