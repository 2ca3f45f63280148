"""The QUESST 2014 QbE recipe (recipes/QUESST14/qbe/evaluate.py, hparams/qbe_mini.yaml) on the
mini corpus's QUESST14 set, and data_prep/quesst14_prepare.py on the official layout."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from data_prep.quesst14_prepare import QUESST14PrepError, prepare_quesst14
from lasersb.metrics.qbe import read_stdlist, score_stdlist

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "recipes" / "QUESST14" / "qbe" / "evaluate.py"
MINI = REPO / "recipes" / "QUESST14" / "qbe" / "hparams" / "qbe_mini.yaml"


def _run(out, mini_corpus, *extra):
    from tests.test_recipe_registry import import_script

    module = import_script(SCRIPT, f"qbe_{out.name}")
    argv = [str(MINI), f"--data_folder={mini_corpus}/QUESST14", f"--output_folder={out}", *extra]
    module.main(argv)
    return json.loads((out / "qbe_summary.json").read_text())


@pytest.fixture(scope="module")
def fbank_run(mini_corpus, tmp_path_factory, monkeypatch_module):
    out = tmp_path_factory.mktemp("qbe_fbank")
    return out, _run(out, mini_corpus)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setattr(sys, "argv", [str(SCRIPT)])
        yield mp


def test_true_matches_score_above_false_ones(fbank_run):
    # registry entry quesst14_qbe_mini (qbe_mini.yaml): s3prl's fbank baseline features
    _, summary = fbank_run
    for split in ("dev", "eval"):
        m = summary[split]
        assert (m["queries"], m["documents"], m["targets"]) == (6, 20, 12)
        assert m["auc"] > 0.7, (split, m["auc"])
        assert m["mtwv"] > 0.1, (split, m["mtwv"])
        assert m["min_cnxe"] < 0.9, (split, m["min_cnxe"])


def test_outputs_and_official_xml_scoring_agree(fbank_run, mini_corpus):
    out, summary = fbank_run
    scores, yes = read_stdlist(out / "dev" / "benchmark.stdlist.xml")
    assert len(scores) == 6 * 20 and yes
    gt = mini_corpus / "QUESST14" / "scoring" / "groundtruth_quesst14_dev"
    from_xml = score_stdlist(out / "dev" / "benchmark.stdlist.xml", gt)
    for key in ("mtwv", "atwv", "act_cnxe", "min_cnxe"):
        assert from_xml[key] == pytest.approx(summary["dev"][key], abs=1e-12), key
    lines = (out / "dev" / "scores" / "quesst14_dev_0001.txt").read_text().splitlines()
    assert len(lines) == 20
    values = [float(line.split("\t")[1]) for line in lines]
    assert values == sorted(values, reverse=True)
    assert "| dev |" in (out / "results.md").read_text()


def test_any_upstream_and_layer(mini_corpus, tiny_upstreams, tmp_path, monkeypatch_module):
    # a local HF folder (what SSFT writes as upstream_hf) and a middle layer: pipeline check
    summary = _run(
        tmp_path, mini_corpus, f"--upstream_source={tiny_upstreams['wavlm']}", "--layer=1",
        "--splits=[dev]",
    )  # fmt: skip
    assert list(summary) == ["dev"] and summary["dev"]["layer"] == 1
    assert summary["dev"]["scored_trials"] == 120


def test_run_sh_mini(mini_corpus, tmp_path):
    env = dict(os.environ, LASERSB_MINI_ROOT=str(mini_corpus), PYTHONPATH=str(REPO))
    cmd = ["bash", "recipes/QUESST14/qbe/run.sh", "--mini", "--exp", str(tmp_path / "exp"),
           "--", "--splits=[dev]"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Best dev layer: -1" in proc.stdout
    again = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert "already done" in again.stdout + again.stderr


def test_prepare_is_idempotent_and_filters_language(mini_corpus, tmp_path):
    root = tmp_path / "quesst14Database"
    shutil.copytree(mini_corpus / "QUESST14", root)
    key = root / "scoring" / "language_key_utterances.lst"
    lines = key.read_text().splitlines()
    key.write_text("\n".join([lines[0].replace("nnenglish", "albanian"), *lines[1:]]) + "\n")
    out = prepare_quesst14(tmp_path, tmp_path / "manifests")  # the parent folder works too
    assert out["counts"] == {"documents": 19, "dev": 6, "eval": 6}
    stamp = out["documents"].stat().st_mtime_ns
    assert prepare_quesst14(root, tmp_path / "manifests")["counts"] == out["counts"]
    assert out["documents"].stat().st_mtime_ns == stamp  # up to date: not rewritten
    everything = prepare_quesst14(root, tmp_path / "all", language=None)
    assert everything["counts"]["documents"] == 20
    header = out["documents"].read_text().splitlines()[1].split(",")
    assert header[-1] == "8000"  # listed as the corpus has it; the recipe resamples


def test_prepare_errors_name_the_file_and_fix(mini_corpus, tmp_path):
    with pytest.raises(QUESST14PrepError, match="does not exist"):
        prepare_quesst14(tmp_path / "missing", tmp_path / "m")
    root = tmp_path / "quesst14Database"
    shutil.copytree(mini_corpus / "QUESST14", root)
    (root / "scoring" / "language_key_dev.lst").unlink()
    with pytest.raises(QUESST14PrepError, match="language_key_dev.lst.*--all-languages"):
        prepare_quesst14(root, tmp_path / "m")
    shutil.rmtree(root / "scoring" / "groundtruth_quesst14_eval")
    with pytest.raises(QUESST14PrepError, match=r"groundtruth_quesst14_eval.*\*\.ecf\.xml"):
        prepare_quesst14(root, tmp_path / "m")


def test_all_layers_from_one_forward_pass(
    mini_corpus, tiny_upstreams, tmp_path, monkeypatch_module, fbank_run
):
    """``--layer=all``: each utterance through the upstream once; the last layer's metrics equal
    a ``--layer=-1`` run's; the best dev layer is reported beside the last layer."""
    from lasersb.models.upstream import SSLUpstream

    forwarded = []
    forward = SSLUpstream.forward

    def counting(self, wavs, wav_lens=None):
        forwarded.append(wavs.shape[0])
        return forward(self, wavs, wav_lens)

    upstream = f"--upstream_source={tiny_upstreams['wavlm']}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SSLUpstream, "forward", counting)
        summary = _run(
            tmp_path / "all", mini_corpus, upstream, "--layer=all",
            "--feature_cache_dtype=float32",
        )  # fmt: skip
    assert sum(forwarded) == 20 + 6 + 6  # documents, dev and eval queries: once each
    selection = summary["layer_selection"]
    dev = selection["mtwv"]["dev"]
    assert selection["last"] == 3 and len(dev) == 4  # tiny WavLM: 3 layers + the CNN output
    assert selection["selected"] == max(range(4), key=lambda k: (dev[k], -k))
    assert summary["dev"]["layer"] == summary["eval"]["layer"] == selection["selected"]
    assert summary["last_layer"]["eval"]["layer"] == 3
    # The last layer's metrics equal a plain --layer=-1 run's (the releases' setting).
    alone = _run(tmp_path / "last", mini_corpus, upstream, "--layer=-1")
    per_layer = json.loads((tmp_path / "all" / "layer_3" / "qbe_summary.json").read_text())
    for split in ("dev", "eval"):
        assert selection["mtwv"][split][3] == alone[split]["mtwv"]
        for key in ("mtwv", "atwv", "act_cnxe", "min_cnxe"):
            assert per_layer[split][key] == alone[split][key], (split, key)
            assert summary["last_layer"][split][key] == alone[split][key], (split, key)
    # The report reads it: the dev-chosen layer's eval MTWV, and the last layer's beside it.
    from lasersb.report import collect_results, qbe_notes, render_table

    runs = collect_results([tmp_path / "all"], names=["tiny"])
    table = render_table(runs).splitlines()
    assert table[0] == "| Upstream | QbE MTWV eval | QbE MTWV eval (last layer) |"
    assert table[2] == (
        f"| tiny | {summary['eval']['mtwv']:.4f} | {summary['last_layer']['eval']['mtwv']:.4f} |"
    )
    assert qbe_notes(runs) == [
        f"- QbE: QUESST 2014 MTWV (higher is better) of layer {selection['selected']} (best dev "
        "MTWV of layers 0-3) of every upstream; the last layer's beside it"
    ]

    # Against the fbank run, with intervals: each MTWV change's paired bootstrap over the
    # queries, from the per-query trials both runs wrote (the chosen and the last layer's).
    import numpy as np

    from lasersb.metrics.bootstrap import paired_bootstrap_mtwv_change

    both = collect_results([fbank_run[0], tmp_path / "all"], names=["fbank", "tiny"])
    table = render_table(both, baseline="fbank", intervals=True, n_resamples=999).splitlines()
    assert table[0] == (
        "| Upstream | QbE MTWV eval | rel. to fbank | 95 % CI | QbE MTWV eval (last layer) "
        "| rel. to fbank | 95 % CI |"
    )
    cells = [c.strip() for c in table[3].strip("|").split("|")]
    base = dict(np.load(fbank_run[0] / "eval" / "trials.npz"))
    # The fbank run has no last-layer column to compare with: "-" there.
    assert cells[5:] == ["-", "-"]
    from lasersb.report import _qbe_trials_file

    tiny = [r for r in both if r["name"] == "tiny"][0]
    assert _qbe_trials_file(tiny, "eval (last layer)") == tmp_path / "all/layer_3/eval/trials.npz"
    for column, layer in ((3, selection["selected"]),):
        ours = dict(np.load(tmp_path / "all" / f"layer_{layer}" / "eval" / "trials.npz"))
        ci = paired_bootstrap_mtwv_change(base, ours, n_resamples=999, rng=0)
        # With 6 queries some resamples have a baseline MTWV of 0 (no relative change): then
        # the interval is undefined and the cell says "-".
        text = "-"
        if ci["low"] is not None:
            text = f"[{100 * ci['low']:+.1f}, {100 * ci['high']:+.1f}] %"
            text += " n.s." if ci["contains_zero"] else ""
        assert cells[column] == text, cells
        assert cells[column - 1] == f"{100 * ci['change']:+.1f} %"
