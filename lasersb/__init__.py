"""lasersb: SpeechBrain-style recipes for self-supervised speech representation learning.

Sub-packages
------------
alignment  soft-DTW (kernels, autograd, divergence, soft alignment) and temporal regularisers
brains     one ``speechbrain.Brain`` subclass per training method
models     upstream wrappers (HF HuBERT/WavLM/wav2vec2), featurisers, adapters, heads
augment    batched, on-device speed/pitch perturbation, zero-padding, noise mixing
data       dataset pipelines, audio reading with validation, the embedded mini corpus
metrics    EER/minDCF, UA/WA, WER/PER helpers
"""

from lasersb.logging_filters import install_log_filters

__version__ = "0.1.0"

# Before any recipe YAML imports speechbrain.utils.train_logger (see lasersb/logging_filters.py).
install_log_filters()
