"""Downloads at dataset scale (issue 19): cookies, proxy, yt-dlp options, the download gate
(rate, back-off, circuit breaker), ``--no-download``, resumed partial downloads, and no
secret in any output, log or message.

Real yt-dlp against loopback servers the tests start (``loopback.MediaServer``: cookies,
429 answers, cut connections, byte ranges; ``loopback.forwarding_proxy``). The gate's
logic is tested with an injected clock; the builds are tiny (64 px, one 1 s clip per source).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from loopback import MediaServer, Request, forwarding_proxy
from rich.console import Console
from sample_lists import write_sample_lists

from aniportrait.media.cut import CutSettings
from aniportrait.media.download import (
    DownloadError,
    DownloadSettings,
    check_cookies_file,
    check_proxy,
    download_video,
    parse_ytdlp_option,
    read_ytdlp_config,
    redact,
    ytdlp_param_names,
)
from aniportrait.media.throttle import MAX_INTERVAL_S, DownloadGate
from aniportrait.schema import ClipRecord, ClipState
from pipelines.build.config import BuildConfig
from pipelines.build.run import run_build
from pipelines.build.stages.chain import HALT_COLUMN, METRICS_COLUMN
from pipelines.build.stages.fetch import STAGE, FetchSource
from pipelines.build.workarea import WorkArea

REPO = Path(__file__).resolve().parents[1]
CLIP = "talking_hdtf_radio10_0.mp4"
COOKIE_VALUE = "c00kie-S3CRET-value"
PROXY_PASSWORD = "pr0xy-S3CRET-pass"
SIZE = "64"


@pytest.fixture(scope="module")
def video(media_dir: Path) -> bytes:
    return (media_dir / CLIP).read_bytes()


@pytest.fixture
def cookies(tmp_path: Path) -> Path:
    """A Netscape cookies file with one cookie for 127.0.0.1, read-only like a user's export."""
    path = tmp_path / "cookies.txt"
    path.write_text(f"# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tSID\t{COOKIE_VALUE}\n")
    path.chmod(0o400)
    return path


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _own_cookie_copies() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("aniportrait-cookies-*")}


# --------------------------------------------------------------------------- the gate


def test_gate_spaces_downloads_at_the_rate() -> None:
    clock = FakeClock()
    gate = DownloadGate(rate_per_min=30, clock=clock)  # one start every 2 s
    assert gate.ask() == 0.0
    assert gate.ask() == pytest.approx(2.0)
    clock.now += 1.5
    assert gate.ask() == pytest.approx(0.5)
    clock.now += 0.5
    assert gate.ask() == 0.0
    clock.now += 10  # a full bucket holds one token: no burst after a pause
    assert gate.ask() == 0.0 and gate.ask() == pytest.approx(2.0)
    assert gate.stats()["started"] == 3
    unlimited = DownloadGate(clock=clock)
    assert [unlimited.ask() for _ in range(5)] == [0.0] * 5


def test_gate_backs_off_on_bot_checks_and_recovers() -> None:
    clock = FakeClock()
    gate = DownloadGate(rate_per_min=60, max_bot_checks=10, clock=clock)
    assert gate.ask() == 0.0
    assert gate.report(bot_check=True) is False
    assert gate.interval_s == 2.0 and gate.ask() == pytest.approx(2.0), "everyone waits the doubled interval"
    gate.report(bot_check=True)
    assert gate.interval_s == 4.0
    gate.report(bot_check=False)
    assert gate.interval_s == 2.0, "a normal answer halves the back-off"
    gate.report(bot_check=False)
    assert gate.interval_s == 1.0, "back to the rate"
    for _ in range(9):
        gate.report(bot_check=True)
        gate.report(bot_check=False)  # never in a row: no stop
    assert not gate.stopped and gate.interval_s <= MAX_INTERVAL_S
    assert gate.stats() == {"started": 1, "bot_checks": 11, "longest_interval_s": 4.0, "stopped": False}
    no_rate = DownloadGate(first_backoff_s=10, clock=clock)
    no_rate.report(bot_check=True)
    assert no_rate.interval_s == 10 and no_rate.ask() == pytest.approx(10)
    for _ in range(20):
        no_rate.report(bot_check=True)
    assert no_rate.interval_s == MAX_INTERVAL_S


