"""Datasets of utterance-classification manifests (emotion, Alzheimer's detection...).

:func:`classification_dataset`: :func:`lasersb.data.pipelines.audio_dataset` plus the class
index of each utterance, read from a label column of the SpeechBrain CSV.
"""

from __future__ import annotations

import csv
from pathlib import Path

import speechbrain as sb
import torch

from lasersb.data.pipelines import audio_dataset

__all__ = ["classification_dataset"]


def classification_dataset(
    csv_path, classes, label_column: str = "label", sample_rate: int = 16000, **kwargs
):
    """:func:`lasersb.data.pipelines.audio_dataset` plus the class index of each utterance.

    Arguments
    ---------
    csv_path : str or Path
        SpeechBrain CSV with ``ID``, ``duration``, ``wav`` and a label column.
    classes : sequence of str
        Class names; the index in this list is the target.
    label_column : str
        CSV column holding the class name.
    sample_rate : int
        Expected sample rate.
    **kwargs
        Other :func:`~lasersb.data.pipelines.audio_dataset` arguments.

    Returns
    -------
    DynamicItemDataset
        Outputs ``id``, ``sig``, ``duration`` and ``label_index`` (LongTensor of shape (1,)).

    Example
    -------
    >>> import tempfile, numpy as np, soundfile
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> soundfile.write(root / "a.wav", np.zeros(1600, dtype="float32"), 16000)
    >>> _ = (root / "d.csv").write_text(f"ID,duration,wav,label\\nu1,0.1,{root}/a.wav,sad\\n")
    >>> int(classification_dataset(root / "d.csv", ["neu", "sad"])[0]["label_index"])
    1
    """
    dataset = audio_dataset(csv_path, sample_rate=sample_rate, **kwargs)
    with open(Path(csv_path), newline="", encoding="utf-8") as handle:
        columns = next(csv.reader(handle))
    if label_column not in columns:
        raise ValueError(
            f"Data CSV {csv_path} has no {label_column!r} column (has {columns}); rerun the "
            "data preparation or set label_column."
        )
    index = {str(name): i for i, name in enumerate(classes)}

    @sb.utils.data_pipeline.takes(label_column)
    @sb.utils.data_pipeline.provides("label_index")
    def label_pipeline(label):
        if label not in index:
            raise ValueError(
                f"Label {label!r} in {csv_path} is not one of the classes {list(index)}: fix the "
                "classes in the hparams or the data preparation."
            )
        return torch.tensor([index[label]], dtype=torch.long)

    dataset.add_dynamic_item(label_pipeline)
    keys = ["id", "sig", "label_index"] + (["duration"] if "duration" in columns else [])
    dataset.set_output_keys(keys)
    return dataset
