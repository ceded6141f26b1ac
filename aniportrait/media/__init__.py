"""Media I/O with ffmpeg, ffprobe and yt-dlp: probe, cut, encode, download (and its gate)."""