def test_gate_breaker_opens_after_bot_checks_in_a_row_and_stays_open() -> None:
    gate = DownloadGate(max_bot_checks=3, first_backoff_s=0, clock=FakeClock())
    assert [gate.report(bot_check=True) for _ in range(2)] == [False, False]
    gate.report(bot_check=False)  # the run is broken
    assert [gate.report(bot_check=True) for _ in range(3)] == [False, False, True]
    assert gate.stopped and gate.ask() is None
    gate.report(bot_check=False)  # a download started before the stop ended well: still stopped
    assert gate.stopped and gate.ask() is None
    assert "3 downloads in a row" in gate.stop_message() and "--cookies" in gate.stop_message()
    with pytest.raises(ValueError):
        DownloadGate(rate_per_min=0)
    with pytest.raises(ValueError):
        DownloadGate(max_bot_checks=0)


# --------------------------------------------------------------------------- settings


def test_ytdlp_option_names_come_from_ytdlp() -> None:
    names = ytdlp_param_names()
    assert {"ratelimit", "sleep_interval_requests", "extractor_args", "cookiefile", "proxy", "continuedl",
            "concurrent_fragment_downloads", "http_headers"} <= names
    assert parse_ytdlp_option("ratelimit=1000000") == ("ratelimit", 1000000)
    assert parse_ytdlp_option("sleep_interval_requests=1.5") == ("sleep_interval_requests", 1.5)
    assert parse_ytdlp_option("nocheckcertificate=true") == ("nocheckcertificate", True)
    assert parse_ytdlp_option('extractor_args={"youtube": {"player_client": ["web"]}}') == (
        "extractor_args", {"youtube": {"player_client": ["web"]}})
    assert parse_ytdlp_option("impersonate=chrome") == ("impersonate", "chrome")
    with pytest.raises(ValueError, match="'ratelimt' is not a yt-dlp option.*did you mean ratelimit"):
        parse_ytdlp_option("ratelimt=5")
    with pytest.raises(ValueError, match="set by the build itself"):
        parse_ytdlp_option("outtmpl=%(id)s.%(ext)s")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_ytdlp_option("ratelimit")


def test_ytdlp_config_is_read_by_ytdlps_parser(tmp_path: Path) -> None:
    config = tmp_path / "yt-dlp.conf"
    config.write_text(f"# a comment\n--limit-rate 2M\n--sleep-requests 1.5\n"
                      f"--proxy http://user:{PROXY_PASSWORD}@127.0.0.1:9\n--extractor-args youtube:player_client=web\n")
    assert read_ytdlp_config(config) == {
        "ratelimit": 2 * 1024 * 1024, "sleep_interval_requests": 1.5,
        "proxy": f"http://user:{PROXY_PASSWORD}@127.0.0.1:9",
        "extractor_args": {"youtube": {"player_client": ["web"]}}}
    config.write_text("--no-such-option\n")
    with pytest.raises(ValueError, match="no such option: --no-such-option"):
        read_ytdlp_config(config)
    config.write_text("-o '%(id)s.%(ext)s'\n")
    with pytest.raises(ValueError, match="'outtmpl' is set by the build itself"):
        read_ytdlp_config(config)
    with pytest.raises(ValueError, match="does not exist"):
        read_ytdlp_config(tmp_path / "missing.conf")


def test_credentials_never_reach_a_message(tmp_path: Path) -> None:
    proxy = f"http://user:{PROXY_PASSWORD}@127.0.0.1:9"
    assert redact(f"proxy {proxy}/x, socks5://u:p@h:1080 and https://host/a@b") == (
        "proxy http://***@127.0.0.1:9/x, socks5://***@h:1080 and https://host/a@b")
    error = DownloadError(f"http://u:{PROXY_PASSWORD}@host/v", "network", f"Unable to connect to proxy {proxy}")
    assert PROXY_PASSWORD not in str(error) and "http://***@127.0.0.1:9" in str(error)
    with pytest.raises(ValueError) as bad:
        check_proxy(f"ftp://user:{PROXY_PASSWORD}@host:21")
    assert PROXY_PASSWORD not in str(bad.value) and "not a proxy URL" in str(bad.value)
    check_proxy(proxy)
    # A real failure through an unreachable proxy: the message names no credentials.
    with pytest.raises(DownloadError) as failed:
        download_video("http://127.0.0.1:9/v.mp4", tmp_path, "v", retries=0, socket_timeout=2,
                       settings=DownloadSettings(proxy=proxy))
    assert failed.value.reason == "network" and PROXY_PASSWORD not in str(failed.value)


