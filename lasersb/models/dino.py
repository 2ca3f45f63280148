"""DINO (self-distillation with no labels) for utterance-level speech embeddings.

Cho, Villalba, Moro-Velazquez, Dehak, "Non-Contrastive Self-supervised Learning for
Utterance-Level Information Extraction from Speech" (JSTSP 2022; Interspeech 2022): a student
and an exponential-moving-average (EMA) teacher share an embedding trunk
(:class:`lasersb.models.resnet.SpeakerEmbeddingModel`) followed by a projection head
(:class:`DINOHead`). The teacher sees the global crops of an utterance, the student sees all
crops (:class:`MultiCrop`), and the student is trained to predict the teacher's centred,
sharpened softmax (:class:`DINOLoss`), with no negative pairs and no labels.

This module also defines the embedding-model checkpoint shared by the speaker recipes and the
transfer recipes (:func:`save_embedding_model`, :func:`load_embedding_model`): a single
``torch.save`` file ``embedding_model.ckpt`` holding a plain dict::

    {"format": "lasersb.speaker_embedding/1",
     "config": {...SpeakerEmbeddingModel keyword arguments...},
     "state_dict": {...SpeakerEmbeddingModel.state_dict()...},
     "meta": {"source": "dino-teacher" | "xvector", ...}}
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lasersb.models.resnet import SpeakerEmbeddingModel
from lasersb.schedules import cosine_schedule

CHECKPOINT_FORMAT = "lasersb.speaker_embedding/1"
CHECKPOINT_NAME = "embedding_model.ckpt"


# ---------------------------------------------------------------------------- head and loss
class DINOHead(nn.Module):
    """DINO projection head: MLP, L2-normalised bottleneck, weight-normalised prototypes.

    Arguments
    ---------
    in_dim : int
        Embedding dimension of the trunk (256).
    out_dim : int
        Number of prototypes ``K`` (65,536 in the paper).
    hidden_dim : int
        Hidden width of the MLP (2048).
    bottleneck_dim : int
        Output of the MLP before L2 normalisation (256).
    num_layers : int
        Linear layers in the MLP (3), with GELU between them.
    use_bn : bool
        Batch norm after the hidden linear layers (off in the paper).
    norm_last_layer : bool
        Fix the norm of each prototype to 1 (the weight-norm gain is frozen).

    Example
    -------
    >>> head = DINOHead(in_dim=8, out_dim=32, hidden_dim=16, bottleneck_dim=4)
    >>> head(torch.randn(5, 8)).shape
    torch.Size([5, 32])
    >>> bool(head(torch.randn(5, 8)).abs().max() <= 1.0 + 1e-5)
    True
    """

    def __init__(
        self,
        in_dim: int = 256,
        out_dim: int = 65536,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        use_bn: bool = False,
        norm_last_layer: bool = True,
    ):
        super().__init__()
        num_layers = max(1, int(num_layers))
        if num_layers == 1:
            layers = [nn.Linear(in_dim, bottleneck_dim)]
        else:
            layers = [nn.Linear(in_dim, hidden_dim)]
            for index in range(num_layers - 1):
                if use_bn:
                    layers.append(nn.BatchNorm1d(hidden_dim))
                layers.append(nn.GELU())
                last = index == num_layers - 2
                layers.append(nn.Linear(hidden_dim, bottleneck_dim if last else hidden_dim))
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        last_layer = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.last_layer = nn.utils.parametrizations.weight_norm(last_layer)
        gain = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            gain.fill_(1.0)
        if norm_last_layer:
            gain.requires_grad_(False)
        self.out_dim = int(out_dim)

    def last_layer_parameters(self) -> list:
        """Parameters of the prototype layer (frozen during the first steps of training)."""
        return list(self.last_layer.parameters())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_dim)`` embeddings -> ``(N, out_dim)`` logits (cosines to the prototypes)."""
        x = F.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)


