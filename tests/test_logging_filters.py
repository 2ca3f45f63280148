"""A recipe run does not print SpeechBrain's torchvision notice; other warnings still show.

The run is a subprocess doing what every recipe's ``train.py`` does first
(``lasersb.experiment.setup_experiment`` on a YAML holding a ``FileTrainLogger``, which imports
``speechbrain.utils.train_logger``), with torchvision made unimportable so that SpeechBrain
logs the notice whether or not torchvision is installed here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lasersb.logging_filters import TORCHVISION_NOTICE

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import logging, sys
sys.modules["torchvision"] = None  # import torchvision raises ImportError, as without it
import lasersb.experiment
if sys.argv[1] == "unfiltered":
    logging.getLogger("speechbrain.utils.train_logger").filters.clear()
hparams, _ = lasersb.experiment.setup_experiment([sys.argv[2]])
import speechbrain.utils.train_logger as train_logger
train_logger.logger.warning("another train_logger warning")
logging.getLogger("speechbrain.core").warning("a speechbrain.core warning")
"""


def _run(tmp_path: Path, mode: str) -> str:
    out = tmp_path / mode
    hparams = tmp_path / f"{mode}.yaml"
    hparams.write_text(
        f"output_folder: {out}\n"
        "train_logger: !new:speechbrain.utils.train_logger.FileTrainLogger\n"
        "    save_file: !ref <output_folder>/train_log.txt\n",
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode, str(hparams)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    log = (out / "log.txt").read_text(encoding="utf-8")
    return proc.stdout + proc.stderr + log


def test_recipe_start_hides_only_the_torchvision_notice(tmp_path):
    unfiltered = _run(tmp_path, "unfiltered")
    assert TORCHVISION_NOTICE in unfiltered  # without the filter the run prints it
    filtered = _run(tmp_path, "filtered")
    assert TORCHVISION_NOTICE not in filtered
    for other in ("another train_logger warning", "a speechbrain.core warning"):
        assert other in filtered and other in unfiltered
