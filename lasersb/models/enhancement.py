"""Speech-enhancement (SE) front-ends: Demucs (facebookresearch/denoiser) and a small STFT masker.

:class:`Demucs` re-implements the causal waveform U-Net of Défossez et al., "Real Time Speech
Enhancement in the Waveform Domain" (Interspeech 2020), with the module layout of the
``denoiser`` package, so that its released state dicts (``dns48``, ``dns64``, ``master64``; the
position-invariant SE paper fine-tunes ``master64`` = ``Demucs(hidden=64)``) load with
``strict=True``: parameter names ``encoder.<i>.0.weight`` (strided conv), ``encoder.<i>.2``
(1x1 conv feeding a GLU), ``decoder.<i>.0`` (1x1 conv + GLU), ``decoder.<i>.2`` (transposed
conv), ``lstm.lstm.weight_ih_l0``... (``lstm.linear`` only when bidirectional).

The forward pass follows the design of the original: the input is divided by its standard
deviation (plus ``floor``), zero-padded to a length the strided convolutions cover exactly,
upsampled x``resample`` with windowed-sinc interpolation (x4 = two x2 stages), encoded
(``depth`` x [conv K/S, ReLU, 1x1 conv, GLU]), passed through a 2-layer (B)LSTM, decoded with
U-Net skip connections, downsampled back, cropped to the input length and multiplied by the
standard deviation. Fresh models have their convolution weights rescaled (reference std
``rescale``, https://arxiv.org/abs/1911.13254) as in the original initialisation.

Every SE model here maps ``(B, T)`` waveforms (and optional relative lengths) to ``(B, T)``
enhanced waveforms, so :class:`EnhancedUpstream` can put any of them in front of any
:class:`~lasersb.models.upstream.SSLUpstream`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "BLSTM",
    "Demucs",
    "EnhancedUpstream",
    "MASTER64_CONFIG",
    "STFTMaskEnhancer",
    "build_enhancer",
    "downsample2",
    "load_enhancer_state",
    "rescale_module",
    "upsample2",
]

logger = logging.getLogger(__name__)

#: Constructor arguments of the released ``master64`` model (DNS + Valentini, 64 channels).
MASTER64_CONFIG = {
    "chin": 1,
    "chout": 1,
    "hidden": 64,
    "depth": 5,
    "kernel_size": 8,
    "stride": 4,
    "causal": True,
    "resample": 4,
    "growth": 2,
    "max_hidden": 10_000,
    "normalize": True,
    "glu": True,
    "rescale": 0.1,
    "floor": 1e-3,
}


# ---------------------------------------------------------------------- resampling
def _sinc_kernel(zeros: int, device=None, dtype=None) -> torch.Tensor:
    """Hann-windowed sinc sampled at the half-integer offsets ``-zeros+0.5 .. zeros-0.5``."""
    window = torch.hann_window(4 * zeros + 1, periodic=False, dtype=torch.float64)[1::2]
    t = torch.linspace(-zeros + 0.5, zeros - 0.5, 2 * zeros, dtype=torch.float64) * math.pi
    kernel = torch.sin(t) / t * window  # t never hits 0 at half-integer offsets
    return kernel.view(1, 1, -1).to(device=device, dtype=dtype)


def upsample2(x: torch.Tensor, zeros: int = 56) -> torch.Tensor:
    """Upsample the last axis by 2 with windowed-sinc interpolation (Smith & Gossett, 1984).

    The even output samples are the input; the odd ones are interpolated half-way between.

    Parameters
    ----------
    x : torch.Tensor
        ``(..., T)`` signal.
    zeros : int
        Number of sinc zero crossings on each side (kernel length ``2 * zeros``).

    Returns
    -------
    torch.Tensor
        ``(..., 2 T)``.

    Example
    -------
    >>> x = torch.sin(torch.arange(400) * 0.05)
    >>> y = upsample2(x)
    >>> y.shape, bool(torch.equal(y[::2], x))
    (torch.Size([800]), True)
    >>> bool((y[201:599:2] - torch.sin((torch.arange(100, 299) + 0.5) * 0.05)).abs().max() < 1e-3)
    True
    """
    *other, time = x.shape
    kernel = _sinc_kernel(zeros, x.device, x.dtype)
    half = F.conv1d(x.reshape(-1, 1, time), kernel, padding=zeros)[..., 1:].reshape(*other, time)
    return torch.stack([x, half], dim=-1).reshape(*other, 2 * time)


def downsample2(x: torch.Tensor, zeros: int = 56) -> torch.Tensor:
    """Downsample the last axis by 2 with windowed-sinc low-pass filtering (inverse of upsample2).

    Odd lengths are zero-padded by one sample first.

    Parameters
    ----------
    x : torch.Tensor
        ``(..., T)`` signal.
    zeros : int
        Number of sinc zero crossings on each side.

    Returns
    -------
    torch.Tensor
        ``(..., ceil(T / 2))``.

    Example
    -------
    >>> x = torch.sin(torch.arange(400) * 0.05)
    >>> bool((downsample2(upsample2(x)) - x)[60:-60].abs().max() < 1e-3)
    True
    """
    if x.shape[-1] % 2:
        x = F.pad(x, (0, 1))
    even, odd = x[..., ::2], x[..., 1::2]
    *other, time = odd.shape
    kernel = _sinc_kernel(zeros, x.device, x.dtype)
    filtered = F.conv1d(odd.reshape(-1, 1, time), kernel, padding=zeros)[..., :-1]
    return (even + filtered.reshape(*other, time)) * 0.5


# ---------------------------------------------------------------------- Demucs
class BLSTM(nn.Module):
    """The (B)LSTM between Demucs' encoder and decoder (``lstm`` and, if bidirectional, ``linear``).

    Parameters
    ----------
    dim : int
        Input and output channels.
    layers : int
        Number of LSTM layers.
    bi : bool
        Bidirectional (non-causal Demucs); a linear layer maps ``2 dim`` back to ``dim``.

    Example
    -------
    >>> out, _ = BLSTM(8, bi=True)(torch.randn(5, 2, 8))  # (time, batch, channels)
    >>> out.shape
    torch.Size([5, 2, 8])
    """

    def __init__(self, dim: int, layers: int = 2, bi: bool = True):
        super().__init__()
        self.lstm = nn.LSTM(input_size=dim, hidden_size=dim, num_layers=layers, bidirectional=bi)
        self.linear = nn.Linear(2 * dim, dim) if bi else None

    def forward(self, x, hidden=None):
        """``(T, B, dim)`` -> ``((T, B, dim), hidden state)``."""
        x, hidden = self.lstm(x, hidden)
        if self.linear is not None:
            x = self.linear(x)
        return x, hidden


def rescale_module(module: nn.Module, reference: float) -> None:
    """Rescale every (transposed) convolution so its weight std moves towards ``reference``.

    Each conv's weight and bias are divided by ``sqrt(std(weight) / reference)`` (the
    initialisation of Demucs, https://arxiv.org/abs/1911.13254).

    Example
    -------
    >>> conv = nn.Conv1d(4, 4, 3)
    >>> std = conv.weight.std().item()
    >>> rescale_module(conv, 0.1)
    >>> round(conv.weight.std().item() / math.sqrt(std * 0.1), 4)
    1.0
    """
    for sub in module.modules():
        if isinstance(sub, (nn.Conv1d, nn.ConvTranspose1d)):
            scale = (sub.weight.detach().std() / reference) ** 0.5
            with torch.no_grad():
                sub.weight.div_(scale)
                if sub.bias is not None:
                    sub.bias.div_(scale)


def _valid_mask(lens, batch: int, total: int, device) -> torch.Tensor | None:
    if lens is None:
        return None
    samples = torch.round(torch.as_tensor(lens, device=device).float() * total).long()
    return torch.arange(total, device=device)[None, :] < samples.clamp(1, total)[:, None]


def _as_batch(wavs: torch.Tensor):
    """``(T,)``/``(B, T)``/``(B, C, T)`` -> ``(B, C, T)`` and a function restoring the shape."""
    if wavs.dim() == 1:
        return wavs[None, None], lambda y: y[0, 0]
    if wavs.dim() == 2:
        return wavs[:, None], lambda y: y[:, 0]
    if wavs.dim() == 3:
        return wavs, lambda y: y
    raise ValueError(f"Expected (T,), (B, T) or (B, C, T) waveforms, got {tuple(wavs.shape)}.")


class Demucs(nn.Module):
    """Demucs waveform U-Net for speech enhancement (facebookresearch/denoiser layout).

    Parameters
    ----------
    chin, chout : int
        Input / output audio channels.
    hidden : int
        Channels of the first encoder layer (48: dns48; 64: dns64 and master64).
    depth : int
        Encoder (and decoder) layers.
    kernel_size, stride : int
        Kernel and stride of the strided (transposed) convolutions.
    causal : bool
        Unidirectional LSTM (real-time model); ``False`` uses a BLSTM + linear layer.
    resample : {1, 2, 4}
        Internal upsampling factor of the input (and downsampling of the output).
    growth : float
        Channel multiplier per layer (capped at ``max_hidden``).
    max_hidden : int
        Channel cap.
    normalize : bool
        Divide the input by its standard deviation (+ ``floor``), multiply the output back.
    glu : bool
        GLU after the 1x1 convolutions (else ReLU).
    rescale : float
        Reference std of the initial weight rescaling (0 / None: off).
    floor : float
        Added to the standard deviation in the normalisation.
    sample_rate : int
        Sampling rate the model works at (not used in the computation, for users/recipes).
    pretrained_path : str or Path, optional
        A state dict to load (``strict=True``), e.g. the released ``master64-8a5dfb4bb92753dd.th``
        (see :func:`load_enhancer_state` for the accepted file formats).

    Example
    -------
    >>> model = Demucs(hidden=4, depth=2, resample=2)
    >>> noisy = torch.randn(2, 1000)
    >>> model(noisy).shape
    torch.Size([2, 1000])
    >>> model(noisy[:, None]).shape  # (B, C, T) in -> (B, C, T) out, as in the denoiser package
    torch.Size([2, 1, 1000])
    >>> sorted(model.state_dict())[:3]
    ['decoder.0.0.bias', 'decoder.0.0.weight', 'decoder.0.2.bias']
    """

    def __init__(
        self,
        chin: int = 1,
        chout: int = 1,
        hidden: int = 48,
        depth: int = 5,
        kernel_size: int = 8,
        stride: int = 4,
        causal: bool = True,
        resample: int = 4,
        growth: float = 2,
        max_hidden: int = 10_000,
        normalize: bool = True,
        glu: bool = True,
        rescale: float | None = 0.1,
        floor: float = 1e-3,
        sample_rate: int = 16000,
        pretrained_path=None,
    ):
        super().__init__()
        if resample not in (1, 2, 4):
            raise ValueError(f"Demucs: resample must be 1, 2 or 4, got {resample}.")
        if depth < 1:
            raise ValueError(f"Demucs: depth must be >= 1, got {depth}.")
        self.chin, self.chout, self.hidden, self.depth = chin, chout, hidden, depth
        self.kernel_size, self.stride, self.causal = kernel_size, stride, causal
        self.resample, self.normalize, self.floor = resample, normalize, floor
        self.sample_rate = sample_rate
        self.encoder = nn.ModuleList()
        self.decoder = nn.ModuleList()
        scale = 2 if glu else 1
        in_ch, out_ch, width = chin, chout, hidden
        for index in range(depth):
            self.encoder.append(
                nn.Sequential(
                    nn.Conv1d(in_ch, width, kernel_size, stride),
                    nn.ReLU(),
                    nn.Conv1d(width, width * scale, 1),
                    nn.GLU(1) if glu else nn.ReLU(),
                )
            )
            decode = [
                nn.Conv1d(width, width * scale, 1),
                nn.GLU(1) if glu else nn.ReLU(),
                nn.ConvTranspose1d(width, out_ch, kernel_size, stride),
            ]
            if index > 0:
                decode.append(nn.ReLU())
            # The decoder runs from the deepest layer back to the waveform.
            self.decoder.insert(0, nn.Sequential(*decode))
            in_ch = out_ch = width
            width = min(int(growth * width), max_hidden)
        self.lstm = BLSTM(in_ch, bi=not causal)
        if rescale:
            rescale_module(self, reference=rescale)
        if pretrained_path:
            load_enhancer_state(self, pretrained_path)

    def valid_length(self, length: int) -> int:
        """Smallest length ``>= length`` that the strided convolutions cover without leftovers.

        Example
        -------
        >>> Demucs(hidden=4).valid_length(16000)
        16213
        """
        length = math.ceil(length * self.resample)
        for _ in range(self.depth):
            length = max(math.ceil((length - self.kernel_size) / self.stride) + 1, 1)
        for _ in range(self.depth):
            length = (length - 1) * self.stride + self.kernel_size
        return int(math.ceil(length / self.resample))

    @property
    def total_stride(self) -> int:
        """Input samples per time step of the LSTM."""
        return self.stride**self.depth // self.resample

    def forward(self, wavs: torch.Tensor, lens: torch.Tensor | None = None) -> torch.Tensor:
        """Enhance a batch.

        Parameters
        ----------
        wavs : torch.Tensor
            ``(B, T)`` (or ``(T,)``, or ``(B, chin, T)``) noisy waveforms.
        lens : torch.Tensor, optional
            ``(B,)`` relative lengths: the normalising std is taken over each item's valid
            samples only and the output is zero beyond them. ``None``: whole rows (as the
            original, which enhances one utterance at a time).

        Returns
        -------
        torch.Tensor
            Enhanced waveforms with the input's shape.
        """
        x, restore = _as_batch(wavs)
        batch, _, length = x.shape
        mask = _valid_mask(lens, batch, length, x.device)
        if mask is not None:
            x = x * mask[:, None].to(x.dtype)
        if self.normalize:
            mono = x.mean(dim=1)
            if mask is None:
                std = mono.std(dim=-1, keepdim=True)
            else:
                count = mask.sum(dim=1, keepdim=True).to(x.dtype)
                mean = mono.sum(dim=-1, keepdim=True) / count
                var = ((mono - mean) * mask).pow(2).sum(dim=-1, keepdim=True)
                std = (var / (count - 1).clamp(min=1)).sqrt()
            std = std[:, None]  # (B, 1, 1)
            x = x / (self.floor + std)
        else:
            std = 1.0
        x = F.pad(x, (0, self.valid_length(length) - length))
        for _ in range(int(math.log2(self.resample))):
            x = upsample2(x)
        skips = []
        for encode in self.encoder:
            x = encode(x)
            skips.append(x)
        x, _ = self.lstm(x.permute(2, 0, 1))
        x = x.permute(1, 2, 0)
        for decode in self.decoder:
            skip = skips.pop()
            x = decode(x + skip[..., : x.shape[-1]])
        for _ in range(int(math.log2(self.resample))):
            x = downsample2(x)
        out = std * x[..., :length]
        if mask is not None:
            out = out * mask[:, None].to(out.dtype)
        return restore(out)


# ---------------------------------------------------------------------- STFT masker
class STFTMaskEnhancer(nn.Module):
    """A small mask-based STFT enhancer for cheap runs and tests.

    Log-magnitude spectrogram -> 2-layer LSTM -> sigmoid magnitude mask applied to the noisy
    STFT (noisy phase) -> inverse STFT at the input length. The mask starts close to
    ``initial_mask`` everywhere, so a fresh model roughly passes the input through.

    Parameters
    ----------
    n_fft, hop_length : int
        STFT size and hop (Hann window of ``n_fft``).
    hidden : int
        LSTM width.
    num_layers : int
        LSTM layers.
    causal : bool
        Unidirectional LSTM.
    initial_mask : float
        Mask value of a fresh model (in ``(0, 1)``).
    sample_rate : int
        Sampling rate the model works at (for users/recipes).
    pretrained_path : str or Path, optional
        A state dict to load (see :func:`load_enhancer_state`).

    Example
    -------
    >>> model = STFTMaskEnhancer(n_fft=128, hop_length=32, hidden=16)
    >>> noisy = torch.randn(2, 1000)
    >>> with torch.no_grad():
    ...     out = model(noisy, torch.tensor([1.0, 0.6]))
    >>> out.shape, float(out[1, 600:].abs().max())
    (torch.Size([2, 1000]), 0.0)
    """

    def __init__(
        self,
        n_fft: int = 512,
        hop_length: int = 128,
        hidden: int = 128,
        num_layers: int = 2,
        causal: bool = True,
        initial_mask: float = 0.9,
        sample_rate: int = 16000,
        pretrained_path=None,
    ):
        super().__init__()
        if not 0 < initial_mask < 1:
            raise ValueError(f"initial_mask must be in (0, 1), got {initial_mask}.")
        self.n_fft, self.hop_length, self.sample_rate = n_fft, hop_length, sample_rate
        bins = n_fft // 2 + 1
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.input_norm = nn.LayerNorm(bins)
        self.rnn = nn.LSTM(bins, hidden, num_layers=num_layers, batch_first=True,
                           bidirectional=not causal)  # fmt: skip
        self.mask = nn.Linear(hidden * (1 if causal else 2), bins)
        with torch.no_grad():
            self.mask.weight.mul_(0.1)
            self.mask.bias.fill_(math.log(initial_mask / (1 - initial_mask)))
        if pretrained_path:
            load_enhancer_state(self, pretrained_path)

    def forward(self, wavs: torch.Tensor, lens: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, T)`` (or ``(T,)``) noisy waveforms -> enhanced waveforms of the same shape."""
        squeeze = wavs.dim() == 1
        x = wavs[None] if squeeze else wavs
        if x.dim() != 2:
            raise ValueError(f"STFTMaskEnhancer expects (B, T) waveforms, got {tuple(x.shape)}.")
        batch, length = x.shape
        mask = _valid_mask(lens, batch, length, x.device)
        if mask is not None:
            x = x * mask.to(x.dtype)
        spec = torch.stft(x, self.n_fft, self.hop_length, window=self.window, return_complex=True)
        features = self.input_norm(torch.log1p(spec.abs().transpose(1, 2)))
        hidden, _ = self.rnn(features)
        gain = torch.sigmoid(self.mask(hidden)).transpose(1, 2)
        out = torch.istft(spec * gain, self.n_fft, self.hop_length, window=self.window,
                          length=length)  # fmt: skip
        if mask is not None:
            out = out * mask.to(out.dtype)
        return out[0] if squeeze else out


