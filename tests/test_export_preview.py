"""Export to the official AniPortrait layout and clip previews, on the real sample build
(``conftest.sample_build``: three clips at ``SAMPLE_SIZE`` px)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import webdataset as wds
from sample_lists import SAMPLE_SIZE

from aniportrait.format import (
    BLENDSHAPES,
    HAS_FACE,
    LANDMARKS,
    MESH,
    POSE6D,
    RELEASE_NAME,
    TRANS_MAT,
    array_bytes,
    read_array,
)
from aniportrait.media.probe import count_video_frames, probe
from pipelines.tools.export import INDEX_NAME, export_official, face_frame_indices
from pipelines.tools.preview import contact_sheet, make_preview, tile_indices

pytestmark = pytest.mark.slow

CLIP_FRAMES = {"LylTalking_0": 90, "LylTalking_1": 120, "Radio10_0": 60}  # a face in every frame
CLIP = "LylTalking_0"  # the first sample clip
FRAMES = CLIP_FRAMES[CLIP]
SIZE = SAMPLE_SIZE
OVAL_GREEN = np.array([10, 200, 10], np.uint8)  # face-oval colour of the pose image (same in RGB and BGR)
MISSING = 5


@pytest.fixture(scope="module")
def built(sample_build: tuple[Path, object]) -> Path:
    """The shared sample build (read only)."""
    return sample_build[0]


@pytest.fixture(scope="module")
def shard_sample(built: Path) -> dict:
    """The shard's sample of ``CLIP``."""
    items = {s["__key__"]: s for s in wds.WebDataset(str(built / "sample-train-000000.tar"), shardshuffle=False)}
    assert sorted(items) == sorted(CLIP_FRAMES)
    return items[CLIP]


