"""A corpus of real-world bad or unusual source videos, built from ``shared/fixtures/media``.

``make_corpus(media_dir, dest)`` writes one file per entry of ``CORPUS`` into ``dest`` as
``<name>.<ext>`` and returns ``{name: path}``. Every name is exactly 11 characters of
``[A-Za-z0-9_-]`` so it can stand in for a YouTube id in a mirror folder.

Files are made with ffmpeg (argument lists, never a shell) plus small byte edits, are
2-4 s long and are deterministic: the same bytes on every run with the same ffmpeg build
(bit-exact flags, no metadata, one encoder thread, seeded garbage).

ffmpeg 5.1 notes: it has no ``-display_rotation`` (added in 6.0), and its legacy
``-metadata:s:v rotate=90`` writes the matrix with the opposite sign (ffprobe rotation +90,
i.e. counter-clockwise), unlike older ffmpeg and phones; so ``rotated_90_`` writes the tkhd
matrix itself, the same on every ffmpeg. libx264 refuses odd sizes in yuv420p, so
``odd_513x317`` is yuv444p (High 4:4:4 Predictive).
"""

from __future__ import annotations

import json
import random
import struct
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

ZERO_BYTES = "zero_bytes_"
TRUNCATED = "truncated__"
CORRUPT_MID = "corrupt_mid"
MOOV_END_CUT = "moovend_cut"
NOT_A_VIDEO = "not_a_video"
AUDIO_ONLY = "audio_only_"
VFR = "var_fps_vfr"
ROTATED = "rotated_90_"
ODD_SIZE = "odd_513x317"
VP9_WEBM = "vp9_webm___"
UHD_4K = "uhd_4k_2160"
THREE_FRAMES = "three_frame"
TWO_FACES = "two_faces__"
FACE_LEAVES = "face_leaves"
SILENT_AUDIO = "silent_aud_"
NO_AUDIO = "no_audio___"
GOOD_TALKING = "good_talker"
HEVC_PORTRAIT = "hevc_portrt"

CORPUS: dict[str, str] = {
    ZERO_BYTES: "empty .mp4 (0 bytes)",
    TRUNCATED: "faststart 512x512 H.264+AAC mp4, 3 s, cut to 45% of its bytes: moov says 3 s, "
    "only the first part of mdat decodes",
    CORRUPT_MID: "512x512 H.264 (GOP 10)+AAC mp4, 3 s, video packets 30-59 of 90 overwritten "
    "(after their first 8 bytes) with seeded garbage inside mdat; decoder errors, exit 0",
    MOOV_END_CUT: "mp4 without faststart (moov after mdat) cut to 60% of its bytes: moov lost, "
    "unreadable",
    NOT_A_VIDEO: "a short text file named .mp4",
    AUDIO_ONLY: "mp4 with only an AAC track (speech_lyl, 3 s, 16 kHz mono), no video",
    VFR: "variable frame rate 512x512 H.264+AAC mp4, 3 s: frames dropped irregularly "
    "(n%4==1 or n%7==3), timestamps kept, so frame gaps are 1-3 ticks of 1/30 s",
    ROTATED: "384x512 portrait talking face stored turned 90 deg ccw as 512x384, tkhd matrix "
    "'rotate 90 cw' like a phone (ffprobe rotation -90): upright only when it is applied",
    ODD_SIZE: "513x317 (odd width and height) H.264 High 4:4:4 yuv444p + AAC in .mkv, 3 s",
    VP9_WEBM: "VP9 + Opus in .webm, 512x512, 3 s",
    UHD_4K: "3840x2160 H.264+AAC mp4, 1.5 s: the face upscaled to 2160x2160 and padded "
    "black left and right",
    THREE_FRAMES: "exactly 3 video frames (0.1 s at 30 fps) with 0.1 s of AAC audio",
    TWO_FACES: "two different people (talking_lyl and talking_hdtf_radio10, 256x256 each) side "
    "by side, padded to 512x512, 3 s, talking_lyl audio",
    FACE_LEAVES: "512x512 talking face over grey, 4 s; it slides out right at 1.0-1.25 s, is gone "
    "1.25-2.75 s (empty grey frames) and slides back by 3.0 s; with audio",
    SILENT_AUDIO: "512x512 talking face, 3 s, with an all-zero AAC track (anullsrc)",
    NO_AUDIO: "512x512 talking face, 3 s, no audio stream",
    GOOD_TALKING: "valid control: 512x512 30 fps H.264+AAC talking face, 3 s",
    HEVC_PORTRAIT: "raw_seated HEVC 1080x1920 25 fps + AAC stereo, first 3 s, stream copy",
}

LYL = "talking_lyl_7s.mp4"
HDTF = "talking_hdtf_radio10_0.mp4"
SEATED = "raw_seated_1080x1920_hevc.mp4"
SPEECH = "speech_lyl.wav"

