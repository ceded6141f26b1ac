"""Source video download with real yt-dlp against a loopback HTTP server, and mirror lookup."""

from __future__ import annotations

import pickle
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from loopback import serve_directory

from aniportrait.media.download import (
    DOWNLOAD_ERROR_REASONS,
    VIDEO_EXTENSIONS,
    DownloadError,
    classify_download_error,
    download_video,
    find_in_mirror,
    ytdlp_version,
)

CLIP = "talking_hdtf_radio10_0.mp4"
CLIP_FRAMES = 62


@pytest.fixture(scope="module")
def served(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder) of a loopback HTTP server holding ``clip.mp4`` and ``clip.ts``."""
    root = tmp_path_factory.mktemp("www")
    shutil.copyfile(media_dir / CLIP, root / "clip.mp4")
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(root / "clip.mp4"),
         "-c", "copy", "-f", "mpegts", str(root / "clip.ts")],
        check=True,
    )
    with serve_directory(root) as base:
        yield base, root


def _frame_count(path: Path) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-count_frames",
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout
    return int(out.strip())


def test_download_direct_link_is_byte_identical(served: tuple[str, Path], tmp_path: Path) -> None:
    base, root = served
    dest = tmp_path / "sources"
    path = download_video(f"{base}/clip.mp4", dest, "radio10", retries=1, socket_timeout=5)
    assert path == dest / "radio10.mp4"
    # The generic extractor streams a direct .mp4 link as is: no remux, same bytes.
    assert path.read_bytes() == (root / "clip.mp4").read_bytes()
    assert sorted(p.name for p in dest.iterdir()) == ["radio10.mp4"]


@pytest.mark.parametrize(
    "options",
    [{"max_height": 256}, {"max_height": 256, "with_audio": False}, {"with_audio": False}],
)
def test_download_format_options_fall_back_for_direct_links(
    served: tuple[str, Path], tmp_path: Path, options: dict[str, object]
) -> None:
    # A direct link has one format of unknown height: the height filters fall through.
    base, root = served
    path = download_video(f"{base}/clip.mp4", tmp_path, "clip", retries=0, socket_timeout=5, **options)
    assert path.read_bytes() == (root / "clip.mp4").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_download_existing_result_is_reused(served: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served
    dest = tmp_path / "sources"
    dest.mkdir()
    (dest / "radio10.webm").write_bytes(b"already here")
    # The URL does not exist: a download attempt would fail.
    path = download_video(f"{base}/missing.mp4", dest, "radio10", retries=0, socket_timeout=2)
    assert path == dest / "radio10.webm"
    assert path.read_bytes() == b"already here"


def test_download_unknown_container_is_remuxed_to_mkv(served: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served
    dest = tmp_path / "sources"
    path = download_video(f"{base}/clip.ts", dest, "radio10_ts", retries=1, socket_timeout=5)
    assert path == dest / "radio10_ts.mkv"
    assert _frame_count(path) == CLIP_FRAMES
    assert sorted(p.name for p in dest.iterdir()) == ["radio10_ts.mkv"]


def test_download_404_is_http_error(served: tuple[str, Path], tmp_path: Path) -> None:
    base, _ = served
    dest = tmp_path / "sources"
    url = f"{base}/missing.mp4"
    with pytest.raises(DownloadError) as info:
        download_video(url, dest, "missing", retries=0, socket_timeout=2)
    err = info.value
    assert err.reason == "http_error"
    assert url in str(err) and "http_error" in str(err) and "HTTP Error 404" in str(err)
    assert "\n" not in str(err)
    assert list(dest.iterdir()) == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_download_closed_port_is_network(tmp_path: Path) -> None:
    dest = tmp_path / "sources"
    url = f"http://127.0.0.1:{_free_port()}/clip.mp4"
    with pytest.raises(DownloadError) as info:
        download_video(url, dest, "clip", retries=0, socket_timeout=1)
    assert info.value.reason == "network"
    assert "Connection refused" in info.value.detail
    assert list(dest.iterdir()) == []


def test_download_silent_server_times_out_as_network(tmp_path: Path) -> None:
    dest = tmp_path / "sources"
    with socket.socket() as sock:  # accepts connections (kernel backlog) but never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/clip.mp4"
        start = time.monotonic()
        with pytest.raises(DownloadError) as info:
            download_video(url, dest, "clip", retries=0, socket_timeout=0.5)
    assert info.value.reason == "network"
    assert "timed out" in info.value.detail
    assert time.monotonic() - start < 5
    assert list(dest.iterdir()) == []


def test_download_unsafe_name_rejected_before_network(tmp_path: Path) -> None:
    # Port 9 on loopback is closed: reaching the network would raise DownloadError instead.
    for name in ("../evil", "a;rm -rf", "", "x.mp4"):
        with pytest.raises(ValueError):
            download_video("http://127.0.0.1:9/clip.mp4", tmp_path / "d", name)
    assert not (tmp_path / "d").exists()
    assert not (tmp_path / "evil.mp4").exists()


@pytest.mark.parametrize(
    ("kwargs"),
    [{"max_height": 0}, {"retries": -1}, {"socket_timeout": 0}],
)
def test_download_bad_options_rejected(tmp_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        download_video("http://127.0.0.1:9/clip.mp4", tmp_path, "clip", **kwargs)


# Real messages: as raised by this yt-dlp against loopback (http_error, network), or as
# printed by yt-dlp for YouTube (the reason text is YouTube's, yt-dlp prefixes
# "[youtube] <id>: " and, for "Sign in" reasons, appends its cookies hint; see
# extractor/youtube/_video.py `raise_no_formats(reason, ...)`, _base.py
# `_youtube_login_hint`, common.py `raise_geo_restricted`).
_COOKIES_HINT = (
    "Use --cookies-from-browser or --cookies for the authentication. See  "
    "https://github.com/yt-dlp/yt-dlp/wiki/FAQ#how-do-i-pass-cookies-to-yt-dlp  for how to "
    "manually pass cookies. Also see  "
    "https://github.com/yt-dlp/yt-dlp/wiki/Extractors#exporting-youtube-cookies  for tips on "
    "effectively exporting YouTube cookies"
)


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (f"ERROR: [youtube] tpUr8xVxj-w: Sign in to confirm you\u2019re not a bot. {_COOKIES_HINT}",
         "bot_check"),
        ("ERROR: Sign in to confirm you're not a bot. This helps protect our community.", "bot_check"),
        ("[youtube] abc: This content isn't available, try again later. The current session has "
         "been rate-limited by YouTube for up to an hour.", "bot_check"),
        (f"[youtube] abc: Private video. Sign in if you've been granted access to this video. "
         f"{_COOKIES_HINT}", "private"),
        ("ERROR: [youtube] abc: Video unavailable. This video is private", "private"),
        ("ERROR: [youtube] abc: Video unavailable. This video has been removed by the uploader",
         "removed"),
        ("ERROR: Video unavailable\nThis video is no longer available because the YouTube account "
         "associated with this video has been terminated.", "removed"),
        ("ERROR: [youtube] Saix8wDp2iA: This video has been removed for violating YouTube's Terms "
         "of Service", "removed"),
        ("ERROR: [youtube] ltcd1B8WyTM: Video unavailable. The uploader has not made this video "
         "available in your country", "geo_blocked"),
        ("ERROR: [vimeo] 1: This video is not available from your location due to geo restriction",
         "geo_blocked"),
        (f"ERROR: [youtube] M3GgCZFVBIo: Sign in to confirm your age. This video may be "
         f"inappropriate for some users. {_COOKIES_HINT}", "age_restricted"),
        ("ERROR: [youtube] abc: Video unavailable", "unavailable"),
        ("ERROR: [youtube] abc: Video unavailable. This video is unavailable", "unavailable"),
        ("ERROR: [youtube] abc: This video is not available.", "unavailable"),
        ("ERROR: [generic] missing: Unable to download webpage: HTTP Error 404: File not found "
         "(caused by <HTTPError 404: File not found>)", "http_error"),
        ("ERROR: unable to download video data: HTTP Error 403: Forbidden", "http_error"),
        ("ERROR: [youtube] abc: Unable to download webpage: HTTP Error 404: Not Found "
         "(caused by <HTTPError 404: Not Found>)", "http_error"),
        ("ERROR: [generic] clip: Unable to download webpage: HTTPConnection(host='127.0.0.1', "
         "port=34105): Failed to establish a new connection: [Errno 111] Connection refused "
         "(caused by TransportError(\"HTTPConnection(host='127.0.0.1', port=34105): Failed to "
         "establish a new connection: [Errno 111] Connection refused\"))", "network"),
        ("ERROR: [generic] clip: Unable to download webpage: HTTPConnectionPool(host='127.0.0.1', "
         "port=43993): Read timed out. (read timeout=0.5)", "network"),
        ("ERROR: [generic] clip: Unable to download webpage: HTTPConnection(host='nonexistent."
         "invalid', port=80): Failed to resolve 'nonexistent.invalid' ([Errno -2] Name or service "
         "not known)", "network"),
        ("ERROR: [youtube] abc: Requested format is not available. Use --list-formats for a list "
         "of available formats", "other"),
        ("ERROR: Unsupported URL: http://example.com/", "other"),
    ],
)
def test_classify_download_error(message: str, reason: str) -> None:
    assert classify_download_error(message) == reason
    assert reason in DOWNLOAD_ERROR_REASONS


def test_download_error_message_and_pickle() -> None:
    err = DownloadError("https://youtu.be/x", "removed", "Video unavailable\nThis video has been removed")
    assert str(err) == (
        "download of https://youtu.be/x failed (removed): "
        "Video unavailable This video has been removed"
    )
    back = pickle.loads(pickle.dumps(err))
    assert (back.url, back.reason, str(back)) == (err.url, err.reason, str(err))
    assert str(DownloadError("u", "not_found_in_mirror")) == "download of u failed (not_found_in_mirror)"
    with pytest.raises(ValueError):
        DownloadError("u", "gone")


def test_find_in_mirror_extension_and_name_order(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "b.webm").write_bytes(b"b")
    (mirror / "a.mkv").write_bytes(b"a-mkv")
    (mirror / "a.mov").write_bytes(b"a-mov")
    assert find_in_mirror(mirror, ["b"]) == mirror / "b.webm"
    assert find_in_mirror(str(mirror), ["b", "a"]) == mirror / "b.webm"
    # Extensions are tried in VIDEO_EXTENSIONS order: .mkv before .mov.
    assert VIDEO_EXTENSIONS.index(".mkv") < VIDEO_EXTENSIONS.index(".mov")
    assert find_in_mirror(mirror, ["a", "b"]) == mirror / "a.mkv"
    assert find_in_mirror(mirror, ["zz", "a"]) == mirror / "a.mkv"
    assert find_in_mirror(mirror, ["zz"]) is None
    assert find_in_mirror(mirror, []) is None
    assert find_in_mirror(tmp_path / "no_such_mirror", ["a"]) is None


def test_find_in_mirror_never_joins_unsafe_names(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    # What a naive join of "../x" + ".mp4" would hit, outside the mirror.
    (tmp_path / "x.mp4").write_bytes(b"outside")
    (mirror / "a;rm -rf.mp4").write_bytes(b"unsafe name inside")
    assert (mirror / "../x.mp4").is_file()
    assert find_in_mirror(mirror, ["../x"]) is None
    assert find_in_mirror(mirror, ["a;rm -rf"]) is None
    assert find_in_mirror(mirror, [str(tmp_path / "x")]) is None
    (mirror / "ok.flv").write_bytes(b"ok")
    assert find_in_mirror(mirror, ["../x", "a;rm -rf", "ok"]) == mirror / "ok.flv"


def test_find_in_mirror_ignores_directories_accepts_symlinks(tmp_path: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "d.mp4").mkdir()
    (mirror / "d.webm").write_bytes(b"d")
    assert find_in_mirror(mirror, ["d"]) == mirror / "d.webm"
    (mirror / "only_dir.mp4").mkdir()
    assert find_in_mirror(mirror, ["only_dir"]) is None
    target = tmp_path / "real.mp4"
    target.write_bytes(b"real")
    (mirror / "link.mp4").symlink_to(target)
    assert find_in_mirror(mirror, ["link"]) == mirror / "link.mp4"
    (mirror / "dangling.mp4").symlink_to(tmp_path / "gone.mp4")
    assert find_in_mirror(mirror, ["dangling"]) is None


def test_ytdlp_version() -> None:
    import yt_dlp.version

    assert ytdlp_version() == yt_dlp.version.__version__
    assert ytdlp_version()[:4].isdigit()