def test_cookies_file_is_checked_without_printing_a_cookie(tmp_path: Path, cookies: Path,
                                                          capfd: pytest.CaptureFixture[str]) -> None:
    check_cookies_file(cookies)
    bad = tmp_path / "bad.txt"
    for text, message in ((f"SID={COOKIE_VALUE}\n", "not a Netscape cookies file"),
                          (f"# Netscape HTTP Cookie File\nSID={COOKIE_VALUE}\n", "line 2 is not a Netscape cookie"),
                          ("# Netscape HTTP Cookie File\n# nothing\n", "holds no cookie")):
        bad.write_text(text)
        with pytest.raises(ValueError, match=message) as info:
            check_cookies_file(bad)
        assert COOKIE_VALUE not in str(info.value)
    with pytest.raises(ValueError, match="cannot read --cookies"):
        check_cookies_file(tmp_path / "missing.txt")
    assert COOKIE_VALUE not in "".join(capfd.readouterr())


def test_download_settings_are_runtime_settings(cookies: Path) -> None:
    plain = BuildConfig(dataset="sample", out="o", work_dir="w")
    tuned = BuildConfig(dataset="sample", out="o", work_dir="w", cookies=str(cookies),
                        proxy=f"http://u:{PROXY_PASSWORD}@127.0.0.1:3128", ytdlp_options={"ratelimit": 1000},
                        download_rate=10, max_bot_checks=2, no_download=True)
    assert tuned.content_hash() == plain.content_hash()
    assert tuned.content_config() == plain.content_config()
    assert PROXY_PASSWORD not in json.dumps(tuned.content_config()) and str(cookies) not in json.dumps(
        tuned.content_config())
    with pytest.raises(ValueError, match="not a yt-dlp option"):
        BuildConfig(dataset="sample", out="o", work_dir="w", ytdlp_options={"nope": 1})
    with pytest.raises(ValueError, match="--download-rate"):
        BuildConfig(dataset="sample", out="o", work_dir="w", download_rate=0)


def test_cli_refuses_bad_download_options_before_starting(tmp_path: Path, cookies: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "cli", "build", "--out", str(tmp_path / "out"), "--cookies",
                           str(cookies), "--proxy", f"http://u:{PROXY_PASSWORD}@127.0.0.1:3128",
                           "--yt-dlp-option", "no_such_key=1"],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, "COLUMNS": "300"})
    assert done.returncode == 2, done.stderr
    assert "'no_such_key' is not a yt-dlp option" in " ".join(done.stderr.split()), done.stderr
    assert COOKIE_VALUE not in done.stderr + done.stdout and PROXY_PASSWORD not in done.stderr + done.stdout
    assert not (tmp_path / "out").exists()
    bad_cookies = tmp_path / "bad.txt"
    bad_cookies.write_text(f"SID={COOKIE_VALUE}\n")
    for settings, message in (({"cookies": str(bad_cookies)}, "is not a Netscape cookies file"),
                              ({"proxy": f"nonsense://u:{PROXY_PASSWORD}@h"}, "is not a proxy URL")):
        with pytest.raises(ValueError, match=message) as bad:  # the CLI's exit 2, as above
            BuildConfig(dataset="sample", out="o", work_dir="w", **settings)
        assert COOKIE_VALUE not in str(bad.value) and PROXY_PASSWORD not in str(bad.value)


# --------------------------------------------------------------------------- one download


def test_cookies_are_sent_from_a_private_copy(video: bytes, cookies: Path, tmp_path: Path) -> None:
    server = MediaServer({"v.mp4": video}, cookie=f"SID={COOKIE_VALUE}")
    before_file, before_copies = cookies.read_bytes(), _own_cookie_copies()
    with server.serve() as base:
        with pytest.raises(DownloadError) as refused:
            download_video(f"{base}/v.mp4", tmp_path / "a", "v", retries=0)
        path = download_video(f"{base}/v.mp4", tmp_path / "b", "v", retries=0,
                              settings=DownloadSettings(cookies=str(cookies)))
    assert refused.value.reason == "http_error" and "403" in refused.value.detail
    assert path.read_bytes() == video
    assert all(r.headers.get("Cookie") == f"SID={COOKIE_VALUE}" for r in server.requests[1:])
    assert cookies.read_bytes() == before_file, "yt-dlp rewrites its cookies file: never the user's"
    assert _own_cookie_copies() == before_copies, "the private copy is deleted"


