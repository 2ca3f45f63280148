"""Log filters that keep one known, harmless SpeechBrain notice out of every lasersb run.

SpeechBrain 1.x logs ``torchvision is not available - cannot save figures`` (WARNING, logger
``speechbrain.utils.train_logger``) when that module is first imported, which every recipe
YAML does (``!new:speechbrain.utils.train_logger.FileTrainLogger``): the class attribute
``ProgressSampleLogger._DEFAULT_FORMAT_DEFS`` calls ``_get_image_saver()``, which tries to
import torchvision. Only ``ProgressSampleLogger`` (samples of generative models) saves images
that way; lasersb never uses it, and its figures are drawn with matplotlib directly
(``lasersb.metrics.verification``, ``lasersb.brains.laser``, the recipes' plot scripts), so
nothing is lost. :func:`install_log_filters` (run by ``import lasersb``) drops exactly that
message from exactly that logger; every other record passes.
"""

from __future__ import annotations

import logging

#: The logger SpeechBrain's ``speechbrain/utils/train_logger.py`` logs the notice on.
TRAIN_LOGGER_NAME = "speechbrain.utils.train_logger"
#: The notice, verbatim.
TORCHVISION_NOTICE = "torchvision is not available - cannot save figures"


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


def install_log_filters() -> None:
    """Add :class:`TorchvisionNoticeFilter` to SpeechBrain's train logger (once).

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
    logger = logging.getLogger(TRAIN_LOGGER_NAME)
    if not any(isinstance(f, TorchvisionNoticeFilter) for f in logger.filters):
        logger.addFilter(TorchvisionNoticeFilter())
