"""The SUPERB protocol driver (recipes/SUPERB/sweep.py) on the mini corpus, in this process.

A PR sweep with a grid of 2 rates and 2 seeds (2 search runs, then 2 seeded runs) must run the
frozen upstream once per utterance: every run reads the shared feature cache,
keyed by the upstream's checksum. An ASR sweep on the same cache then runs it on no utterance
at all. The sweep's choice of rate, its files, and the report read back from them are checked.
"""

import hashlib
import json
import runpy
from pathlib import Path

import pytest
import torch

from lasersb.environment import git_state
from lasersb.metrics.bootstrap import read_utterance_errors
from lasersb.models.upstream import SSLUpstream
from lasersb.report import collect_results, render_table

ROOT = Path(__file__).resolve().parents[1]
SWEEP = ROOT / "recipes" / "SUPERB" / "sweep.py"


@pytest.fixture(scope="module")
def sweeps(mini_corpus, tiny_upstreams, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    forwarded = []
    original_forward = SSLUpstream.forward

    def counting_forward(self, wavs, wav_lens=None):
        forwarded.append(int(wavs.shape[0]))
        return original_forward(self, wavs, wav_lens)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    sweep_main = runpy.run_path(str(SWEEP), run_name="sweep_test")["main"]
    common = [
        f"--data_folder={mini_corpus / 'LibriSpeech'}",
        f"--lexicon_file={mini_corpus / 'librispeech-lexicon.txt'}",
        f"--upstream_source={tiny_upstreams['hubert']}",
        f"--manifest_folder={out / 'manifests'}",
        f"--feature_cache_folder={out / 'features'}",
        "--train_max_utterances=8", "--number_of_epochs=2", "--noprogressbar",
    ]  # fmt: skip
    counts = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SSLUpstream, "forward", counting_forward)
        for task in ("pr", "asr"):
            hparams = ROOT / "recipes" / "SUPERB" / task / "hparams" / f"{task}_mini.yaml"
            before = sum(forwarded)
            sweep_main(
                [task, str(hparams), f"--output_folder={out / task}", "--lr_grid", "1e-3 1e-2",
                 "--seeds", "1 2", "--optimizer_step_limit=4", *common]
            )  # fmt: skip
            counts[task] = sum(forwarded) - before
    torch.set_num_threads(threads)
    return out, counts


def _evaluated_utterances(run_folder):
    results = json.loads((run_folder / "results.json").read_text())
    ids = set()
    for split in ("dev-clean", "test-clean", "train"):
        ids |= set(read_utterance_errors(run_folder / results[split]["utterance_errors"]))
    return ids


@pytest.mark.slow
def test_one_upstream_pass_per_utterance_for_the_whole_sweep(sweeps):
    out, counts = sweeps
    utterances = _evaluated_utterances(out / "pr" / "seed_1")
    assert len(utterances) > 8  # training subset + dev-clean + test-clean
    # 2 searches + 2 seeds, each training and evaluating: every utterance through the upstream
    # exactly once, then from the cache (one entry per utterance).
    assert counts["pr"] == len(utterances)
    entries = list((out / "features").rglob("*.pt"))
    assert len(entries) == len(utterances)
    assert len({p.parent.parent for p in entries}) == 1  # one upstream checksum folder
    # ASR (its training subset lies within PR's) finds every hidden state in the cache.
    assert _evaluated_utterances(out / "asr" / "seed_2") <= utterances
    assert counts["asr"] == 0


@pytest.mark.slow
def test_sweep_picks_the_best_dev_rate_and_trains_every_seed_with_it(sweeps):
    out, _ = sweeps
    sweep = json.loads((out / "pr" / "sweep.json").read_text())
    search = json.loads((out / "pr" / "lr_search.json").read_text())
    assert sweep["lr_search"] == search and search["steps"] == 1  # 10 % of 4 steps, at least 1
    grid = {p["lr"]: p["dev_error_rate"] for p in search["grid"]}
    assert set(grid) == {1e-3, 1e-2}
    for point in search["grid"]:  # each grid point's dev error rate is its run's
        results = json.loads((Path(point["run"]) / "results.json").read_text())
        assert results["dev-clean"]["error_rate"] == point["dev_error_rate"]
        assert "test-clean" not in results  # the search never looks at the test set
    assert sweep["lr"] == min(grid, key=grid.get)
    assert sweep["seeds"] == [1, 2] and sweep["runs"] == {"1": "seed_1", "2": "seed_2"}
    for seed in (1, 2):
        hparams = (out / "pr" / f"seed_{seed}" / "hyperparams.yaml").read_text()
        assert f"\nseed: {seed}\n" in hparams and f"\nlr: {sweep['lr']}\n" in hparams
        env = json.loads((out / "pr" / f"seed_{seed}" / "environment.json").read_text())
        weights = Path(env["upstream_source"]) / "model.safetensors"
        assert env["upstream_weights_sha256"] == {
            "model.safetensors": hashlib.sha256(weights.read_bytes()).hexdigest()
        }
        assert env["hparams_sha256"] == hashlib.sha256(hparams.encode()).hexdigest()
        assert env["commit"] == git_state(ROOT)["commit"] and env["world_size"] == 1
    # The report reads the sweep as one row: mean ± std over the 2 seeds, the chosen rate.
    runs = collect_results([out / "pr", out / "asr"], names=["tiny", "tiny"])
    table = render_table(runs).splitlines()
    assert table[0] == (
        "| Upstream | PR PER test-clean (%) | PR lr | ASR WER test-clean (%) | ASR lr |"
    )
    seeds = [
        json.loads((out / "pr" / f"seed_{s}" / "results.json").read_text())["test-clean"]
        for s in (1, 2)
    ]
    mean = (seeds[0]["error_rate"] + seeds[1]["error_rate"]) / 2
    std = abs(seeds[0]["error_rate"] - seeds[1]["error_rate"]) / 2**0.5
    cells = [c.strip() for c in table[2].strip("|").split("|")]
    assert cells[1] == f"{mean:.2f} ± {std:.2f} (n=2)"
    assert cells[2] == f"{sweep['lr']:.0e}"