def test_a_cut_download_continues_from_its_partial_file(video: bytes, tmp_path: Path) -> None:
    # Request 0 is yt-dlp's look at the link, request 1 the download: cut after 50000 bytes.
    server = MediaServer({"v.mp4": video}, cut_request=1, cut_after=50_000)
    dest = tmp_path / "sources"
    with server.serve() as base:
        with pytest.raises(DownloadError) as cut:
            download_video(f"{base}/v.mp4", dest, "v", retries=0)
        assert cut.value.reason == "network" and server.requests[1].sent == 50_000
        parts = list((dest / "v.partial").glob("*.part"))
        assert len(parts) == 1 and 0 < parts[0].stat().st_size <= 50_000
        kept = parts[0].stat().st_size
        path = download_video(f"{base}/v.mp4", dest, "v", retries=0)
    resumed = server.requests[-1]
    assert resumed.headers.get("Range") == f"bytes={kept}-" and resumed.status == 206
    assert resumed.sent == len(video) - kept < len(video)
    assert path.read_bytes() == video
    assert sorted(p.name for p in dest.iterdir()) == ["v.mp4"]


def test_a_download_that_is_no_video_fails_as_bad_download(tmp_path: Path) -> None:
    server = MediaServer({"v.mp4": b"<html>" + b"x" * 5000 + b"</html>"})
    dest = tmp_path / "sources"
    with server.serve() as base:
        with pytest.raises(DownloadError) as bad:
            download_video(f"{base}/v.mp4", dest, "v", retries=0)
    assert bad.value.reason == "bad_download" and "not a usable video" in str(bad.value)
    assert list(dest.iterdir()) == [], "neither a final name nor a partial folder"


# --------------------------------------------------------------------------- the fetch stage


def _row(name: str, url: str) -> dict[str, str]:
    record = ClipRecord(dataset="sample", clip_id=f"{name}_0", source_id=name, source_url=url,
                        mirror_names=(name,), split="train", provenance={})
    return ClipState(record).to_row()


def _fetched(fetch: FetchSource, row: dict[str, str]) -> tuple[ClipState, dict, str]:
    out = fetch(row)
    return ClipState.from_row(out), json.loads(out[METRICS_COLUMN]), out[HALT_COLUMN]


def test_fetch_retries_a_bot_check_after_the_back_off(video: bytes, tmp_path: Path) -> None:
    server = MediaServer({"v.mp4": video}, too_many_from=0, too_many=2)
    gate = DownloadGate(rate_per_min=600_000, max_bot_checks=3)
    fetch = FetchSource(str(tmp_path / "work"), None, 0, gate=gate)
    with server.serve() as base:
        state, metrics, halt = _fetched(fetch, _row("v", f"{base}/v.mp4"))
    assert state.ok and halt == "" and metrics["sources"] == {"v": "network"}
    assert [r.status for r in server.requests] == [429, 429, 200, 200]
    assert gate.stats()["bot_checks"] == 2 and gate.interval_s < gate.stats()["longest_interval_s"]


def test_fetch_breaker_halts_clips_without_failing_them(video: bytes, tmp_path: Path) -> None:
    server = MediaServer({"a.mp4": video, "b.mp4": video}, too_many=10**6)
    gate = DownloadGate(rate_per_min=600_000, max_bot_checks=2)
    work = tmp_path / "work"
    fetch = FetchSource(str(work), None, 0, gate=gate)
    with server.serve() as base:
        first = _fetched(fetch, _row("a", f"{base}/a.mp4"))
        second = _fetched(fetch, _row("b", f"{base}/b.mp4"))
    assert len(server.requests) == 2, "the breaker opened after 2 bot checks; b was never asked for"
    for state, metrics, halt in (first, second):
        assert state.ok and state.source_path is None and metrics["sources"] == {}
        assert halt.startswith("downloads stopped: 2 downloads in a row met a bot check or HTTP 429")
    assert not list((work / "sources").glob("*.json")), "no failure cached: a rerun downloads them"