BITEXACT = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact",
            "-map_metadata", "-1", "-threads", "1"]
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-crf", "28", "-pix_fmt", "yuv420p"]
AAC = ["-c:a", "aac", "-b:a", "48k"]
CROP = "crop=512:512"  # talking_lyl is 514x516: centre crop to 512x512
# tkhd matrices {a b u; c d v; x y w} (16.16 except u, v, w in 2.30): identity, and the
# one phones write for portrait video (ffprobe: rotation -90; old "rotate" tag 90).
IDENTITY = struct.pack(">9i", 1 << 16, 0, 0, 0, 1 << 16, 0, 0, 0, 1 << 30)
ROTATE_CW90 = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 0, 0, 1 << 30)


def ffmpeg(*args: str | Path | float) -> None:
    """Run ffmpeg quietly with an argument list; raise on failure."""
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y",
                    *map(str, args)], check=True)


def _talking(src: Path, out: Path, seconds: float, *extra: str | float, vf: str = CROP) -> None:
    """talking_lyl, first ``seconds``, filtered by ``vf``, H.264 + AAC (``extra`` before out)."""
    ffmpeg("-t", seconds, "-i", src, "-vf", vf, *X264, *AAC, *BITEXACT, *extra, out)


def cut_bytes(src: Path, out: Path, fraction: float) -> None:
    """Write the first ``fraction`` of ``src``'s bytes to ``out``; delete ``src``."""
    data = src.read_bytes()
    out.write_bytes(data[: int(len(data) * fraction)])
    src.unlink()


def zero_bytes(media: Path, out: Path) -> None:
    """An empty file."""
    out.write_bytes(b"")


def truncated(media: Path, out: Path) -> None:
    """A faststart mp4 (moov first) cut to 45% of its bytes."""
    tmp = out.with_suffix(".full.mp4")
    _talking(media / LYL, tmp, 3, "-movflags", "+faststart")
    cut_bytes(tmp, out, 0.45)


def corrupt_mid(media: Path, out: Path) -> None:
    """A GOP-10 mp4 whose middle third of video packets is garbage (container intact)."""
    _talking(media / LYL, out, 3, "-g", "10")
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pos,size", "-of", "json", str(out)], check=True, capture_output=True)
    packets = json.loads(probe.stdout)["packets"]
    data = bytearray(out.read_bytes())
    rng = random.Random(20240607)
    third = len(packets) // 3
    for p in packets[third: 2 * third]:
        pos, size = int(p["pos"]), int(p["size"])
        keep = 8  # NAL length + NAL header + start of slice header stay valid
        if size > keep:
            data[pos + keep: pos + size] = rng.randbytes(size - keep)
    out.write_bytes(bytes(data))


def moov_end_cut(media: Path, out: Path) -> None:
    """An mp4 with moov after mdat, cut before the moov."""
    tmp = out.with_suffix(".full.mp4")
    _talking(media / LYL, tmp, 3)
    data = tmp.read_bytes()
    assert data.find(b"moov") > data.find(b"mdat") > 0, "expected moov after mdat"
    cut_bytes(tmp, out, 0.60)


def not_a_video(media: Path, out: Path) -> None:
    """Plain text with a video extension."""
    out.write_text("404: Not Found. This is not a video, just text saved as .mp4.\n")


def audio_only(media: Path, out: Path) -> None:
    """AAC only, no video stream."""
    ffmpeg("-t", 3, "-i", media / SPEECH, "-vn", "-ac", 1, "-ar", 16000, *AAC, *BITEXACT, out)


def vfr(media: Path, out: Path) -> None:
    """Irregular frame drops with timestamps kept (-fps_mode vfr)."""
    _talking(media / LYL, out, 3, "-fps_mode", "vfr",
             vf=f"{CROP},select='not(eq(mod(n\\,4)\\,1))*not(eq(mod(n\\,7)\\,3))'")


def rotated(media: Path, out: Path) -> None:
    """Encode a 384x512 portrait turned 90 degrees counter-clockwise (stored 512x384), then
    write a phone-style "rotate 90 clockwise" matrix into the video tkhd by hand."""
    _talking(media / LYL, out, 3, "-movflags", "+faststart", vf="crop=384:512,transpose=cclock")
    data = bytearray(out.read_bytes())
    at = data.find(b"tkhd") + 4  # faststart: the first tkhd is in moov, and is the video's
    assert data[at] == 0, "expected a version-0 tkhd"
    matrix = at + 4 + 20 + 16  # version/flags, times/id/duration, reserved/layer/volume
    assert data[matrix: matrix + 36] == IDENTITY and data[matrix + 36: matrix + 44] == \
        struct.pack(">II", 512 << 16, 384 << 16), "unexpected tkhd layout"
    data[matrix: matrix + 36] = ROTATE_CW90
    out.write_bytes(bytes(data))


def odd_size(media: Path, out: Path) -> None:
    """513x317 yuv444p H.264 in Matroska (libx264 refuses odd yuv420p)."""
    ffmpeg("-t", 3, "-i", media / LYL, "-vf", "scale=316:317,pad=513:317:(ow-iw)/2:0",
           *X264[:-2], "-pix_fmt", "yuv444p", *AAC, *BITEXACT, out)


