#!/usr/bin/env python3
"""SUPERB phoneme recognition (ARPAbet CTC, PER) on a frozen upstream.

Prepares the LibriSpeech manifests, trains a linear CTC head on the learnable weighted sum of
the frozen upstream's hidden layers (:class:`lasersb.brains.superb.SuperbCTCBrain`), selects
the checkpoint on dev-clean PER, then writes per-utterance hypotheses, alignments, per-split
JSON summaries and ``<output_folder>/results.json`` (read by ``python -m lasersb.report``).

Run from the repository root:
    python recipes/SUPERB/pr/train.py recipes/SUPERB/pr/hparams/pr.yaml \\
        --data_folder=/path/LibriSpeech --lexicon_file=/path/librispeech-lexicon.txt \\
        --upstream_source=facebook/hubert-base-ls960
"""

import sys

from lasersb.brains.superb import run_superb_recipe


def main(argv):
    """Prepare, train, select on dev, evaluate; returns the content of results.json."""
    return run_superb_recipe(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
