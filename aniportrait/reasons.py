"""Every reason a clip can fail or be removed: the one table behind the manifest's ``reason``.

Each manifest row that is not ``ok`` carries a short ``reason`` code next to its readable
``error``; ``stats`` counts rows per code and the README's table of reasons lists the same
entries (a test keeps the two in step). Errors raised on purpose carry their code as a
``reason`` attribute (:class:`~aniportrait.media.probe.MediaError`,
:class:`~aniportrait.media.download.DownloadError`, ...); :func:`reason_of` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reason:
    """A reason code, the stage that gives it, what it means and what a user can do."""

    code: str
    stage: str
    meaning: str
    action: str


#: Every reason code, in the order of the stages that give them.
REASONS: dict[str, Reason] = {r.code: r for r in (
    Reason("bad_metadata", "metadata", "a line, JSON entry or meta-info file could not be read; the error names "
           "the file and line (or JSON key) and what is wrong", "fix the entry; the other clips build without it"),
    Reason("no_clips", "segment", "`--dataset folder`: the video has no stretch of at least `--min-clip-s` "
           "with a face within one shot (the error gives the faces found and scene cuts)", "check that the face "
           "is visible and big enough; lower `--min-clip-s`"),
    Reason("not_found_in_mirror", "download", "the source is not in `--mirror` and has no URL, or "
           "`--no-download` forbids downloading it", "add `<youtube id>.mp4` (or `.webm`, ...) to the mirror, or "
           "build without `--no-download`"),
    Reason("removed", "download", "the video was removed from YouTube", "none: the source is gone"),
    Reason("private", "download", "the video is private", "none, unless you have access (cookies)"),
    Reason("unavailable", "download", "YouTube says the video is unavailable", "retry later (`--retry-failed`)"),
    Reason("geo_blocked", "download", "not available from this country", "run from another region or a proxy"),
    Reason("age_restricted", "download", "needs a signed-in, age-confirmed account", "cookies of such an account"),
    Reason("bot_check", "download", "YouTube asked to sign in to confirm you are not a bot, or answered 429, "
           "on every try of the source", "wait, then `--retry-failed` with `--cookies`, a lower `--download-rate` "
           "or a `--proxy`"),
    Reason("http_error", "download", "the server answered an HTTP error", "check the URL; `--retry-failed`"),
    Reason("network", "download", "no connection (refused, timed out, no DNS, proxy unreachable) or the "
           "connection was cut mid-download", "check the network and `--proxy`; `--retry-failed` (a cut download "
           "goes on where it stopped)"),
    Reason("bad_download", "download", "the download finished but ffprobe finds no video stream or no duration "
           "in it (an error page, a broken file); it is deleted", "check the URL; `--retry-failed` downloads it "
           "again"),
    Reason("other", "download", "yt-dlp failed for another reason (its message is the error)", "read the error"),
    Reason("unreadable_source", "clip", "ffprobe cannot read the source: empty, not a media file, or cut short "
           "before its index", "download it again (delete it from the mirror or work area)"),
    Reason("no_video_stream", "clip", "the source has no video stream (audio only)", "replace the source"),
    Reason("span_out_of_range", "clip", "the clip's span starts after the source ends, or ends more than one "
           "output frame past its end (span and source duration in the error)",
           "check that the download is the full video; fix the span"),
    Reason("crop_out_of_frame", "clip", "the crop box lies outside the source frame", "check the crop and the "
           "downloaded resolution"),
    Reason("corrupt_source", "clip", "decoding the span hit errors (corrupt or missing packets, truncated file); "
           "the error gives frames written vs expected. `--dataset folder`: the video stops decoding more than "
           "1 s before its declared end; the row spans the rest (its earlier clips build)",
           "download the source again (your own video: copy or export it again)"),
    Reason("media_error", "clip", "ffmpeg could not cut or encode the clip (its message is the error)",
           "read the error"),
    Reason("too_short", "clip", "fewer frames than `--min-frames` (filtered, frame count in the row)",
           "lower `--min-frames` if short clips are wanted"),
    Reason("low_face_rate", "face", "a face was found in fewer frames than `--min-face-rate`",
           "check the crop; lower `--min-face-rate`"),
    Reason("scene_cut", "filter", "the clip crosses a scene cut: split into shots (`split`) or removed "
           "(`reject`, or a shot that still crosses one)", "`--scene-cuts keep` to keep such clips whole"),
    Reason("multiple_faces", "filter", "a second face at least half the main face's height is in more than "
           "`--max-second-face-rate` of the sampled frames (filtered)", "raise `--max-second-face-rate`"),
    Reason("filter_rule", "filter", "the clip breaks a `--filter` rule (the error names it: `filtered:<rule>`)",
           "change the rule"),
    Reason("internal_error", "any", "an unexpected error (a bug); the error names the exception",
           "report it with the manifest row"),
)}


def reason_of(exc: BaseException, default: str = "internal_error") -> str:
    """The reason code an exception carries, or ``default`` when it carries none."""
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) and reason in REASONS else default