def vp9_webm(media: Path, out: Path) -> None:
    """VP9 realtime + Opus in WebM, constant quality (a low fixed bitrate starts so blurred
    that its sharpening reads as a scene cut)."""
    ffmpeg("-t", 3, "-i", media / LYL, "-vf", CROP, "-c:v", "libvpx-vp9", "-deadline",
           "realtime", "-cpu-used", 8, "-crf", 32, "-b:v", 0, "-c:a", "libopus", "-b:a", "32k",
           *BITEXACT, out)


def uhd_4k(media: Path, out: Path) -> None:
    """3840x2160, 1.5 s."""
    upscale = "scale=2160:2160:flags=fast_bilinear,pad=3840:2160:840:0"
    _talking(media / LYL, out, 1.5, vf=f"{CROP},{upscale}")


def three_frames(media: Path, out: Path) -> None:
    """Exactly three video frames and 0.1 s of audio."""
    _talking(media / LYL, out, 1, "-frames:v", 3, "-t", 0.1)


def two_faces(media: Path, out: Path) -> None:
    """Two different talking people side by side in one 512x512 frame."""
    graph = (f"[0:v]{CROP},scale=256:256,fps=30[a];"
             "[1:v]scale=256:256,fps=30[b];"
             "[a][b]hstack,pad=512:512:0:128[v]")
    ffmpeg("-t", 3, "-i", media / LYL, "-stream_loop", 1, "-i", media / HDTF,
           "-filter_complex", graph, "-map", "[v]", "-map", "0:a", "-t", 3,
           *X264, *AAC, *BITEXACT, out)


def face_leaves(media: Path, out: Path) -> None:
    """The face slides out of frame, stays out 1.5 s, and comes back."""
    x = "'512*min(1,max(0,min((t-1)/0.25,(3-t)/0.25)))'"
    graph = (f"color=c=gray:s=512x512:r=30:d=4[bg];[0:v]{CROP},setpts=PTS-STARTPTS[fg];"
             f"[bg][fg]overlay=x={x}:y=0:eof_action=pass[v]")
    ffmpeg("-t", 4, "-i", media / LYL, "-filter_complex", graph, "-map", "[v]",
           "-map", "0:a", "-t", 4, *X264, *AAC, *BITEXACT, out)


def silent_audio(media: Path, out: Path) -> None:
    """Real video with an all-zero audio track."""
    ffmpeg("-t", 3, "-i", media / LYL, "-f", "lavfi", "-t", 3, "-i",
           "anullsrc=r=16000:cl=mono", "-map", "0:v", "-map", "1:a", "-vf", CROP,
           *X264, *AAC, *BITEXACT, out)


def no_audio(media: Path, out: Path) -> None:
    """Real video, no audio stream."""
    _talking(media / LYL, out, 3, "-an")


def good_talking(media: Path, out: Path) -> None:
    """A plain valid control clip."""
    _talking(media / LYL, out, 3)


def hevc_portrait(media: Path, out: Path) -> None:
    """The raw HEVC portrait source, first 3 s, stream copy."""
    ffmpeg("-t", 3, "-i", media / SEATED, "-c", "copy", *BITEXACT, out)


BUILDERS: dict[str, tuple[str, Callable[[Path, Path], None]]] = {
    ZERO_BYTES: ("mp4", zero_bytes),
    TRUNCATED: ("mp4", truncated),
    CORRUPT_MID: ("mp4", corrupt_mid),
    MOOV_END_CUT: ("mp4", moov_end_cut),
    NOT_A_VIDEO: ("mp4", not_a_video),
    AUDIO_ONLY: ("mp4", audio_only),
    VFR: ("mp4", vfr),
    ROTATED: ("mp4", rotated),
    ODD_SIZE: ("mkv", odd_size),
    VP9_WEBM: ("webm", vp9_webm),
    UHD_4K: ("mp4", uhd_4k),
    THREE_FRAMES: ("mp4", three_frames),
    TWO_FACES: ("mp4", two_faces),
    FACE_LEAVES: ("mp4", face_leaves),
    SILENT_AUDIO: ("mp4", silent_audio),
    NO_AUDIO: ("mp4", no_audio),
    GOOD_TALKING: ("mp4", good_talking),
    HEVC_PORTRAIT: ("mp4", hevc_portrait),
}
assert BUILDERS.keys() == CORPUS.keys()


def make_corpus(media_dir: Path, dest: Path, workers: int = 2) -> dict[str, Path]:
    """Build every corpus file into ``dest`` (``workers`` ffmpeg at a time, each
    single-threaded); return ``{name: path}`` in ``CORPUS`` order."""
    dest.mkdir(parents=True, exist_ok=True)
    files = {name: dest / f"{name}.{ext}" for name, (ext, _) in BUILDERS.items()}
    longest_first = sorted(BUILDERS, key=lambda name: name != UHD_4K)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        jobs = [pool.submit(BUILDERS[n][1], Path(media_dir), files[n]) for n in longest_first]
        for job in jobs:
            job.result()
    return files