@pytest.fixture(scope="module")
def exported(built: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    dest = tmp_path_factory.mktemp("official")
    return export_official(str(built), dest), dest


def _clip_data(dest: Path, clip: str = CLIP) -> dict:
    return json.loads((dest / INDEX_NAME).read_text())[clip]["clip_data_list"][0]


def test_export_writes_the_official_layout(exported: tuple[dict, Path], shard_sample: dict) -> None:
    summary, dest = exported
    assert (summary["clips_written"], summary["frames_written"], summary["frames_skipped"]) == \
           (len(CLIP_FRAMES), sum(CLIP_FRAMES.values()), 0)
    assert summary["clips_dropped"] == {} and summary["skipped_by_clip"] == {}
    index = json.loads((dest / INDEX_NAME).read_text())
    assert list(index) == list(CLIP_FRAMES)
    for clip, frames in CLIP_FRAMES.items():
        assert len(index[clip]["clip_data_list"][0]["frame_name_list"]) == frames
        assert len(list((dest / "clips" / clip).glob("*.png"))) == frames
    assert index[CLIP]["video_clip_num"] == 1 and len(index[CLIP]["clip_data_list"]) == 1
    data = index[CLIP]["clip_data_list"][0]
    assert set(data) == {"frame_name_list", "frame_path_list", "lmks_list"}
    assert data["frame_name_list"] == [f"{CLIP}/{i:06d}.png" for i in range(FRAMES)]
    folder = dest / "clips" / CLIP
    assert data["frame_path_list"] == [str(folder / f"{i:06d}.png") for i in range(FRAMES)]
    # The official index builder pairs sorted '*.png' with sorted '*lmks.npy' by the name before '_'.
    pngs, lmks_files = sorted(folder.glob("*.png")), sorted(folder.glob("*lmks.npy"))
    assert [p.stem for p in pngs] == [p.name.split("_")[0] for p in lmks_files]
    assert [str(p) for p in lmks_files] == data["lmks_list"]
    lmks, blendshapes = read_array(shard_sample, LANDMARKS), read_array(shard_sample, BLENDSHAPES)
    trans_mat, lmks3d = read_array(shard_sample, TRANS_MAT), read_array(shard_sample, MESH)
    for i, path in enumerate(data["lmks_list"]):
        stem = path[: -len("_lmks.npy")]
        arrays = {name: np.load(f"{stem}_{name}.npy") for name in ("lmks", "lmks3d", "trans_mat", "bs")}
        assert {k: (v.shape, v.dtype) for k, v in arrays.items()} == {
            "lmks": ((478, 3), np.float32), "lmks3d": ((468, 3), np.float32),
            "trans_mat": ((4, 4), np.float32), "bs": ((51,), np.float32)}
        np.testing.assert_array_equal(arrays["lmks"], lmks[i])
        np.testing.assert_array_equal(arrays["lmks3d"], lmks3d[i])
        np.testing.assert_array_equal(arrays["trans_mat"], trans_mat[i])
        np.testing.assert_array_equal(arrays["bs"], blendshapes[i, 1:])
    frame = cv2.imread(data["frame_path_list"][0])
    assert frame.shape == (SIZE, SIZE, 3) and frame.mean() > 20


def test_export_drops_short_clips_and_their_old_folder(built: Path, tmp_path: Path) -> None:
    export_official(str(built), tmp_path)
    summary = export_official(str(built), tmp_path, min_frames=FRAMES + 1)
    kept = [clip for clip, frames in CLIP_FRAMES.items() if frames > FRAMES]
    assert kept == ["LylTalking_1"] and summary["clips_written"] == 1
    assert summary["clips_dropped"] == {clip: f"{frames} frames with a face, fewer than {FRAMES + 1}"
                                        for clip, frames in CLIP_FRAMES.items() if clip not in kept}
    assert list(json.loads((tmp_path / INDEX_NAME).read_text())) == kept
    assert [p.name for p in (tmp_path / "clips").iterdir()] == kept


def test_face_frame_indices_skips_missing_faces_and_non_finite_rows() -> None:
    has_face = np.array([True, True, False, True, True])
    lmks = np.zeros((5, 478, 3), np.float32)
    bs = np.zeros((5, 51), np.float32)
    bs[3, 7] = np.nan
    np.testing.assert_array_equal(face_frame_indices(has_face, [lmks, bs]), [0, 1, 4])


def _out_with_sample(built: Path, sample: dict, folder: Path) -> Path:
    """A copy of the build's release file whose one shard holds just ``sample``."""
    folder.mkdir()
    with wds.TarWriter(str(folder / "sample-train-000000.tar")) as writer:
        writer.write(sample)
    (folder / RELEASE_NAME).write_text((built / RELEASE_NAME).read_text())
    return folder


def _out_with_missing_face(built: Path, item: dict, folder: Path) -> Path:
    """A copy of the build whose clip lost its face in frame ``MISSING`` (NaN rows, has_face False)."""
    changed = {k: v for k, v in item.items() if k in ("__key__", "json", "mp4", "wav", "pose.mp4")}
    for member in (LANDMARKS, MESH, TRANS_MAT, POSE6D, BLENDSHAPES, HAS_FACE):
        array = read_array(item, member).copy()
        array[MISSING] = False if array.dtype == bool else np.nan
        changed[member.name] = array_bytes(array)
    return _out_with_sample(built, changed, folder)


def test_a_missing_face_is_skipped_without_shifting_later_frames(
        built: Path, shard_sample: dict, exported: tuple[dict, Path], tmp_path: Path) -> None:
    out = _out_with_missing_face(built, shard_sample, tmp_path / "out")
    summary = export_official(str(out), tmp_path / "official")
    assert summary["frames_skipped"] == 1 and summary["skipped_by_clip"] == {CLIP: 1}
    data = _clip_data(tmp_path / "official")
    kept = [i for i in range(FRAMES) if i != MISSING]
    assert data["frame_name_list"] == [f"{CLIP}/{i:06d}.png" for i in kept]
    folder = tmp_path / "official" / "clips" / CLIP
    assert not list(folder.glob(f"{MISSING:06d}*"))
    assert len(list(folder.glob("*.png"))) == len(list(folder.glob("*_lmks.npy"))) == FRAMES - 1
    after = MISSING + 1  # the next frame keeps its own image and its own landmarks
    reference = exported[1] / "clips" / CLIP / f"{after:06d}.png"
    np.testing.assert_array_equal(cv2.imread(str(folder / f"{after:06d}.png")), cv2.imread(str(reference)))
    np.testing.assert_array_equal(np.load(folder / f"{after:06d}_lmks.npy"), read_array(shard_sample, LANDMARKS)[after])


def test_export_drops_a_clip_without_a_member(built: Path, shard_sample: dict, tmp_path: Path) -> None:
    lacking = {k: v for k, v in shard_sample.items() if k == "__key__" or not k.startswith("__") and k != BLENDSHAPES.name}
    out = _out_with_sample(built, lacking, tmp_path / "out")
    summary = export_official(str(out), tmp_path / "official")
    assert summary["clips_written"] == 0
    assert summary["clips_dropped"] == {CLIP: f"sample {CLIP} has no blendshapes.npy member"}


def test_tile_indices_and_contact_sheet_grid() -> None:
    assert tile_indices(90, 8) == [0, 13, 25, 38, 51, 64, 76, 89]
    assert tile_indices(3, 8) == [0, 1, 2]
    sheet = contact_sheet([np.full((4, 6, 3), 255, np.uint8)] * 5, columns=2)
    assert sheet.shape == (12, 12, 3) and sheet[8:, 6:].max() == 0 and sheet[8:, :6].min() == 255


def test_preview_sheet_and_overlay_video(built: Path, tmp_path: Path) -> None:
    sheet_path, video_path = make_preview(str(built), CLIP, tmp_path, columns=4, frames=8)
    sheet = cv2.imread(str(sheet_path))
    assert sheet.shape == (2 * SIZE, 4 * SIZE, 3)
    for row in range(2):
        for col in range(4):
            tile = sheet[row * SIZE:(row + 1) * SIZE, col * SIZE:(col + 1) * SIZE]
            assert (tile == OVAL_GREEN).all(axis=2).sum() > 100  # the pose image is drawn on every tile
    assert count_video_frames(video_path) == FRAMES
    assert probe(video_path).has_audio


def test_preview_of_an_unknown_clip_lists_available_ids(built: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyError, match=f"'nope' is not in .*available: {', '.join(CLIP_FRAMES)}"):
        make_preview(str(built), "nope", tmp_path)
