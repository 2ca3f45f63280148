#!/usr/bin/env python3
"""SUPERB query-by-example spoken term detection on QUESST 2014 (s3prl ``quesst14_dtw``).

Run from the repository root:

    python recipes/QUESST14/qbe/evaluate.py recipes/QUESST14/qbe/hparams/qbe.yaml \
        --data_folder=/data/quesst14Database --upstream_source=facebook/hubert-base-ls960

No training: frame features of one layer of a frozen upstream, subsequence DTW of every query
against every document (:mod:`lasersb.qbe`), scores standardised per query, then the metrics
from the official ground truth (:mod:`lasersb.metrics.qbe`). The steps:

1. ``setup_experiment``: parse ``<hparams> --key=value``, create the output folder.
2. ``run_on_main(prepare_quesst14)``: the manifests of the documents and queries.
3. Features of every document and query (batch of one, as s3prl), read at the corpus's 8 kHz
   and resampled to the upstream's rate, ``gain_db`` applied (s3prl: sox ``gain -3``).
4. Per split: standardised features, DTW scores, per-query standardised scores;
   ``<split>/benchmark.stdlist.xml`` (the file ``score-TWV-Cnxe.sh`` reads),
   ``<split>/scores/<query>.txt`` (documents by decreasing score), ``<split>/summary.json``,
   ``<split>/trials.npz`` (per-query trials, for the report's paired bootstrap).
5. ``qbe_summary.json`` and ``results.md`` with MTWV, ATWV, actual and minimum Cnxe per split.

``--layer=all`` scores every hidden layer from one forward pass per utterance
(:func:`evaluate_all_layers`): ``layer_<k>/`` per layer, and the layer with the best dev MTWV
(SUPERB's choice) beside the last layer (the releases') in ``qbe_summary.json``.

For a new corpus in the same layout change only ``build_manifests`` and the hparams.
"""

import csv
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
from speechbrain.utils.distributed import if_main_process, run_on_main
from tqdm import tqdm

from data_prep.quesst14_prepare import prepare_quesst14
from lasersb.data.audio import read_audio
from lasersb.data.feature_cache import FeatureCache
from lasersb.experiment import setup_experiment
from lasersb.metrics.bootstrap import write_qbe_trials
from lasersb.metrics.qbe import QbEGroundTruth, qbe_metrics
from lasersb.qbe import qbe_scores, standardise_features, standardise_scores, write_stdlist

logger = logging.getLogger(__name__)


def build_manifests(hparams):
    """Step 2 (corpus-specific): the manifests and the ground-truth folders."""
    return run_on_main(  # the result reaches every process
        prepare_quesst14,
        kwargs={
            "data_folder": hparams["data_folder"],
            "save_folder": hparams["manifest_folder"],
            "language": hparams["language"],
            "num_workers": hparams["prep_num_workers"],
        },
    )


