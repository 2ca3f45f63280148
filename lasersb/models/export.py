"""Export of a fine-tuned upstream in Hugging Face format, shared by the SSFT Brains.

The folder holds ``save_pretrained`` weights (safetensors), the feature extractor config and
``lasersb_export.json`` (source, steps, method), written to a temporary folder and moved into
place, so that a killed export never leaves a half-written model. SUPERB (and every recipe's
``--upstream_source``) reads it like a hub checkpoint; :func:`export_readme` writes its
``README.md``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from speechbrain.utils.distributed import run_on_main

EXPORT_INFO = "lasersb_export.json"


def export_upstream_hf(upstream, folder, info: dict, write_extra=None) -> Path:
    """Write ``upstream`` to ``folder`` in HF format (on the main process only).

    Arguments
    ---------
    upstream : lasersb.models.upstream.SSLUpstream
        The upstream outside any DDP wrapper.
    folder : str or os.PathLike
        Destination (replaced if it exists).
    info : dict
        Written to ``lasersb_export.json``.
    write_extra : callable, optional
        ``write_extra(tmp_folder)`` adds files before the folder is moved into place.

    Returns
    -------
    pathlib.Path

    Example
    -------
    >>> import tempfile
    >>> from lasersb.models.tiny_upstream import build_tiny_upstream
    >>> from lasersb.models.upstream import SSLUpstream
    >>> root = Path(tempfile.mkdtemp())
    >>> up = SSLUpstream(build_tiny_upstream("hubert", root / "h"))
    >>> out = export_upstream_hf(up, root / "export", {"method": "test"})
    >>> sorted(p.name for p in out.iterdir())[:2]
    ['config.json', 'lasersb_export.json']
    """
    folder = Path(folder)

    def _save():
        tmp = folder.with_name(folder.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        upstream.save_hf(tmp)
        if write_extra is not None:
            write_extra(tmp)
        (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(tmp, folder)

    run_on_main(_save)
    return folder


def export_readme(info: dict) -> str:
    """The ``README.md`` of an SSFT export: what it is and how to load it.

    Arguments
    ---------
    info : dict
        The content of the export's ``lasersb_export.json``.

    Example
    -------
    >>> text = export_readme({"source": "facebook/hubert-base-ls960", "optimizer_step": 3600,
    ...                       "method": "LASER SSFT", "adapters": None})
    >>> "AutoModel.from_pretrained" in text
    True
    """
    lines = [
        f"# {info['method']} upstream (lasersb export)",
        "",
        f"Fine-tuned from `{info['source']}` for {info['optimizer_step']} optimiser steps.",
        "",
        "Load it with lasersb (every recipe's `--upstream_source=<this folder>` does):",
        "",
        "```python",
        "from lasersb.models.upstream import SSLUpstream, load_upstream",
        "model = load_upstream(folder)       # transformers model",
        "upstream = SSLUpstream(folder)      # frozen upstream for recipes",
        "```",
        "",
    ]
    adapters = info.get("adapters")
    if adapters:
        config = adapters["config"]
        lines += [
            f"It carries {adapters['count']} lasersb bottleneck adapters (layers "
            f"{config['layers']}, positions {config['positions']}, bottleneck "
            f"{config['bottleneck']}) trained on a frozen upstream. Their weights are in "
            "`model.safetensors`, their configuration in `config.json` (`lasersb_adapters`).",
            "",
            "`transformers.AutoModel.from_pretrained(folder)` refuses this folder on purpose "
            "(its `model_type` names lasersb's loader): transformers would load the base model "
            "and drop the adapters. Without lasersb's loader, the adapter set alone is "
            f"`{adapters['file']}` (`lasersb.models.adapters.load_adapters(file, model)` puts "
            "it onto the original upstream).",
        ]
    else:
        lines += [
            "It is a plain transformers folder: `transformers.AutoModel.from_pretrained(folder)` "
            "loads the same weights.",
        ]
    return "\n".join(lines) + "\n"