# ---------------------------------------------------------------------- loading / wrapping
def _extract_state(obj, path: Path) -> dict:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    if isinstance(obj, dict):
        # denoiser training packages: {"model": {"state": ...}, "best_state": ...}
        for key in ("best_state", "state", "state_dict", "model"):
            if key in obj:
                return _extract_state(obj[key], path)
    raise ValueError(
        f"{path} holds no state dict (found {type(obj).__name__} with keys "
        f"{sorted(obj)[:8] if isinstance(obj, dict) else '-'}). Pass a plain state dict such as "
        "the released master64-8a5dfb4bb92753dd.th, or a dict with 'state'/'best_state'."
    )


def load_enhancer_state(model: nn.Module, path, strict: bool = True) -> nn.Module:
    """Load SE weights from a ``.th``/``.pt``/``.ckpt`` file into ``model``.

    Accepted files: a plain state dict (the released ``dns48``/``dns64``/``master64`` files,
    SpeechBrain checkpoints of the model), or a dict holding one under ``best_state``,
    ``state``, ``state_dict`` or ``model`` (the denoiser's training packages). The file is read
    with ``torch.load(weights_only=True)``; a ``module.`` prefix (DataParallel) is stripped.

    Parameters
    ----------
    model : torch.nn.Module
        The model to load into (e.g. ``Demucs(**MASTER64_CONFIG)``).
    path : str or Path
        The file.
    strict : bool
        Passed to ``load_state_dict``.

    Returns
    -------
    torch.nn.Module
        ``model``.

    Example
    -------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "demucs.th"
    >>> torch.save({"best_state": Demucs(hidden=4, depth=2).state_dict()}, path)
    >>> _ = load_enhancer_state(Demucs(hidden=4, depth=2), path)
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"SE weights not found: {path}. Download the released model (e.g. "
            "https://dl.fbaipublicfiles.com/adiyoss/denoiser/master64-8a5dfb4bb92753dd.th) and "
            "set pretrained_path to it, or set pretrained_path to null to start from scratch."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem gets the same advice
        raise ValueError(
            f"Cannot read {path} with torch.load(weights_only=True) ({err}). Save the weights "
            "as a plain state dict: torch.save(model.state_dict(), path)."
        ) from err
    state = _extract_state(obj, path)
    state = {key.removeprefix("module."): value for key, value in state.items()}
    try:
        model.load_state_dict(state, strict=strict)
    except RuntimeError as err:
        raise ValueError(
            f"The weights in {path} do not fit {type(model).__name__} "
            f"({getattr(model, 'hidden', '?')} hidden channels): {err}. For master64 use "
            "hidden=64, depth=5, causal=True, resample=4."
        ) from err
    logger.info("Loaded SE weights from %s", path)
    return model


class EnhancedUpstream(nn.Module):
    """An SE front-end followed by an SSL upstream: noisy waveforms -> representations.

    Parameters
    ----------
    enhancer : torch.nn.Module
        Any SE model mapping ``(wavs (B, T), lens)`` to ``(B, T)`` (:class:`Demucs`,
        :class:`STFTMaskEnhancer`...).
    upstream : torch.nn.Module
        A :class:`~lasersb.models.upstream.SSLUpstream` (or anything with its forward).

    Example
    -------
    >>> import tempfile
    >>> from lasersb.models.tiny_upstream import build_tiny_upstream
    >>> from lasersb.models.upstream import SSLUpstream
    >>> up = SSLUpstream(build_tiny_upstream("hubert", Path(tempfile.mkdtemp()) / "h"))
    >>> model = EnhancedUpstream(STFTMaskEnhancer(n_fft=128, hop_length=32, hidden=8), up)
    >>> model(torch.randn(2, 8000), torch.tensor([1.0, 0.5])).frame_lens.tolist()
    [24, 12]
    """

    def __init__(self, enhancer: nn.Module, upstream: nn.Module):
        super().__init__()
        self.enhancer = enhancer
        self.upstream = upstream

    def forward(self, wavs: torch.Tensor, wav_lens: torch.Tensor | None = None):
        """Enhance, then run the upstream; returns the upstream's output."""
        return self.upstream(self.enhancer(wavs, wav_lens), wav_lens)


