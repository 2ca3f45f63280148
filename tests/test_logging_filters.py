"""A recipe run prints neither SpeechBrain's torchvision notice nor transformers' "layers were not
sharded" notice; other warnings still show.

The run is a subprocess doing what every recipe's ``train.py`` does first
(``lasersb.experiment.setup_experiment`` on a YAML holding a ``FileTrainLogger``, which imports
``speechbrain.utils.train_logger``), with torchvision made unimportable so that SpeechBrain
logs the notice whether or not torchvision is installed here, then loading an upstream folder
the way every recipe does (``lasersb.models.upstream.load_upstream``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lasersb.logging_filters import TORCHVISION_NOTICE, UNSHARDED_NOTICE

REPO = Path(__file__).resolve().parents[1]

SCRIPT = """
import logging, sys
sys.modules["torchvision"] = None  # import torchvision raises ImportError, as without it
import lasersb.experiment
if sys.argv[1] == "unfiltered":
    logging.getLogger("speechbrain.utils.train_logger").filters.clear()
    logging.getLogger("transformers.distributed.tensor_parallel").filters.clear()
hparams, _ = lasersb.experiment.setup_experiment([sys.argv[2]])
import speechbrain.utils.train_logger as train_logger
train_logger.logger.warning("another train_logger warning")
logging.getLogger("speechbrain.core").warning("a speechbrain.core warning")
from lasersb.models.upstream import load_upstream
load_upstream(sys.argv[3])
logging.getLogger("transformers.distributed.tensor_parallel").warning("another tp warning")
"""


def _run(tmp_path: Path, mode: str, upstream: Path) -> str:
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
        [sys.executable, "-c", SCRIPT, mode, str(hparams), str(upstream)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    log = (out / "log.txt").read_text(encoding="utf-8")
    return proc.stdout + proc.stderr + log


def test_recipe_start_hides_only_the_two_notices(tmp_path, tiny_upstreams):
    unfiltered = _run(tmp_path, "unfiltered", tiny_upstreams["hubert"])
    # Without the filters the run prints both notices.
    assert TORCHVISION_NOTICE in unfiltered
    assert UNSHARDED_NOTICE in unfiltered
    filtered = _run(tmp_path, "filtered", tiny_upstreams["hubert"])
    assert TORCHVISION_NOTICE not in filtered
    assert UNSHARDED_NOTICE.strip() not in filtered
    others = ("another train_logger warning", "a speechbrain.core warning", "another tp warning")
    for other in others:
        assert other in filtered and other in unfiltered