def test_fetch_records_a_refused_download_with_its_reason(video: bytes, cookies: Path, tmp_path: Path) -> None:
    server = MediaServer({"v.mp4": video}, cookie=f"SID={COOKIE_VALUE}")
    with server.serve() as base:
        row = _row("v", f"{base}/v.mp4")
        refused, _, _ = _fetched(FetchSource(str(tmp_path / "plain"), None, 0), row)
        fetched, metrics, _ = _fetched(
            FetchSource(str(tmp_path / "signed"), None, 0, settings=DownloadSettings(cookies=str(cookies))), row)
    assert (refused.status, refused.reason, refused.failed_stage) == ("failed", "http_error", "download")
    assert "HTTP Error 403" in refused.error and refused.info.download_reason == "http_error"
    marker = json.loads((tmp_path / "plain" / "sources" / "v.download.json").read_text())
    assert marker["payload"]["reason"] == "http_error"
    assert fetched.ok and Path(fetched.source_path).read_bytes() == video and metrics["sources"] == {"v": "network"}


def test_fetch_retry_continues_the_partial_download_in_the_work_area(video: bytes, tmp_path: Path) -> None:
    """A cut download fails the clip (``network``, cached); ``--retry-failed`` forgets the
    failure and the next fetch continues the ``.part`` file kept in the work area."""
    server = MediaServer({"v.mp4": video}, cut_request=1, cut_after=50_000)
    work = tmp_path / "work"
    with server.serve() as base:
        row = _row("v", f"{base}/v.mp4")
        cut, _, _ = _fetched(FetchSource(str(work), None, 0), row)
        assert (cut.status, cut.reason) == ("failed", "network")
        part = next((work / "sources" / "v.partial").glob("*.part"))
        kept = part.stat().st_size
        WorkArea(str(work)).delete_marker("v", STAGE, kind="sources")  # what --retry-failed does
        fetched, _, _ = _fetched(FetchSource(str(work), None, 0), row)
    assert fetched.ok and Path(fetched.source_path).read_bytes() == video
    assert server.requests[-1].headers.get("Range") == f"bytes={kept}-"
    assert server.requests[-1].sent == len(video) - kept
    assert sorted(p.name for p in (work / "sources").iterdir()) == ["v.lock", "v.mp4"]


def test_no_download_fails_missing_sources_at_once(video: bytes, tmp_path: Path) -> None:
    server = MediaServer({f"s{i}.mp4": video for i in range(100)})
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "s0.mp4").write_bytes(video)
    fetch = FetchSource(str(tmp_path / "work"), str(mirror), 0, no_download=True)
    with server.serve() as base:
        results = [_fetched(fetch, _row(f"s{i}", f"{base}/s{i}.mp4")) for i in range(100)]
    assert server.requests == []
    assert results[0][0].ok and results[0][1]["sources"] == {"s0": "mirror"}
    for state, _, _ in results[1:]:
        assert (state.status, state.reason) == ("failed", "not_found_in_mirror") and "--no-download" in state.error
    assert not (tmp_path / "work" / "sources").exists(), "nothing cached: a build without --no-download fetches them"


# --------------------------------------------------------------------------- builds


def _lists(folder: Path, base: str, names: str) -> Path:
    """Sample-format lists: one source per letter at ``<base>/<letter>.mp4``, one 1 s clip each."""
    return write_sample_lists(folder, {n.upper(): (f"{base}/{n}.mp4", ["00:00-00:01"]) for n in names})


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli", "build", "--dataset", "sample", "--size", SIZE,
                           "--workers", "2", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "300"})