def read_manifest(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def extract(encoder, rows, device, gain_db, desc):
    """Step 3: ``{ID: (frames, dim) CPU tensor}`` for the rows of a manifest."""
    gain = 10.0 ** (gain_db / 20.0)
    feats = {}
    for row in tqdm(rows, desc=desc, disable=not if_main_process()):
        wav = read_audio(row["wav"], sample_rate=encoder.sample_rate, resample=True, downmix=True)
        feats[row["ID"]] = encoder((wav * gain).to(device)).cpu()
    return feats


def evaluate_split(hparams, split, queries, docs, groundtruth, device):
    """Step 4: DTW scores, STD list, per-query lists and metrics of one split."""
    out_dir = Path(hparams["output_folder"]) / split
    q_names, d_names = list(queries), list(docs)
    feats = [queries[q] for q in q_names] + [docs[d] for d in d_names]
    if hparams["feature_normalization"]:
        feats = standardise_features(feats)
    start = time.perf_counter()
    raw = qbe_scores(
        feats[: len(q_names)],
        feats[len(q_names) :],
        distance=hparams["dist_method"],
        minmax_norm=hparams["minmax_norm"],
        backend=hparams["dtw_backend"],
        device=device,
        dtype=getattr(torch, hparams["dtw_dtype"]),
        max_cells=hparams["dtw_max_cells"],
        progress=lambda it: tqdm(it, desc=f"DTW {split}", disable=not if_main_process()),
    )
    seconds = time.perf_counter() - start
    scores = standardise_scores(raw)
    write_stdlist(
        out_dir / "benchmark.stdlist.xml", q_names, d_names, scores, hparams["score_threshold"]
    )
    (out_dir / "scores").mkdir(parents=True, exist_ok=True)
    for qi, query in enumerate(q_names):
        order = np.argsort(-scores[qi], kind="stable")
        lines = [f"{d_names[j]}\t{scores[qi, j]:.6f}\t{raw[qi, j]:.6f}" for j in order]
        (out_dir / "scores" / f"{query}.txt").write_text("\n".join(lines) + "\n")
    truth = QbEGroundTruth.from_folder(groundtruth)
    by_pair = {
        (q, d): scores[qi, di] for qi, q in enumerate(q_names) for di, d in enumerate(d_names)
    }
    decisions = {pair for pair, s in by_pair.items() if s > hparams["score_threshold"]}
    # rounded as in the XML the official tool reads
    by_pair = {pair: round(float(s), 4) for pair, s in by_pair.items()}
    metrics = qbe_metrics(by_pair, truth, decisions, hparams["default_score"])
    # Per-query trials: the report's paired bootstrap of the MTWV change reads them.
    write_qbe_trials(out_dir / "trials.npz", by_pair, truth, hparams["default_score"])
    metrics.update(
        split=split,
        upstream=hparams["upstream_source"],
        layer=hparams["layer"],
        dtw_seconds=round(seconds, 3),
        dtw_pairs=len(q_names) * len(d_names),
        auc=pair_auc(by_pair, truth.targets),
    )
    (out_dir / "summary.json").write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info("QbE %s: MTWV %.4f, ATWV %.4f", split, metrics["mtwv"], metrics["atwv"])
    return metrics


def pair_auc(scores, targets):
    """Area under the ROC curve of the scored (query, document) pairs (ties count half)."""
    from sklearn.metrics import roc_auc_score

    labels = [pair in targets for pair in scores]
    if all(labels) or not any(labels):
        return None
    return float(roc_auc_score(labels, list(scores.values())))


def write_results(hparams, results, extra=None):
    """Step 5: JSON summary (``extra``: its content instead) and a Markdown table."""
    folder = Path(hparams["output_folder"])
    folder.mkdir(parents=True, exist_ok=True)
    summary = results if extra is None else extra
    (folder / "qbe_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    lines = [
        f"QbE on QUESST 2014, upstream `{hparams['upstream_source']}` layer {hparams['layer']}",
        "",
        "| split | MTWV | ATWV | actCnxe | minCnxe | AUC | queries x documents |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for split, m in results.items():
        auc = "-" if m["auc"] is None else f"{m['auc']:.3f}"
        lines.append(
            f"| {split} | {m['mtwv']:.4f} | {m['atwv']:.4f} | {m['act_cnxe']:.4f} | "
            f"{m['min_cnxe']:.4f} | {auc} | {m['queries']} x {m['documents']} |"
        )
    (folder / "results.md").write_text("\n".join(lines) + "\n")


def main(argv):
    """Prepare, extract, match, score; see the module docstring."""
    hparams, run_opts = setup_experiment(argv)  # step 1
    manifests = build_manifests(hparams)
    device = torch.device(run_opts.get("device", "cpu"))
    # Under torchrun the main process evaluates and writes; the others wait for it.
    run_on_main(evaluate_all, args=[hparams, manifests, device])


def evaluate_all(hparams, manifests, device):
    """Extract the features, match every query against every document, score, write."""
    encoder = hparams["frame_encoder"].to(device).eval()
    if encoder.layer == "all":
        return evaluate_all_layers(hparams, manifests, encoder, device)
    docs = extract(
        encoder, read_manifest(manifests["documents"]), device, hparams["gain_db"], "documents"
    )
    results = {}
    for split in hparams["splits"]:
        rows = read_manifest(manifests[split])
        queries = extract(encoder, rows, device, hparams["gain_db"], f"{split} queries")
        results[split] = evaluate_split(
            hparams, split, queries, docs, manifests["groundtruth"][split], device
        )
    write_results(hparams, results)
    return results


def evaluate_all_layers(hparams, manifests, encoder, device):
    """``layer: all``: every hidden layer scored from one forward pass per utterance.

    The ``(L + 1, frames, dim)`` stacks go to a feature cache in the output folder
    (``feature_cache_dtype``), each layer is read back alone (memory-mapped) and evaluated as a
    ``layer: k`` run would be, into ``layer_<k>/``. The layer with the best MTWV on
    ``selection_split`` (SUPERB's choice; ties: the lower layer) gives ``qbe_summary.json``'s
    per-split metrics, the last layer's (the releases') are kept beside them (``last_layer``),
    and ``layer_selection`` lists every layer's MTWV per split.
    """
    cache = FeatureCache(
        Path(hparams["output_folder"]) / "features",
        "all_layers",
        dtype=hparams["feature_cache_dtype"],
    )
    gain = 10.0 ** (hparams["gain_db"] / 20.0)
    tables = {"documents": read_manifest(manifests["documents"])}
    tables.update({split: read_manifest(manifests[split]) for split in hparams["splits"]})
    num_layers = None
    for name, rows in tables.items():
        for row in tqdm(rows, desc=f"{name} (all layers)", disable=not if_main_process()):
            wav = read_audio(
                row["wav"], sample_rate=encoder.sample_rate, resample=True, downmix=True
            )
            stack = encoder((wav * gain).to(device)).cpu()  # one forward pass: every layer
            cache.save(row["ID"], row["wav"], stack)
            num_layers = stack.shape[0]
    per_layer = {}
    for layer in range(num_layers):
        layer_hparams = dict(
            hparams,
            layer=layer,
            output_folder=str(Path(hparams["output_folder"]) / f"layer_{layer}"),
        )

        def features(rows, layer=layer):
            return {
                row["ID"]: cache.load(row["ID"], row["wav"], layer=layer).float() for row in rows
            }

        docs = features(tables["documents"])
        per_layer[layer] = {
            split: evaluate_split(
                layer_hparams,
                split,
                features(tables[split]),
                docs,
                manifests["groundtruth"][split],
                device,
            )
            for split in hparams["splits"]
        }
        write_results(layer_hparams, per_layer[layer])
    chooser = hparams["selection_split"]
    if chooser not in hparams["splits"]:
        raise ValueError(
            f"selection_split {chooser!r} is not one of splits {hparams['splits']}: add it to "
            "--splits (SUPERB chooses the layer on dev)"
        )
    best = max(per_layer, key=lambda k: (per_layer[k][chooser]["mtwv"], -k))
    last = num_layers - 1
    results = dict(per_layer[best])
    results["last_layer"] = per_layer[last]
    results["layer_selection"] = {
        "split": chooser,
        "selected": best,
        "last": last,
        "mtwv": {s: [per_layer[k][s]["mtwv"] for k in per_layer] for s in hparams["splits"]},
    }
    write_results(dict(hparams, layer=best), per_layer[best], extra=results)
    logger.info("QbE: layer %d chosen on %s (last layer: %d)", best, chooser, last)
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
