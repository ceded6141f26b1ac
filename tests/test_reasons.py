"""The table of failure and removal reasons: one code per row, and the README lists them all."""

from __future__ import annotations

import re
from pathlib import Path

from aniportrait.media.download import DOWNLOAD_ERROR_REASONS
from aniportrait.reasons import REASONS, reason_of
from aniportrait.media.probe import MediaError

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_lists_every_reason_with_its_stage() -> None:
    rows = re.findall(r"^\| (\w+) \| `(\w+)` \|", README.read_text(), flags=re.MULTILINE)
    assert rows == [(r.stage, r.code) for r in REASONS.values()]


def test_every_download_reason_is_a_reason() -> None:
    assert set(DOWNLOAD_ERROR_REASONS) <= set(REASONS)


def test_reason_of_reads_the_code_and_survives_pickling() -> None:
    import pickle

    error = pickle.loads(pickle.dumps(MediaError("span 1-2 s starts after the end", "span_out_of_range")))
    assert reason_of(error) == "span_out_of_range" and str(error) == "span 1-2 s starts after the end"
    assert reason_of(ValueError("a bug")) == "internal_error"
    assert reason_of(MediaError("x", "not a code"), default="media_error") == "media_error"