#: Names accepted by :func:`build_enhancer`.
ENHANCERS = {"demucs": Demucs, "stft_mask": STFTMaskEnhancer}


def build_enhancer(kind: str, pretrained_path=None, **options_by_kind) -> nn.Module:
    """Build the SE model named ``kind`` with its own options (convenient in hparams files).

    Parameters
    ----------
    kind : {"demucs", "stft_mask"}
        :class:`Demucs` or :class:`STFTMaskEnhancer`.
    pretrained_path : str or Path, optional
        Weights to load (see :func:`load_enhancer_state`).
    **options_by_kind : dict
        ``demucs={...}``, ``stft_mask={...}``: constructor arguments per kind; only those of
        ``kind`` are used, so one hparams file can hold both and switch with ``kind``.

    Example
    -------
    >>> model = build_enhancer("stft_mask", demucs={"hidden": 64}, stft_mask={"hidden": 8})
    >>> type(model).__name__, model.rnn.hidden_size
    ('STFTMaskEnhancer', 8)
    """
    if kind not in ENHANCERS:
        raise ValueError(f"Unknown enhancer kind {kind!r}; use one of {sorted(ENHANCERS)}.")
    unknown = set(options_by_kind) - set(ENHANCERS)
    if unknown:
        raise ValueError(f"build_enhancer: unknown option group(s) {sorted(unknown)}.")
    options = dict(options_by_kind.get(kind) or {})
    return ENHANCERS[kind](pretrained_path=pretrained_path, **options)