class DINOModel(nn.Module):
    """Trunk + DINO head applied to groups of crops of different lengths in one call.

    Keeping the student in one module means one forward per step (what DDP expects).

    Arguments
    ---------
    embedding_model : lasersb.models.resnet.SpeakerEmbeddingModel
        ``(wavs, rel_lens) -> (B, D)``.
    head : lasersb.models.dino.DINOHead
        ``(N, D) -> (N, K)``.

    Example
    -------
    >>> from lasersb.models.resnet import SpeakerEmbeddingModel
    >>> model = DINOModel(SpeakerEmbeddingModel(embedding_dim=8, n_mels=16, base_channels=4,
    ...                   num_blocks=(1, 1, 1, 1)), DINOHead(8, 32, 16, 8))
    >>> model([torch.randn(4, 3200), torch.randn(6, 1600)]).shape
    torch.Size([10, 32])
    """

    def __init__(self, embedding_model: nn.Module, head: nn.Module):
        super().__init__()
        self.embedding_model = embedding_model
        self.head = head

    def forward(self, crop_groups) -> torch.Tensor:
        """Logits ``(sum N_i, K)`` of crop groups ``[(N_i, T_i) waveforms, ...]`` (full length)."""
        embeddings = [
            self.embedding_model(crops, None) for crops in crop_groups if crops is not None
        ]
        return self.head(torch.cat(embeddings, dim=0))


