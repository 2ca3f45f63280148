"""Log filters that keep two known, harmless notices (SpeechBrain's, transformers') out of runs.

SpeechBrain 1.x logs ``torchvision is not available - cannot save figures`` (WARNING, logger
``speechbrain.utils.train_logger``) when that module is first imported, which every recipe
YAML does (``!new:speechbrain.utils.train_logger.FileTrainLogger``): the class attribute
``ProgressSampleLogger._DEFAULT_FORMAT_DEFS`` calls ``_get_image_saver()``, which tries to
import torchvision. Only ``ProgressSampleLogger`` (samples of generative models) saves images
that way; lasersb never uses it, and its figures are drawn with matplotlib directly
(``lasersb.metrics.verification``, ``lasersb.brains.laser``, the recipes' plot scripts), so
nothing is lost.

transformers 5.x logs ``The following layers were not sharded: <every parameter>`` (WARNING,
logger ``transformers.distributed.tensor_parallel``) on every ``from_pretrained`` of a model
class that carries a tensor-parallel plan (HuBERT, WavLM, wav2vec 2.0 do), whether or not
tensor parallelism is used: ``verify_tp_plan`` checks the plan against the checkpoint's keys.
lasersb never shards a model, so the list (hundreds of names, on every upstream load) says
nothing; the other warning of that check (``The following TP rules were not applied``) passes.

:func:`install_log_filters` (run by ``import lasersb``) drops exactly those messages from
exactly those loggers; every other record passes.
"""

from __future__ import annotations

import logging

#: The logger SpeechBrain's ``speechbrain/utils/train_logger.py`` logs the notice on.
TRAIN_LOGGER_NAME = "speechbrain.utils.train_logger"
#: The notice, verbatim.
TORCHVISION_NOTICE = "torchvision is not available - cannot save figures"


#: The logger transformers' ``distributed/tensor_parallel.py`` logs its check on.
TENSOR_PARALLEL_LOGGER_NAME = "transformers.distributed.tensor_parallel"
#: The start of its notice (the parameter names follow).
UNSHARDED_NOTICE = "The following layers were not sharded: "


class TorchvisionNoticeFilter(logging.Filter):
    """Reject the torchvision notice of SpeechBrain's train logger, pass everything else.

    Example
    -------
    >>> def record(msg):
    ...     return logging.LogRecord(TRAIN_LOGGER_NAME, logging.WARNING, "", 1, msg, None, None)
    >>> TorchvisionNoticeFilter().filter(record(TORCHVISION_NOTICE))
    False
    >>> TorchvisionNoticeFilter().filter(record("another warning"))
    True
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != TORCHVISION_NOTICE


class UnshardedLayersNoticeFilter(logging.Filter):
    """Reject transformers' "layers were not sharded" notice, pass everything else.

    Example
    -------
    >>> def record(msg):
    ...     name = TENSOR_PARALLEL_LOGGER_NAME
    ...     return logging.LogRecord(name, logging.WARNING, "", 1, msg, None, None)
    >>> UnshardedLayersNoticeFilter().filter(record(UNSHARDED_NOTICE + "encoder.layer_norm.bias"))
    False
    >>> UnshardedLayersNoticeFilter().filter(record("The following TP rules were not applied"))
    True
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(UNSHARDED_NOTICE)


def install_log_filters() -> None:
    """Add :class:`TorchvisionNoticeFilter` to SpeechBrain's train logger and
    :class:`UnshardedLayersNoticeFilter` to transformers' tensor-parallel logger (once each).

    Must run before ``speechbrain.utils.train_logger`` is first imported, since the notice is
    logged at import time; ``import lasersb`` does it.

    Example
    -------
    >>> install_log_filters()
    >>> install_log_filters()
    >>> logger = logging.getLogger(TRAIN_LOGGER_NAME)
    >>> sum(isinstance(f, TorchvisionNoticeFilter) for f in logger.filters)
    1
    """
    for name, filter_class in (
        (TRAIN_LOGGER_NAME, TorchvisionNoticeFilter),
        (TENSOR_PARALLEL_LOGGER_NAME, UnshardedLayersNoticeFilter),
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, filter_class) for f in logger.filters):
            logger.addFilter(filter_class())
