"""The base of every lasersb Brain: ``sb.Brain`` that runs the same under torchrun.

SpeechBrain wraps every module with trainable parameters in ``DistributedDataParallel`` and
converts its batch norms to ``SyncBatchNorm`` whatever the device, so under ``torchrun`` on the
CPU (gloo) any Brain with a batch norm stops ("SyncBatchNorm layers only work with GPU
modules"), and every attribute read through ``self.modules.<name>`` fails on the wrapper.
:class:`DistributedBrain` keeps SpeechBrain's behaviour and changes three things:

- modules are wrapped by :func:`lasersb.distributed.wrap_ddp` (``SyncBatchNorm`` on CUDA only;
  ``find_unused_parameters`` chosen per Brain by :attr:`DistributedBrain.ddp_find_unused_parameters`
  or on the command line);
- ``self.unwrapped.<name>`` reaches a module through its wrapper: attributes, and computations
  that run on rank 0 only (plots, exports, diagnostics), go through it;
- each process draws its own random numbers (augmentation, crops, dropout):
  ``seed + 1000 * rank`` at the start of ``fit``, and per-rank RNG states in checkpoints
  (:class:`lasersb.checkpoints.RandomState`).
"""

from __future__ import annotations

import speechbrain as sb

from lasersb.distributed import unwrap, wrap_ddp


class _UnwrappedModules:
    """``brain.unwrapped.<name>``: ``brain.modules.<name>`` outside its DDP wrapper."""

    def __init__(self, modules):
        self._modules = modules

    def __getattr__(self, name):
        try:
            return unwrap(self._modules[name])
        except KeyError:
            raise AttributeError(f"no module {name!r} in the Brain's modules") from None


class DistributedBrain(sb.Brain):
    """``sb.Brain`` whose distributed behaviour suits lasersb's modules (see the module doc).

    Subclasses set :attr:`ddp_find_unused_parameters` when some trainable parameters may take
    no part in a training step.

    Example
    -------
    >>> import torch
    >>> brain = DistributedBrain(modules={"layer": torch.nn.Linear(2, 2)})
    >>> brain.unwrapped.layer is brain.modules.layer
    True
    """

    #: DDP's ``find_unused_parameters`` for this Brain's modules. False: every trainable
    #: parameter takes part in every step (the default costs no graph traversal per step).
    ddp_find_unused_parameters = False

    @property
    def unwrapped(self):
        """The Brain's modules outside their DDP wrappers: ``self.unwrapped.upstream``."""
        return _UnwrappedModules(self.modules)

    def _wrap_distributed(self):
        """Wrap the modules with trainable parameters (see :func:`lasersb.distributed.wrap_ddp`)."""
        if not self.distributed_launch:
            return super()._wrap_distributed()  # nothing, or DataParallel when asked
        find_unused = bool(self.find_unused_parameters or self.ddp_find_unused_parameters)
        for name, module in self.modules.items():
            if any(p.requires_grad for p in module.parameters()):
                self.modules[name] = wrap_ddp(module, self.device, find_unused)
        return None

    def _train_loader_specifics(self, dataset, loader_kwargs):
        """SpeechBrain's DDP sampling, with :class:`~lasersb.data.pipelines.ShardedSampler`.

        SpeechBrain's ``DistributedSamplerWrapper`` breaks when a rank's share is one batch.
        """
        from speechbrain.dataio.sampler import DistributedSamplerWrapper

        from lasersb.data.pipelines import ShardedSampler

        loader_kwargs = super()._train_loader_specifics(dataset, loader_kwargs)
        for key in ("sampler", "batch_sampler"):
            wrapper = loader_kwargs.get(key)
            if isinstance(wrapper, DistributedSamplerWrapper):
                self.train_sampler = loader_kwargs[key] = ShardedSampler(
                    wrapper.sampler,
                    num_replicas=wrapper.num_replicas,
                    rank=wrapper.rank,
                    shuffle=wrapper.shuffle,
                    seed=wrapper.seed,
                    drop_last=wrapper.drop_last,
                )
        return loader_kwargs

    def on_fit_start(self):
        """Seed each process's own random stream, then wrap, build optimisers and recover."""
        from lasersb.experiment import seed_rank

        seed_rank(self.hparams.seed)
        super().on_fit_start()
