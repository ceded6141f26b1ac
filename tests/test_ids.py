"""Ids from metadata can never escape the output folder or reach a shell."""

from __future__ import annotations

import pytest

from aniportrait.ids import UnsafePathError, contained_join, is_safe_id, safe_id


@pytest.mark.parametrize("raw", ["../x", "a;rm -rf ~", "/etc/passwd", "x/../../y", "..", "", "a.b", "$(touch pwned)"])
def test_safe_id_sanitises_and_stays_unique(raw: str) -> None:
    cleaned = safe_id(raw)
    assert is_safe_id(cleaned)
    assert "/" not in cleaned and "." not in cleaned and ";" not in cleaned
    assert cleaned != safe_id(raw + "!"), "different raw ids must not collide"


def test_safe_ids_are_kept_and_stable() -> None:
    assert safe_id("Radio11_0") == "Radio11_0"
    assert safe_id("-F_x9F3kLq0") == "-F_x9F3kLq0"
    assert safe_id("a;rm -rf ~") == safe_id("a;rm -rf ~")


@pytest.mark.parametrize("part", ["..", "../x", "a/b", "/abs", "", ".hidden", "a;b"])
def test_contained_join_refuses_escapes(part: str) -> None:
    with pytest.raises(UnsafePathError):
        contained_join("/data/out", part)


def test_contained_join_accepts_safe_names() -> None:
    assert contained_join("/data/out/", "Radio11_0", "clip.mp4") == "/data/out/Radio11_0/clip.mp4"