def _all_reduce_sum_(tensor: torch.Tensor) -> int:
    """Sum ``tensor`` over processes when DDP is running; return the world size."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(tensor)
        return torch.distributed.get_world_size()
    return 1


class DINOLoss(nn.Module):
    """Cross-entropy between the teacher's centred, sharpened softmax and the student's softmax.

    For each global crop ``q`` of the teacher and each crop ``v != q`` of the student, the loss
    is ``-sum_k P_t(q)_k log P_s(v)_k`` averaged over the batch and the ``(q, v)`` pairs, with
    ``P_t = softmax((t - c) / tau_t)`` and ``P_s = softmax(s / tau_s)``. The centre ``c`` is an
    EMA (``center_momentum``) of the teacher's batch-mean logits (all-reduced under DDP), updated
    after each call in training mode.

    Arguments
    ---------
    out_dim : int
        Number of prototypes ``K``.
    num_global : int
        Global crops (teacher inputs), placed first in the student outputs.
    student_temp : float
        Student temperature (0.1).
    teacher_temp : float
        Teacher temperature after warm-up (0.04).
    warmup_teacher_temp : float, optional
        Teacher temperature at step 0 (defaults to ``teacher_temp``: no warm-up).
    warmup_teacher_temp_steps : int
        Steps of linear warm-up of the teacher temperature.
    center_momentum : float
        EMA momentum of the centre (0.9).

    Example
    -------
    >>> loss_fn = DINOLoss(out_dim=16, num_global=2)
    >>> student, teacher = torch.randn(3 * 4, 16), torch.randn(2 * 4, 16)
    >>> loss = loss_fn(student, teacher)
    >>> loss.shape, bool(loss > 0)
    (torch.Size([]), True)
    >>> bool(loss_fn.center.abs().sum() > 0)
    True
    """

    def __init__(
        self,
        out_dim: int,
        num_global: int = 2,
        student_temp: float = 0.1,
        teacher_temp: float = 0.04,
        warmup_teacher_temp: float | None = None,
        warmup_teacher_temp_steps: int = 0,
        center_momentum: float = 0.9,
    ):
        super().__init__()
        self.out_dim = int(out_dim)
        self.num_global = int(num_global)
        self.student_temp = float(student_temp)
        self.teacher_temp = float(teacher_temp)
        self.warmup_teacher_temp = (
            float(warmup_teacher_temp) if warmup_teacher_temp is not None else self.teacher_temp
        )
        self.warmup_teacher_temp_steps = int(warmup_teacher_temp_steps)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(1, self.out_dim))

    def teacher_temperature(self, step: int | None = None) -> float:
        """Teacher temperature at optimiser step ``step`` (linear warm-up, then constant)."""
        if step is None or step >= self.warmup_teacher_temp_steps:
            return self.teacher_temp
        frac = step / max(1, self.warmup_teacher_temp_steps)
        return self.warmup_teacher_temp + frac * (self.teacher_temp - self.warmup_teacher_temp)

    def teacher_probs(self, teacher_out: torch.Tensor, step: int | None = None) -> torch.Tensor:
        """Centred, sharpened teacher softmax ``(N, K)`` (no gradient)."""
        temp = self.teacher_temperature(step)
        return F.softmax((teacher_out.detach().float() - self.center) / temp, dim=-1)

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        """EMA update of the centre with the (all-reduced) batch mean of the teacher logits."""
        batch_center = teacher_out.detach().float().sum(dim=0, keepdim=True)
        count = torch.tensor(float(teacher_out.shape[0]), device=teacher_out.device)
        _all_reduce_sum_(batch_center)
        _all_reduce_sum_(count)
        batch_center = batch_center / count
        self.center.mul_(self.center_momentum).add_(batch_center * (1 - self.center_momentum))

    def forward(
        self, student_out: torch.Tensor, teacher_out: torch.Tensor, step: int | None = None
    ) -> torch.Tensor:
        """DINO loss of ``student_out`` ``(n_crops * B, K)`` vs ``teacher_out`` ``(n_g * B, K)``.

        Both are crop-major: rows ``[i * B, (i + 1) * B)`` belong to crop ``i``; the student's
        first ``num_global`` crops are the teacher's crops.
        """
        if teacher_out.shape[0] % self.num_global:
            raise ValueError(
                f"teacher_out has {teacher_out.shape[0]} rows, not a multiple of "
                f"num_global={self.num_global}"
            )
        batch = teacher_out.shape[0] // self.num_global
        if student_out.shape[0] % batch:
            raise ValueError(
                f"student_out has {student_out.shape[0]} rows, not a multiple of the batch {batch}"
            )
        n_crops = student_out.shape[0] // batch
        student_logp = F.log_softmax(student_out.float() / self.student_temp, dim=-1)
        student_logp = student_logp.chunk(n_crops)
        teacher_p = self.teacher_probs(teacher_out, step).chunk(self.num_global)
        total, terms = 0.0, 0
        for iq, q in enumerate(teacher_p):
            for v, logp in enumerate(student_logp):
                if v == iq:
                    continue
                total = total + torch.sum(-q * logp, dim=-1).mean()
                terms += 1
        if terms == 0:
            raise ValueError("DINOLoss needs at least two crops (a global one and another).")
        if self.training:
            self.update_center(teacher_out)
        return total / terms


def collapse_statistics(teacher_probs: torch.Tensor) -> dict:
    """Collapse indicators of a batch of teacher distributions ``(N, K)``.

    ``entropy``: mean entropy of the rows (0 for one-hot outputs, ``log K`` for uniform ones,
    the two collapses that centring and sharpening balance); ``kl_uniform``: KL divergence
    between the batch-mean distribution and the uniform one (``log K`` when every row puts its
    mass on the same prototype); ``log_k``: ``log K`` for reference.

    Example
    -------
    >>> stats = collapse_statistics(torch.full((4, 8), 1 / 8))
    >>> round(stats["entropy"], 4) == round(math.log(8), 4), round(stats["kl_uniform"], 4)
    (True, 0.0)
    >>> onehot = torch.nn.functional.one_hot(torch.zeros(4, dtype=torch.long), 8).float()
    >>> round(collapse_statistics(onehot)["kl_uniform"], 4) == round(math.log(8), 4)
    True
    """
    p = teacher_probs.detach().float()
    log_k = math.log(p.shape[-1])
    entropy = -(p * torch.log(p.clamp(min=1e-12))).sum(dim=-1).mean()
    mean_p = p.mean(dim=0)
    mean_entropy = -(mean_p * torch.log(mean_p.clamp(min=1e-12))).sum()
    return {
        "entropy": float(entropy),
        "kl_uniform": float(log_k - mean_entropy),
        "log_k": log_k,
    }


# ---------------------------------------------------------------------------- schedules / EMA
def teacher_momentum(step: int, total_steps: int, base: float = 0.996, final: float = 1.0):
    """EMA momentum of the teacher: ``base`` -> ``final`` on a cosine schedule.

    Example
    -------
    >>> teacher_momentum(0, 100), teacher_momentum(100, 100)
    (0.996, 1.0)
    """
    return cosine_schedule(step, total_steps, base, final)


@torch.no_grad()
def ema_update_(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """``teacher <- momentum * teacher + (1 - momentum) * student`` over the parameters.

    Buffers (batch-norm statistics) are the teacher's own, as in DINO. Parameters are matched
    by name, so a DDP-wrapped student (``module.`` prefix) works too.

    Example
    -------
    >>> t, s = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    >>> ema_update_(t, s, 0.0)
    >>> bool(torch.equal(t.weight, s.weight))
    True
    """
    student_params = {name.removeprefix("module."): p for name, p in student.named_parameters()}
    for name, teacher_param in teacher.named_parameters():
        key = name.removeprefix("module.")
        if key not in student_params:
            raise KeyError(f"Teacher parameter {name} has no student counterpart")
        teacher_param.mul_(momentum).add_(
            student_params[key].detach().to(teacher_param.dtype), alpha=1 - momentum
        )


# ---------------------------------------------------------------------------- multi-crop
def random_crops(
    wavs: torch.Tensor, rel_lens, crop_samples: int, num_crops: int, generator=None
) -> torch.Tensor:
    """``num_crops`` random chunks of ``crop_samples`` from each utterance, crop-major.

    Utterances shorter than a chunk are repeated (circular padding), so every chunk is full
    speech. Offsets are drawn independently for each crop and utterance.

    Arguments
    ---------
    wavs : torch.Tensor
        ``(B, T)`` waveforms.
    rel_lens : torch.Tensor, optional
        ``(B,)`` relative lengths.
    crop_samples : int
        Chunk length in samples.
    num_crops : int
        Chunks per utterance.
    generator : torch.Generator, optional
        CPU generator for the offsets.

    Returns
    -------
    torch.Tensor
        ``(num_crops * B, crop_samples)``; rows ``[i*B, (i+1)*B)`` are the ``i``-th chunks.

    Example
    -------
    >>> w = torch.arange(10.0).repeat(2, 1)
    >>> crops = random_crops(w, torch.tensor([1.0, 0.3]), 4, 3)
    >>> crops.shape, sorted(set(crops[1::2].flatten().tolist())) == [0.0, 1.0, 2.0]
    (torch.Size([6, 4]), True)
    """
    batch, length = wavs.shape
    device = wavs.device
    crop_samples = int(crop_samples)
    if rel_lens is None:
        valid = torch.full((batch,), length, dtype=torch.long)
    else:
        valid = torch.round(rel_lens.detach().float().cpu() * length).long().clamp(1, length)
    room = (valid - crop_samples).clamp(min=0)  # (B,)
    u = torch.rand(num_crops, batch, generator=generator)
    offsets = torch.floor(u * (room + 1).float()).long()  # (n, B)
    positions = offsets.unsqueeze(-1) + torch.arange(crop_samples)  # (n, B, L)
    positions = positions % valid.view(1, batch, 1)  # circular padding of short utterances
    rows = torch.arange(batch).view(1, batch, 1).expand_as(positions)
    crops = wavs[rows.to(device), positions.to(device)]
    return crops.reshape(num_crops * batch, crop_samples)


class MultiCrop(nn.Module):
    """DINO multi-crop of utterances: global and local chunks at random offsets.

    Arguments
    ---------
    num_global : int
        Global chunks (2), seen by the teacher and the student.
    global_seconds : float
        Global chunk length (4 s).
    num_local : int
        Local chunks (4), seen by the student only.
    local_seconds : float
        Local chunk length (2 s).
    sample_rate : int
        Sample rate of the waveforms.

    Example
    -------
    >>> crop = MultiCrop(2, 0.5, 3, 0.25, sample_rate=100)
    >>> g, l = crop(torch.randn(4, 100), torch.ones(4))
    >>> g.shape, l.shape
    (torch.Size([8, 50]), torch.Size([12, 25]))
    """

    def __init__(
        self,
        num_global: int = 2,
        global_seconds: float = 4.0,
        num_local: int = 4,
        local_seconds: float = 2.0,
        sample_rate: int = 16000,
    ):
        super().__init__()
        if num_global < 1:
            raise ValueError("MultiCrop needs at least one global crop")
        self.num_global = int(num_global)
        self.num_local = int(num_local)
        self.global_samples = int(round(global_seconds * sample_rate))
        self.local_samples = int(round(local_seconds * sample_rate))

    def forward(self, wavs: torch.Tensor, rel_lens=None, generator=None):
        """``(global_crops (n_g*B, Lg), local_crops (n_l*B, Ll) or None)``, crop-major."""
        global_crops = random_crops(wavs, rel_lens, self.global_samples, self.num_global, generator)
        local_crops = None
        if self.num_local > 0:
            local_crops = random_crops(
                wavs, rel_lens, self.local_samples, self.num_local, generator
            )
        return global_crops, local_crops


# ---------------------------------------------------------------------------- checkpoints
def save_embedding_model(model: SpeakerEmbeddingModel, path, meta: dict | None = None) -> Path:
    """Save an embedding model as a self-describing checkpoint (see the module docstring).

    Arguments
    ---------
    model : SpeakerEmbeddingModel
        The model to save (the DINO teacher's trunk, or the x-vector trunk).
    path : str or Path
        A file path, or a folder (then ``<folder>/embedding_model.ckpt``).
    meta : dict, optional
        Plain-typed information stored with it (source, step, results...).

    Returns
    -------
    Path
        The written file.

    Example
    -------
    >>> import tempfile
    >>> model = SpeakerEmbeddingModel(embedding_dim=8, n_mels=16, base_channels=4,
    ...                               num_blocks=(1, 1, 1, 1))
    >>> path = save_embedding_model(model, tempfile.mkdtemp(), {"source": "doctest"})
    >>> path.name
    'embedding_model.ckpt'
    """
    if not hasattr(model, "config"):
        raise TypeError(
            f"save_embedding_model expects a SpeakerEmbeddingModel, got {type(model).__name__}"
        )
    path = Path(path)
    if path.suffix != ".ckpt":
        path = path / CHECKPOINT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": dict(model.config),
        "state_dict": state,
        "meta": dict(meta or {}),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def _find_checkpoint(path: Path) -> Path:
    if path.is_file():
        return path
    if path.is_dir():
        direct = path / CHECKPOINT_NAME
        if direct.is_file():
            return direct
        found = sorted(path.rglob(CHECKPOINT_NAME), key=lambda p: p.stat().st_mtime)
        if found:
            return found[-1]
        raise FileNotFoundError(
            f"No {CHECKPOINT_NAME} under {path}. Train a DINO or x-vector recipe first "
            f"(recipes/VoxCeleb/dino or recipes/VoxCeleb/xvector); they export one at the end "
            f"of training into <output_folder>/{CHECKPOINT_NAME}."
        )
    raise FileNotFoundError(
        f"Embedding model checkpoint not found: {path}. Pass the {CHECKPOINT_NAME} file or the "
        f"folder of a DINO/x-vector run."
    )


def load_embedding_model(path_or_folder, device="cpu", eval_mode: bool = True):
    """Load an embedding model saved by :func:`save_embedding_model`.

    Arguments
    ---------
    path_or_folder : str or Path
        The ``embedding_model.ckpt`` file, or a folder holding one (the newest one found below
        it is used, e.g. a recipe's output folder).
    device : str or torch.device
        Where to put the model.
    eval_mode : bool
        Put the model in evaluation mode (batch norm uses its running statistics).

    Returns
    -------
    SpeakerEmbeddingModel
        ``model(wavs (B, T), rel_lens (B,)) -> (B, embedding_dim)``; its ``config`` and the
        checkpoint's ``meta`` (as ``model.checkpoint_meta``) are attached.

    Example
    -------
    >>> import tempfile
    >>> model = SpeakerEmbeddingModel(embedding_dim=8, n_mels=16, base_channels=4,
    ...                               num_blocks=(1, 1, 1, 1))
    >>> folder = tempfile.mkdtemp()
    >>> _ = save_embedding_model(model, folder, {"source": "doctest"})
    >>> loaded = load_embedding_model(folder)
    >>> loaded(torch.randn(2, 4000), torch.tensor([1.0, 0.8])).shape
    torch.Size([2, 8])
    >>> loaded.checkpoint_meta["source"]
    'doctest'
    """
    path = _find_checkpoint(Path(path_or_folder))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - re-raised with the path and the fix
        raise ValueError(
            f"Could not read the embedding checkpoint {path}: {error}. It should be written by "
            f"lasersb.models.dino.save_embedding_model."
        ) from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(
            f"{path} is not a {CHECKPOINT_FORMAT} checkpoint (written by "
            f"lasersb.models.dino.save_embedding_model); got format "
            f"{payload.get('format') if isinstance(payload, dict) else type(payload).__name__}."
        )
    model = SpeakerEmbeddingModel(**payload["config"])
    model.load_state_dict(payload["state_dict"])
    model.checkpoint_meta = dict(payload.get("meta", {}))
    model.to(device)
    if eval_mode:
        model.eval()
    return model
