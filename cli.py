"""``aniportrait-data``: the command line, one sub-module per job.

- ``build`` (:mod:`pipelines.build.cli`): a dataset's metadata -> shards, manifest, release;
- ``inspect``, ``stats``, ``verify``, ``card``, ``export``, ``preview``, ``scores``,
  ``datasets`` (:mod:`pipelines.tools.cli`): a finished release and the registries;
- ``train audio2mesh|audio2pose|stage1|stage2`` (:mod:`pipelines.training`);
- ``predict-landmarks``, ``infer`` (:mod:`pipelines.inference`).

Exit codes are shared (:mod:`pipelines.cli_common`): 0 all done; 3 some clips or jobs failed
(the good ones are written, each failure recorded with its reason); 2 a usage or set-up
error, or a stop a rerun goes on from; 1 ``verify`` found a release that disagrees with
its ``release.json``. Each command imports its heavy libraries (Ray, torch, MediaPipe)
only when it runs, so ``--help`` and the quick commands start fast.
"""

from __future__ import annotations

import typer

from pipelines.build.cli import build
from pipelines.inference.cli_infer import infer
from pipelines.inference.cli_predict import predict_landmarks
from pipelines.tools.cli import card, datasets, export, inspect, preview, scores, stats, verify
from pipelines.training.cli_audio2lmk import train_app
from pipelines.training.cli_lmk2video import stage1, stage2

app = typer.Typer(
    help="Turn public talking-face datasets into AniPortrait training shards (WebDataset + Parquet), "
         "train both AniPortrait stages on them and run inference.",
    no_args_is_help=True,
    add_completion=False,
)
app.command()(build)
for command in (inspect, stats, verify, card, export, preview, scores, datasets):
    app.command()(command)
app.add_typer(train_app, name="train", help="Train Audio2Mesh / Audio2Pose and Lmk2Video stage 1 / stage 2 on built shards.")
train_app.command("stage1")(stage1)
train_app.command("stage2")(stage2)
app.command("predict-landmarks")(predict_landmarks)
app.command()(infer)


if __name__ == "__main__":
    app()