@pytest.mark.slow
def test_build_with_cookies_proxy_rate_and_back_off_leaks_no_secret(video: bytes, cookies: Path,
                                                                    tmp_path: Path) -> None:
    """Through the CLI: cookies, a proxy with credentials (from a yt-dlp config file), a rate
    and one 429 answer; the build goes on, and neither secret is in any file, log or message."""
    server = MediaServer({f"{n}.mp4": video for n in "abm"}, cookie=f"SID={COOKIE_VALUE}", too_many_from=2,
                         too_many=1)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "M.mp4").write_bytes(video)
    seen: list[Request] = []
    copies = _own_cookie_copies()
    with server.serve() as base, forwarding_proxy("user", PROXY_PASSWORD, seen) as proxy:
        config = tmp_path / "yt-dlp.conf"
        config.write_text(f"--proxy {proxy}\n--socket-timeout 20\n")
        metadata = _lists(tmp_path / "meta", base, "abm")
        done = _cli("--metadata", str(metadata), "--mirror", str(mirror), "--out", str(tmp_path / "out"),
                    "--cookies", str(cookies), "--yt-dlp-config", str(config), "--yt-dlp-option", "retries=0",
                    "--download-rate", "60000", "--verbose", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    said = " ".join(done.stderr.split())
    assert "sources: 1 from the mirror, 0 downloaded earlier (work area), 2 downloaded now" in said
    assert "1 bot checks or HTTP 429 answers" in said
    assert [r.status for r in server.requests].count(429) == 1
    assert {r.path for r in server.requests} == {"/a.mp4", "/b.mp4"}, "m came from the mirror"
    assert all(r.headers.get("Cookie") == f"SID={COOKIE_VALUE}" for r in server.requests)
    assert len(seen) == len(server.requests) and all(r.path.startswith(base) for r in seen), "all through the proxy"
    rows = {r["clip_id"]: r for r in pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()}
    assert [r["status"] for r in rows.values()] == ["ok"] * 3
    for path in [p for p in tmp_path.rglob("*") if p.is_file() and p != cookies and p != config]:
        data = path.read_bytes()
        assert COOKIE_VALUE.encode() not in data and PROXY_PASSWORD.encode() not in data, path
    assert COOKIE_VALUE not in done.stdout + done.stderr and PROXY_PASSWORD not in done.stdout + done.stderr
    assert _own_cookie_copies() == copies


@pytest.mark.slow
def test_circuit_breaker_stops_the_build_and_a_rerun_goes_on(local_ray: None, video: bytes, tmp_path: Path) -> None:
    """The site answers 429 after the first download: the build stops with exit 2 and no
    clip failed. Meanwhile ``--no-download`` builds what the mirror and that download hold,
    without a request; once the site answers again, the same command finishes without
    fetching a source twice."""
    server = MediaServer({f"{n}.mp4": video for n in "abc"}, too_many_from=2, too_many=10**6)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "C.mp4").write_bytes(video)
    out = tmp_path / "out"
    with server.serve() as base:
        metadata = _lists(tmp_path / "meta", base, "abc")
        stopped = _cli("--metadata", str(metadata), "--out", str(out), "--mirror", str(mirror), "--download-workers",
                       "1", "--download-rate", "60000", "--max-bot-checks", "2", cwd=tmp_path)
        assert stopped.returncode == 2, stopped.stderr[-3000:]
        said = " ".join(stopped.stderr.split())
        assert "downloads stopped: 2 downloads in a row met a bot check or HTTP 429" in said
        assert "run the same command again to go on" in said
        assert not (out / "release.json").exists()
        assert not list((out / "_work" / "sources").glob("*.json")), "no failure cached"
        downloaded = [p.stem for p in (out / "_work" / "sources").glob("*.mp4")]
        assert len(downloaded) == 1 and [r.status for r in server.requests] == [200, 200, 429, 429]
        missing = ({"A", "B"} - set(downloaded)).pop()

        cfg = BuildConfig(dataset="sample", out=str(out), work_dir=str(out / "_work"), metadata=str(metadata),
                          mirror=str(mirror), workers=2, cut=CutSettings(size=int(SIZE)), download_rate=60000)
        offline = run_build(dataclasses.replace(cfg, no_download=True), Console(file=io.StringIO()))
        assert len(server.requests) == 4, "--no-download sends no request"
        verdicts = {s.record.clip_id: (s.status, s.reason) for s in offline.states}
        assert verdicts == {f"{downloaded[0]}_0": ("ok", None), "C_0": ("ok", None),
                            f"{missing}_0": ("failed", "not_found_in_mirror")}
        assert "network" not in offline.sources and offline.downloads == {}
        assert sum(offline.sources.values()) == 2 - offline.resumed, "mirror and earlier download, unless done"

        server.too_many = 0
        final = run_build(cfg, Console(file=io.StringIO()))
    assert final.failed == 0 and len(final.states) == 3
    assert final.sources == {"network": 1} and final.downloads["bot_checks"] == 0
    for name in ("a", "b"):
        answers = [r.status for r in server.requests if r.path == f"/{name}.mp4"]
        assert answers.count(200) == 2, f"{name} was fetched once (a look and a download): {answers}"
