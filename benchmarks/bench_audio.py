"""wav2vec2 feature throughput on CPU: audio seconds per wall-second, batched vs one by one.

Uses the base-sized wav2vec2 config (hidden 768, 12 layers) with random weights saved and
loaded through the real path (`Wav2Vec2Features`), on utterances cut from real speech.
Timings on a shared machine are noisy: read the ratio, measured in the same run.

    python benchmarks/bench_audio.py [--utterances 8] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from aniportrait.audio import SAMPLE_RATE, Wav2Vec2Features, frame_count, load_audio, normalize

REPO = Path(__file__).resolve().parents[1]
SPEECH = REPO.parent / "shared" / "fixtures" / "media" / "speech_lyl.wav"
FALLBACK = REPO / "datasets_spec" / "data" / "sample" / "mirror" / "LylTalking.mp4"


def utterances(count: int) -> list[np.ndarray]:
    """``count`` normalised utterances of 2 to 6 s cut from real speech."""
    wave = load_audio(SPEECH if SPEECH.is_file() else FALLBACK)
    lengths = [2 + (i * 4) // max(1, count - 1) for i in range(count)]
    return [normalize(wave[(i * SAMPLE_RATE) % (len(wave) - n * SAMPLE_RATE):][: n * SAMPLE_RATE])
            for i, n in enumerate(lengths)]


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 = per-core numbers)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        Wav2Vec2Model(Wav2Vec2Config()).eval().save_pretrained(folder)
        extractor = Wav2Vec2Features(folder)
        waves = utterances(args.utterances)
        frames = [frame_count(len(w), 30) for w in waves]
        seconds = sum(len(w) for w in waves) / SAMPLE_RATE
        extractor(waves[0][:SAMPLE_RATE], 30)  # load and warm up
        single, batched = [], []
        for _ in range(args.repeats):
            single.append(timed(lambda: [extractor(w, n) for w, n in zip(waves, frames)]))
            batched.append(timed(lambda: extractor.batch(waves, frames)))
    one, many = statistics.median(single), statistics.median(batched)
    print(f"wav2vec2-base (random weights), {len(waves)} utterances, {seconds:.1f} s of audio, "
          f"{args.threads} torch thread(s), median of {args.repeats}")
    print(f"one by one : {one:6.2f} s  {seconds / one:6.2f} audio-s per wall-s")
    print(f"batched    : {many:6.2f} s  {seconds / many:6.2f} audio-s per wall-s")
    print(f"batch / one-by-one throughput ratio: {one / many:.2f}x")


if __name__ == "__main__":
    main()
