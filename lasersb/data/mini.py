"""The embedded mini corpus: tiny look-alikes of LibriSpeech, VoxCeleb1, DEMAND, IEMOCAP, ADReSS.

Everything is real speech synthesised with espeak-ng (see :mod:`lasersb.data.mini_espeak`), 16 kHz
mono, written in the exact on-disk layouts of the real corpora so that the real ``data_prep``
scripts and recipes run on it unchanged (recipes' ``--mini`` mode and the test suite use it).
It is deterministic: the same seed and options give byte-identical files.

Layout under the root (speaker ID ranges are fixed so tests can rely on them)::

    mini_corpus.json                         options, seed, version, counts, durations
    librispeech-lexicon.txt                  WORD<TAB>ARPAbet phones with stress (CMUdict)
    LibriSpeech/SPEAKERS.TXT
    LibriSpeech/train-clean-100/<spk>/<chapter>/<spk>-<chapter>-<utt:04d>.flac + .trans.txt
        speakers 1001.. (train-clean-100), 2001.. (dev-clean), 3001.. (test-clean);
        chapter = spk * 100 + 1, 2, ...; utterances 1-6 s
    VoxCeleb1/wav/id1NNNN/<11-char video>/<NNNNN>.wav, veri_test2.txt, vox1_meta.csv
        dev speakers id10001.., test speakers id10270.. (as in VoxCeleb1)
    DEMAND/<TYPE>/ch01.wav                   18 DEMAND types (seen D*, T*, O*, P*; unseen N*, S*)
    IEMOCAP/Session{1..5}/sentences/wav/<dialog>/<utt>.wav
    IEMOCAP/Session{1..5}/dialog/EmoEvaluation/<dialog>.txt (+ dialog/transcriptions/<dialog>.txt)
        4 emotions neu/hap/ang/sad rendered as prosody styles (pipeline tests only)
    ADReSS/train/Full_wave_enhanced_audio/{cc,cd}/S<NNN>.wav, ADReSS/train/{cc,cd}_meta_data.txt
    ADReSS/test/Full_wave_enhanced_audio/S<NNN>.wav, ADReSS/test/meta_data_test.txt (with labels)
        cc = S001.., cd = S079.., test = S160..; cd speech is slower with pauses, "UH"/"UM"
        fillers and repetitions (pipeline tests only)
    QUESST14/Audio/quesst14_<NNNNN>.wav      documents (8 kHz, as QUESST 2014): sentences by 4
        voices; documents 1..2K each contain one of K key words (each word in 2 documents)
    QUESST14/{dev,eval}_queries/quesst14_{dev,eval}_<NNNN>.wav  the K words spoken alone by
        other voices (one per query; dev and eval voices differ)
    QUESST14/scoring/language_key_{utterances,dev,eval}.lst, groundtruth_quesst14_{dev,eval}/
        (quesst14.ecf.xml, quesst14_<split>.tlist.xml, quesst14_<split>.rttm), the official
        layout; RTTM times are estimated from the word's position in the text

Use :func:`get_mini_corpus` (cached) in code and tests, ``lasersb-mini-corpus --out DIR`` on the
command line.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile

from lasersb.data.mini_espeak import EspeakSynthesizer, Segment, SynthesisJob
from lasersb.data.mini_noise import DEMAND_SEEN, DEMAND_TYPES, DEMAND_UNSEEN, demand_noise
from lasersb.data.mini_text import load_vocabulary, random_sentence, vocabulary_words, write_lexicon

GENERATOR_VERSION = 2
"""Bumped whenever the generator's output changes (part of the cache key)."""

SAMPLE_RATE = 16000
QUESST_SAMPLE_RATE = 8000
CORPORA = ("librispeech", "voxceleb1", "demand", "iemocap", "adress", "quesst14")
EMOTIONS = ("neu", "hap", "ang", "sad")
__all__ = [
    "CORPORA",
    "DEMAND_SEEN",
    "DEMAND_TYPES",
    "DEMAND_UNSEEN",
    "EMOTIONS",
    "GENERATOR_VERSION",
    "MiniCorpusOptions",
    "PRETRAIN_OPTIONS",
    "PRETRAIN_SEED",
    "generate_mini_corpus",
    "get_mini_corpus",
    "get_pretrain_corpus",
    "planned_librispeech_texts",
    "main",
]

_FEMALE = (
    "f1 f2 f3 f4 f5 Alicia Andrea Annie anika aunty belinda linda steph steph2 steph3 grandma"
).split()
_MALE = (
    "m1 m2 m3 m4 m5 m6 m7 m8 Andy Lee Denis Marco Hugo michel travis victor antonio sandro "
    "john paul rob robert ian max zac ed norbert pablo pedro quincy miguel"
).split()
_ACCENTS = {
    "en-us": "USA",
    "en": "UK",
    "en-gb-scotland": "UK",
    "en-gb-x-rp": "UK",
    "en-029": "Jamaica",
    "en-us-nyc": "USA",
    "en-gb-x-gbclan": "UK",
    "en-gb-x-gbcwmd": "UK",
}
_SURNAMES = (
    "Smith Jones Taylor Brown Wilson Evans Thomas Johnson Roberts Walker Wright Robinson "
    "Thompson White Hughes Edwards Green Hall Wood Harris Lewis Martin Jackson Clarke Clark "
    "Turner Hill Scott Cooper Morris Ward Moore King Watson Baker Harrison Morgan Patel Young "
    "Allen Mitchell James Anderson Phillips Lee Bell Parker Davis"
).split()
# emotion -> (pitch offset, pitch range, rate factor, amplitude factor)
_EMOTION_STYLE = {
    "neu": (0, 45, 1.0, 1.0),
    "hap": (18, 90, 1.12, 1.3),
    "ang": (10, 75, 1.18, 1.9),
    "sad": (-15, 12, 0.72, 0.5),
}
_EMOTION_VAD = {
    "neu": (2.5, 2.5, 2.5),
    "hap": (4.0, 3.5, 3.0),
    "ang": (1.5, 4.0, 4.0),
    "sad": (1.5, 2.0, 2.0),
}
_EMOTION_NAME = {"neu": "Neutral", "hap": "Happiness", "ang": "Anger", "sad": "Sadness"}


@dataclasses.dataclass(frozen=True)
class MiniCorpusOptions:
    """Sizes of the embedded mini corpus (all part of the cache key).

    Parameters
    ----------
    ls_train_speakers, ls_train_chapters, ls_train_utts : int
        LibriSpeech train-clean-100: speakers x chapters x utterances per chapter.
    ls_dev_speakers, ls_test_speakers, ls_eval_chapters, ls_eval_utts : int
        dev-clean / test-clean: speakers each, chapters per speaker, utterances per chapter.
    vox_dev_speakers, vox_test_speakers, vox_videos, vox_utts : int
        VoxCeleb1: speakers (dev / test), videos per speaker, utterances per video.
    demand_seconds : float
        Length of each DEMAND noise recording.
    babble_talkers : int
        Number of synthesised talkers mixed into the babble noises.
    iemocap_sessions, iemocap_utts : int
        IEMOCAP sessions (1-5) and utterances per session (spread over 2 dialogs, 4 emotions).
    adress_train_per_class, adress_test_per_class : int
        ADReSS subjects per class (cc / cd) in train and test.
    quesst_terms, quesst_docs : int
        QUESST 2014: key words (queries per split) and documents (at least 2 per key word).
    corpora : tuple of str
        Which corpora to generate (subset of :data:`CORPORA`); the lexicon is always written.

    Example
    -------
    >>> MiniCorpusOptions(ls_train_speakers=2).ls_train_speakers
    2
    """

    ls_train_speakers: int = 12
    ls_train_chapters: int = 2
    ls_train_utts: int = 5
    ls_dev_speakers: int = 4
    ls_test_speakers: int = 4
    ls_eval_chapters: int = 2
    ls_eval_utts: int = 3
    vox_dev_speakers: int = 8
    vox_test_speakers: int = 4
    vox_videos: int = 2
    vox_utts: int = 3
    demand_seconds: float = 6.0
    babble_talkers: int = 8
    iemocap_sessions: int = 5
    iemocap_utts: int = 8
    adress_train_per_class: int = 8
    adress_test_per_class: int = 4
    quesst_terms: int = 6
    quesst_docs: int = 20
    corpora: tuple[str, ...] = CORPORA

    def __post_init__(self):
        unknown = set(self.corpora) - set(CORPORA)
        if unknown:
            raise ValueError(f"unknown corpora {sorted(unknown)}; choose from {CORPORA}")
        object.__setattr__(self, "corpora", tuple(c for c in CORPORA if c in self.corpora))
        if self.quesst_docs < 2 * self.quesst_terms:
            raise ValueError(
                f"quesst_docs must be >= 2 * quesst_terms ({2 * self.quesst_terms}), got "
                f"{self.quesst_docs}"
            )
        if not 1 <= self.iemocap_sessions <= 5:
            raise ValueError(f"iemocap_sessions must be 1-5, got {self.iemocap_sessions}")
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name != "corpora" and value < 1:
                raise ValueError(f"{field.name} must be >= 1, got {value}")

    def cache_key(self, seed: int) -> str:
        """Hash of options, seed and :data:`GENERATOR_VERSION` (12 hex digits)."""
        blob = json.dumps(
            {"options": dataclasses.asdict(self), "seed": seed, "version": GENERATOR_VERSION},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclasses.dataclass
class _Voice:
    voice: str
    gender: str  # "F" or "M"
    accent: str
    pitch: int
    pitch_range: int
    rate: int
    name: str


class _VoiceBank:
    """Hands out distinct synthetic speakers (variant x accent x pitch x rate)."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.pools = {"F": list(rng.permutation(_FEMALE)), "M": list(rng.permutation(_MALE))}
        self.used = {"F": 0, "M": 0}
        first = load_vocabulary()["NAME"]  # alternating male, female first names
        self.names = {}
        for gender, offset in (("M", 0), ("F", 1)):
            names = [f"{f.capitalize()} {s}" for f in first[offset::2] for s in _SURNAMES]
            self.names[gender] = [names[i] for i in rng.permutation(len(names))]

    def new(self, gender: str | None = None) -> _Voice:
        rng = self.rng
        gender = gender or ("F" if rng.random() < 0.5 else "M")
        pool = self.pools[gender]
        variant = pool[self.used[gender] % len(pool)]
        self.used[gender] += 1
        accent = list(_ACCENTS)[rng.integers(len(_ACCENTS))]
        return _Voice(
            voice=f"{accent}+{variant}",
            gender=gender,
            accent=accent,
            pitch=int(rng.integers(30, 71)),
            pitch_range=int(rng.integers(35, 76)),
            rate=int(rng.integers(150, 196)),
            name=self.names[gender].pop(),
        )


def _segment(voice: _Voice, text: str, rng, rate=None, pitch=None, prange=None, pause=0.0):
    return Segment(
        text=text,
        voice=voice.voice,
        rate=int(rate if rate is not None else voice.rate + rng.integers(-6, 7)),
        pitch=int(np.clip(pitch if pitch is not None else voice.pitch, 0, 100)),
        pitch_range=int(np.clip(prange if prange is not None else voice.pitch_range, 0, 100)),
        pause_after=float(pause),
    )


def _sentence_job(voice, rng, lo, hi, n_alt=5, **kw) -> tuple[SynthesisJob, list[str]]:
    texts = [random_sentence(rng) for _ in range(n_alt)]
    alts = tuple((_segment(voice, t, rng, **kw),) for t in texts)
    return SynthesisJob(alts, lo, hi, int(rng.integers(2**31))), texts


class _Plan:
    """Collects synthesis jobs and what to do with each result."""

    def __init__(self):
        self.jobs: list[SynthesisJob] = []
        self.sinks: list = []
        self.finalisers: list = []
        self.texts: list[tuple[str, list[str]]] = []  # (group, candidate texts) per utterance

    def add(self, job: SynthesisJob, sink) -> None:
        self.jobs.append(job)
        self.sinks.append(sink)


def _finish(wav: np.ndarray, rng, peak=(0.3, 0.7), pad=(0.05, 0.15), floor=3e-4) -> np.ndarray:
    """Pad with silence, set a random peak level and add a faint noise floor."""
    lead, tail = (int(rng.uniform(*pad) * SAMPLE_RATE) for _ in range(2))
    out = np.concatenate([np.zeros(lead), wav.astype(np.float64), np.zeros(tail)])
    out *= rng.uniform(*peak) / (np.max(np.abs(out)) + 1e-9)
    out += floor * rng.standard_normal(out.size)
    return np.clip(out, -0.99, 0.99).astype(np.float32)


def _write(path: Path, wav: np.ndarray, fmt: str = "WAV") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wav, SAMPLE_RATE, subtype="PCM_16", format=fmt)


# --------------------------------------------------------------------------- LibriSpeech
def _plan_librispeech(root: Path, opts: MiniCorpusOptions, bank, rng, plan, stats) -> None:
    ls = root / "LibriSpeech"
    splits = (
        (
            "train-clean-100",
            1001,
            opts.ls_train_speakers,
            opts.ls_train_chapters,
            opts.ls_train_utts,
        ),
        ("dev-clean", 2001, opts.ls_dev_speakers, opts.ls_eval_chapters, opts.ls_eval_utts),
        ("test-clean", 3001, opts.ls_test_speakers, opts.ls_eval_chapters, opts.ls_eval_utts),
    )
    speakers_txt = []
    transcripts: dict[Path, list[str]] = {}
    for split, first_id, n_spk, n_chap, n_utt in splits:
        for s in range(n_spk):
            spk = first_id + s
            voice = bank.new("F" if s % 2 == 0 else "M")
            speakers_txt.append((spk, voice, split, n_chap * n_utt))
            for c in range(n_chap):
                chapter = spk * 100 + c + 1
                folder = ls / split / str(spk) / str(chapter)
                trans = folder / f"{spk}-{chapter}.trans.txt"
                transcripts[trans] = [""] * n_utt
                for u in range(n_utt):
                    job, texts = _sentence_job(voice, rng, 1.2, 5.6)
                    plan.texts.append(("librispeech/" + split, texts))
                    utt_id = f"{spk}-{chapter}-{u:04d}"
                    post_seed = int(rng.integers(2**31))

                    def sink(
                        wav,
                        kept,
                        utt_id=utt_id,
                        texts=texts,
                        folder=folder,
                        trans=trans,
                        u=u,
                        post_seed=post_seed,
                        split=split,
                    ):
                        out = _finish(wav, np.random.default_rng(post_seed))
                        _write(folder / f"{utt_id}.flac", out, "FLAC")
                        transcripts[trans][u] = f"{utt_id} {texts[kept].upper()}"
                        stats.add("librispeech/" + split, out.size / SAMPLE_RATE)

                    plan.add(job, sink)

    def write_text(_wav=None, _kept=None):
        for trans, lines in transcripts.items():
            trans.write_text("\n".join(lines) + "\n")
        lines = [
            "; Speakers of the lasersb embedded mini LibriSpeech (espeak-ng voices, synthetic)",
            "; Format follows LibriSpeech's SPEAKERS.TXT; MINUTES is the speaker's total audio",
            ";ID  |SEX| SUBSET           |MINUTES| NAME",
        ]
        for spk, voice, split, _ in speakers_txt:
            minutes = stats.speaker_seconds.get(f"ls{spk}", 0.0) / 60
            lines.append(f"{spk:<5}| {voice.gender} | {split:<17}| {minutes:5.2f} | {voice.name}")
        (ls / "SPEAKERS.TXT").write_text("\n".join(lines) + "\n")

    plan.finalisers.append(write_text)


# --------------------------------------------------------------------------- VoxCeleb1
_VIDEO_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


def _plan_voxceleb(root: Path, opts: MiniCorpusOptions, bank, rng, plan, stats) -> None:
    vox = root / "VoxCeleb1"
    meta = ["VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet"]
    test_utts: dict[str, list[tuple[str, str]]] = {}
    groups = (("dev", 10001, opts.vox_dev_speakers), ("test", 10270, opts.vox_test_speakers))
    for subset, first, count in groups:
        for s in range(count):
            spk = f"id{first + s}"
            voice = bank.new()
            nationality = _ACCENTS[voice.accent]
            meta.append(
                f"{spk}\t{voice.name.replace(' ', '_')}\t{voice.gender.lower()}\t"
                f"{nationality}\t{subset}"
            )
            for _video_index in range(opts.vox_videos):
                video = "".join(rng.choice(list(_VIDEO_CHARS), size=11))
                channel = (float(rng.uniform(3500, 7900)), float(rng.uniform(1e-3, 6e-3)))
                for u in range(opts.vox_utts):
                    rel = f"{spk}/{video}/{u + 1:05d}.wav"
                    if subset == "test":
                        test_utts.setdefault(spk, []).append((video, rel))
                    job, _ = _sentence_job(voice, rng, 2.0, 5.5)
                    post_seed = int(rng.integers(2**31))

                    def sink(wav, kept, rel=rel, channel=channel, post_seed=post_seed):
                        post = np.random.default_rng(post_seed)
                        out = _finish(wav, post, floor=channel[1])
                        spec = np.fft.rfft(out)  # per-video channel: low-pass cut-off
                        spec[np.fft.rfftfreq(out.size, 1 / SAMPLE_RATE) > channel[0]] *= 0.05
                        out = np.clip(np.fft.irfft(spec, out.size), -0.99, 0.99).astype(np.float32)
                        _write(vox / "wav" / rel, out)
                        stats.add("voxceleb1", out.size / SAMPLE_RATE)

                    plan.add(job, sink)
    trials = []
    speakers = sorted(test_utts)
    for spk in speakers:
        for video, rel in test_utts[spk]:
            same = [r for vid, r in test_utts[spk] if r != rel]
            other_video = [r for vid, r in test_utts[spk] if vid != video]
            target = other_video or same or [None]
            target = target[rng.integers(len(target))]
            if target is not None:
                trials.append(f"1 {rel} {target}")
            others = [s for s in speakers if s != spk]
            if others:
                pool = test_utts[others[rng.integers(len(others))]]
                trials.append(f"0 {rel} {pool[rng.integers(len(pool))][1]}")

    def write_text(_wav=None, _kept=None):
        vox.mkdir(parents=True, exist_ok=True)
        (vox / "vox1_meta.csv").write_text("\n".join(meta) + "\n")
        (vox / "veri_test2.txt").write_text("\n".join(trials) + "\n")
        stats.counts["voxceleb1_trials"] = len(trials)

    plan.finalisers.append(write_text)


# --------------------------------------------------------------------------- DEMAND
def _plan_demand(root: Path, opts: MiniCorpusOptions, bank, rng, plan, stats) -> None:
    streams: list = [None] * opts.babble_talkers
    seconds = opts.demand_seconds
    for t in range(opts.babble_talkers):
        voice = bank.new()
        n_sent = max(2, int(np.ceil(seconds / 2.0)))
        segs = tuple(
            _segment(voice, random_sentence(rng), rng, pause=float(rng.uniform(0.1, 0.4)))
            for _ in range(n_sent)
        )
        job = SynthesisJob((segs,), 0.0, float("inf"), int(rng.integers(2**31)))

        def sink(wav, kept, t=t):
            streams[t] = wav

        plan.add(job, sink)
    noise_seed = int(rng.integers(2**31))

    def write_noises(_wav=None, _kept=None):
        for index, noise_type in enumerate(DEMAND_TYPES):
            noise_rng = np.random.default_rng([noise_seed, index])
            x = demand_noise(noise_type, seconds, noise_rng, streams, SAMPLE_RATE)
            _write(root / "DEMAND" / noise_type / "ch01.wav", x)
            stats.add("demand", x.size / SAMPLE_RATE)

    plan.finalisers.append(write_noises)


# --------------------------------------------------------------------------- IEMOCAP
def _plan_iemocap(root: Path, opts: MiniCorpusOptions, bank, rng, plan, stats) -> None:
    base = root / "IEMOCAP"
    for session in range(1, opts.iemocap_sessions + 1):
        voices = {"F": bank.new("F"), "M": bank.new("M")}
        emotions = [EMOTIONS[i % 4] for i in range(opts.iemocap_utts)]
        emotions = [emotions[i] for i in rng.permutation(len(emotions))]
        dialogs = [f"Ses{session:02d}F_impro01", f"Ses{session:02d}M_script01_1"]
        sess_dir = base / f"Session{session}"
        entries: dict[str, list] = {d: [] for d in dialogs}
        counters: dict[tuple[str, str], int] = {}
        for i, emo in enumerate(emotions):
            dialog = dialogs[i % 2]
            gender = "F" if (i // 2) % 2 == 0 else "M"
            idx = counters.get((dialog, gender), 0)
            counters[(dialog, gender)] = idx + 1
            utt = f"{dialog}_{gender}{idx:03d}"
            voice = voices[gender]
            d_pitch, prange, rate_f, amp = _EMOTION_STYLE[emo]
            job, texts = _sentence_job(
                voice,
                rng,
                1.5,
                5.0,
                rate=int(voice.rate * rate_f),
                pitch=voice.pitch + d_pitch,
                prange=prange,
            )
            post_seed = int(rng.integers(2**31))
            entry = {"utt": utt, "emo": emo, "texts": texts}
            entries[dialog].append(entry)

            def sink(
                wav,
                kept,
                entry=entry,
                dialog=dialog,
                amp=amp,
                post_seed=post_seed,
                sess_dir=sess_dir,
            ):
                post = np.random.default_rng(post_seed)
                out = _finish(wav, post, peak=(0.35 * amp, 0.45 * amp))
                _write(sess_dir / "sentences" / "wav" / dialog / f"{entry['utt']}.wav", out)
                entry["seconds"] = out.size / SAMPLE_RATE
                entry["text"] = entry["texts"][kept]
                stats.add("iemocap", out.size / SAMPLE_RATE)

            plan.add(job, sink)
        gaps = rng.uniform(0.4, 2.0, size=opts.iemocap_utts + 2)

        def write_labels(_wav=None, _kept=None, sess_dir=sess_dir, entries=entries, gaps=gaps):
            for dialog, items in entries.items():
                emo_lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
                trans_lines = []
                clock = 0.0
                for k, e in enumerate(items):
                    start = clock + gaps[k]
                    end = start + e["seconds"]
                    clock = end
                    v, a, d = _EMOTION_VAD[e["emo"]]
                    name = _EMOTION_NAME[e["emo"]]
                    emo_lines += [
                        f"[{start:.4f} - {end:.4f}]\t{e['utt']}\t{e['emo']}\t"
                        f"[{v:.4f}, {a:.4f}, {d:.4f}]",
                        f"C-E1:\t{name};\t()",
                        f"C-E2:\t{name};\t()",
                        f"C-E3:\t{name};\t()",
                        f"A-E1:\tval {v:.0f}; act {a:.0f}; dom  {d:.0f};\t()",
                        "",
                    ]
                    sentence = e["text"].capitalize() + "."
                    trans_lines.append(f"{e['utt']} [{start:08.4f}-{end:08.4f}]: {sentence}")
                emo_dir = sess_dir / "dialog" / "EmoEvaluation"
                emo_dir.mkdir(parents=True, exist_ok=True)
                (emo_dir / f"{dialog}.txt").write_text("\n".join(emo_lines) + "\n")
                tr_dir = sess_dir / "dialog" / "transcriptions"
                tr_dir.mkdir(parents=True, exist_ok=True)
                (tr_dir / f"{dialog}.txt").write_text("\n".join(trans_lines) + "\n")

        plan.finalisers.append(write_labels)


# --------------------------------------------------------------------------- ADReSS
def _adress_segments(voice, rng, label: str):
    """Picture-description-like speech; ``cd`` is slower, with fillers and repetitions."""
    segs = []
    n_sent = int(rng.integers(1, 3)) if label == "cd" else int(rng.integers(2, 4))
    for _ in range(n_sent):
        words = random_sentence(rng, 4, 7 if label == "cd" else 9).split()
        if label == "cd":
            rate = int(voice.rate * rng.uniform(0.62, 0.75))
            if rng.random() < 0.7:  # repetition of a word
                k = int(rng.integers(len(words)))
                words.insert(k, words[k])
            cut = int(rng.integers(1, len(words)))
            segs.append(
                _segment(
                    voice, " ".join(words[:cut]), rng, rate=rate, pause=float(rng.uniform(0.3, 0.7))
                )
            )
            if rng.random() < 0.8:
                filler = ("uh", "um")[int(rng.integers(2))]
                segs.append(
                    _segment(
                        voice, filler, rng, rate=rate, prange=10, pause=float(rng.uniform(0.3, 0.6))
                    )
                )
            segs.append(
                _segment(
                    voice, " ".join(words[cut:]), rng, rate=rate, pause=float(rng.uniform(0.5, 1.0))
                )
            )
        else:
            segs.append(_segment(voice, " ".join(words), rng, pause=float(rng.uniform(0.15, 0.4))))
    return tuple(segs)


def _plan_adress(root: Path, opts: MiniCorpusOptions, bank, rng, plan, stats) -> None:
    base = root / "ADReSS"
    subjects = []  # (id, split, label)
    for k in range(opts.adress_train_per_class):
        subjects.append((f"S{1 + k:03d}", "train", "cc"))
    for k in range(opts.adress_train_per_class):
        subjects.append((f"S{79 + k:03d}", "train", "cd"))
    test_labels = ["cc"] * opts.adress_test_per_class + ["cd"] * opts.adress_test_per_class
    test_labels = [test_labels[i] for i in rng.permutation(len(test_labels))]
    for k, label in enumerate(test_labels):
        subjects.append((f"S{160 + k:03d}", "test", label))
    meta = {"cc": [], "cd": [], "test": []}
    for sid, split, label in subjects:
        voice = bank.new()
        age = int(rng.integers(56, 80))
        mmse = int(rng.integers(26, 31)) if label == "cc" else int(rng.integers(10, 25))
        gender = "male" if voice.gender == "M" else "female"
        if split == "train":
            meta[label].append(f"{sid} ; {age} ; {gender} ; {mmse}")
            path = base / "train" / "Full_wave_enhanced_audio" / label / f"{sid}.wav"
        else:
            meta["test"].append(f"{sid} ; {age} ; {gender} ; {int(label == 'cd')} ; {mmse}")
            path = base / "test" / "Full_wave_enhanced_audio" / f"{sid}.wav"
        alts = tuple(_adress_segments(voice, rng, label) for _ in range(6))
        job = SynthesisJob(alts, 3.2, 7.6, int(rng.integers(2**31)))
        post_seed = int(rng.integers(2**31))

        def sink(wav, kept, path=path, post_seed=post_seed):
            out = _finish(wav, np.random.default_rng(post_seed), floor=2e-3)
            _write(path, out)
            stats.add("adress", out.size / SAMPLE_RATE)

        plan.add(job, sink)

    def write_meta(_wav=None, _kept=None):
        header = "ID   ; age; gender; mmse"
        for label in ("cc", "cd"):
            text = "\n".join([header] + meta[label]) + "\n"
            (base / "train" / f"{label}_meta_data.txt").write_text(text)
        text = "\n".join(["ID   ; age; gender; Label; mmse"] + meta["test"]) + "\n"
        (base / "test" / "meta_data_test.txt").write_text(text)

    plan.finalisers.append(write_meta)


# --------------------------------------------------------------------------- QUESST 2014
def _write_8k(path: Path, wav: np.ndarray) -> float:
    from scipy.signal import resample_poly

    path.parent.mkdir(parents=True, exist_ok=True)
    down = resample_poly(wav.astype(np.float64), QUESST_SAMPLE_RATE, SAMPLE_RATE)
    down = np.clip(down, -0.99, 0.99).astype(np.float32)
    soundfile.write(str(path), down, QUESST_SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return down.size / QUESST_SAMPLE_RATE


def _plan_quesst14(root: Path, opts: MiniCorpusOptions, bank, rng, plan, stats) -> None:
    base = root / "QUESST14"
    candidates = sorted({w for w in load_vocabulary()["N"] if len(w) >= 6})
    terms = [candidates[i] for i in rng.choice(len(candidates), opts.quesst_terms, replace=False)]
    doc_voices = [bank.new("F" if v % 2 == 0 else "M") for v in range(4)]
    docs: list[dict] = []
    for d in range(opts.quesst_docs):
        doc_id = f"quesst14_{d + 1:05d}"
        term = terms[d % len(terms)] if d < 2 * len(terms) else None
        voice = doc_voices[d % len(doc_voices)]
        texts = []
        while len(texts) < 4:
            words = random_sentence(rng, 4, 8).split()
            if any(w.upper() in {t.upper() for t in terms} for w in words):
                continue  # no accidental occurrence of a key word
            if term is not None:
                words.insert(int(rng.integers(1, len(words))), term)
            texts.append(" ".join(words))
        alts = tuple((_segment(voice, t, rng),) for t in texts)
        entry = {"id": doc_id, "term": term, "texts": texts}
        docs.append(entry)
        post_seed = int(rng.integers(2**31))

        def sink(wav, kept, entry=entry, post_seed=post_seed):
            out = _finish(wav, np.random.default_rng(post_seed))
            entry["seconds"] = _write_8k(base / "Audio" / f"{entry['id']}.wav", out)
            entry["text"] = entry["texts"][kept]
            entry["lead"] = (out.size - wav.size) / SAMPLE_RATE / 2  # approximate
            stats.add("quesst14/documents", entry["seconds"])

        plan.add(SynthesisJob(alts, 1.5, 5.0, int(rng.integers(2**31))), sink)
    queries: dict[str, list[dict]] = {"dev": [], "eval": []}
    for split in ("dev", "eval"):
        for k, term in enumerate(terms):
            voice = bank.new()
            query = {"id": f"quesst14_{split}_{k + 1:04d}", "term": term}
            queries[split].append(query)
            post_seed = int(rng.integers(2**31))
            job = SynthesisJob(((_segment(voice, term, rng),),), 0.2, 2.0, int(rng.integers(2**31)))

            def sink(wav, kept, query=query, split=split, post_seed=post_seed):
                out = _finish(wav, np.random.default_rng(post_seed), pad=(0.02, 0.06))
                path = base / f"{split}_queries" / f"{query['id']}.wav"
                query["seconds"] = _write_8k(path, out)
                stats.add(f"quesst14/{split}_queries", query["seconds"])

            plan.add(job, sink)

    def write_scoring(_wav=None, _kept=None):
        scoring = base / "scoring"
        scoring.mkdir(parents=True, exist_ok=True)
        keys = {
            "utterances": [f"quesst14Database/Audio/{e['id']}.wav nnenglish" for e in docs],
            "dev": [
                f"quesst14Database/dev_queries/{q['id']}.wav nnenglish" for q in queries["dev"]
            ],
            "eval": [
                f"quesst14Database/eval_queries/{q['id']}.wav nnenglish" for q in queries["eval"]
            ],
        }
        for name, lines in keys.items():
            (scoring / f"language_key_{name}.lst").write_text("\n".join(lines) + "\n")
        total = sum(e["seconds"] for e in docs)
        ecf = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            f'<ecf source_signal_duration="{total:.3f}" language="multiple" version="mini">',
        ]
        ecf += [
            f'  <excerpt audio_filename="Audio/{e["id"]}.wav" channel="1" tbeg="0.000" '
            f'dur="{e["seconds"]:.3f}" source_type="splitcts"/>'
            for e in docs
        ]
        ecf.append("</ecf>")
        for split, items in queries.items():
            gt = scoring / f"groundtruth_quesst14_{split}"
            gt.mkdir(parents=True, exist_ok=True)
            (gt / "quesst14.ecf.xml").write_text("\n".join(ecf) + "\n")
            tlist = [
                '<?xml version="1.0" encoding="UTF-8"?>',
                '<termlist ecf_filename="quesst14.ecf.xml" version="mini" language="multiple" '
                'encoding="UTF-8">',
            ]
            tlist += [
                f'  <term termid="{q["id"]}"><termtext>{q["id"]}</termtext></term>' for q in items
            ]
            tlist.append("</termlist>")
            (gt / f"quesst14_{split}.tlist.xml").write_text("\n".join(tlist) + "\n")
            rttm = []
            for q in items:
                for e in docs:
                    if e["term"] != q["term"]:
                        continue
                    words = e["text"].split()
                    pos = words.index(q["term"])
                    speech = e["seconds"] - 2 * e["lead"]
                    begin = e["lead"] + speech * pos / len(words)
                    dur = speech / len(words)
                    rttm.append(
                        f"LEXEME {e['id']} 1 {begin:.3f} {dur:.3f} {q['id']} lex {q['id']} 1.0"
                    )
            (gt / f"quesst14_{split}.rttm").write_text("\n".join(rttm) + "\n")
        stats.counts["quesst14_targets"] = sum(e["term"] is not None for e in docs)

    plan.finalisers.append(write_scoring)


class _Stats:
    def __init__(self):
        self.counts: dict[str, int] = {}
        self.seconds: dict[str, float] = {}
        self.speaker_seconds: dict[str, float] = {}

    def add(self, group: str, seconds: float) -> None:
        self.counts[group] = self.counts.get(group, 0) + 1
        self.seconds[group] = self.seconds.get(group, 0.0) + seconds


_PLANNERS = {
    "librispeech": _plan_librispeech,
    "voxceleb1": _plan_voxceleb,
    "demand": _plan_demand,
    "iemocap": _plan_iemocap,
    "adress": _plan_adress,
    "quesst14": _plan_quesst14,
}


def _options(options: dict) -> MiniCorpusOptions:
    names = {f.name for f in dataclasses.fields(MiniCorpusOptions)}
    unknown = set(options) - names
    if unknown:
        raise TypeError(f"unknown mini corpus options {sorted(unknown)}; valid: {sorted(names)}")
    if "corpora" in options:
        options = dict(options, corpora=tuple(options["corpora"]))
    return MiniCorpusOptions(**options)


def generate_mini_corpus(out_dir, seed: int = 0, workers: int | None = None, **options) -> Path:
    """Generate the mini corpus into ``out_dir`` (no caching; see :func:`get_mini_corpus`).

    Parameters
    ----------
    out_dir : str or Path
        Folder to write (created; must be empty if it exists).
    seed : int
        Seed: the same seed and options give byte-identical files.
    workers : int, optional
        Synthesis worker processes (default: min(2, CPU count)); does not change the output.
    **options
        Fields of :class:`MiniCorpusOptions` (sizes, ``corpora`` subset).

    Returns
    -------
    Path
        ``out_dir``, containing ``mini_corpus.json`` and the corpora.

    Example
    -------
    >>> import tempfile
    >>> root = generate_mini_corpus(Path(tempfile.mkdtemp()) / "m", corpora=(), seed=1)
    >>> sorted(p.name for p in root.iterdir())
    ['librispeech-lexicon.txt', 'mini_corpus.json']
    """
    opts = _options(options)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; pass an empty or new folder")
    out.mkdir(parents=True, exist_ok=True)
    workers = workers or max(1, min(2, os.cpu_count() or 1))
    rng = np.random.default_rng(seed)
    bank = _VoiceBank(rng)
    plan = _Plan()
    stats = _Stats()
    for corpus in opts.corpora:
        corpus_rng = np.random.default_rng([seed, CORPORA.index(corpus)])
        _PLANNERS[corpus](out, opts, bank, corpus_rng, plan, stats)
    if plan.jobs:
        with EspeakSynthesizer(workers=workers, sample_rate=SAMPLE_RATE) as tts:
            results = tts.run(plan.jobs)
        for (wav, kept), sink in zip(results, plan.sinks):
            sink(wav, kept)
    _speaker_minutes(out, stats)
    for finaliser in plan.finalisers:
        finaliser()
    write_lexicon(out / "librispeech-lexicon.txt", vocabulary_words())
    manifest = {
        "generator": "lasersb.data.mini",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "key": opts.cache_key(seed),
        "options": dataclasses.asdict(opts),
        "sample_rate": SAMPLE_RATE,
        "counts": dict(sorted(stats.counts.items())),
        "durations_s": {k: round(v, 3) for k, v in sorted(stats.seconds.items())},
        "speaker_ids": _speaker_ranges(opts),
        "demand": {"seen": list(DEMAND_SEEN), "unseen": list(DEMAND_UNSEEN)},
        "lexicon_words": len(vocabulary_words()),
    }
    (out / "mini_corpus.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def _speaker_minutes(root: Path, stats: _Stats) -> None:
    ls = root / "LibriSpeech"
    if not ls.is_dir():
        return
    for flac in ls.glob("*/*/*/*.flac"):
        spk = flac.name.split("-")[0]
        info = soundfile.info(str(flac))
        stats.speaker_seconds[f"ls{spk}"] = (
            stats.speaker_seconds.get(f"ls{spk}", 0.0) + info.frames / info.samplerate
        )


def _speaker_ranges(opts: MiniCorpusOptions) -> dict:
    def ids(first, count):
        return [first, first + count - 1] if count else []

    return {
        "librispeech/train-clean-100": ids(1001, opts.ls_train_speakers),
        "librispeech/dev-clean": ids(2001, opts.ls_dev_speakers),
        "librispeech/test-clean": ids(3001, opts.ls_test_speakers),
        "voxceleb1/dev": [f"id{i}" for i in ids(10001, opts.vox_dev_speakers)],
        "voxceleb1/test": [f"id{i}" for i in ids(10270, opts.vox_test_speakers)],
        "adress/train/cc": [f"S{i:03d}" for i in ids(1, opts.adress_train_per_class)],
        "adress/train/cd": [f"S{i:03d}" for i in ids(79, opts.adress_train_per_class)],
        "adress/test": [f"S{i:03d}" for i in ids(160, 2 * opts.adress_test_per_class)],
    }


def default_cache_dir() -> Path:
    """``$LASERSB_CACHE`` or ``~/.cache/lasersb``.

    Example
    -------
    >>> default_cache_dir().is_absolute()
    True
    """
    return Path(os.environ.get("LASERSB_CACHE") or Path.home() / ".cache" / "lasersb").expanduser()


@contextlib.contextmanager
def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - non-POSIX: no inter-process lock
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _manifest_key(root: Path):
    try:
        return json.loads((root / "mini_corpus.json").read_text()).get("key")
    except (OSError, ValueError):
        return None


def get_mini_corpus(root=None, seed: int = 0, workers: int | None = None, **options) -> Path:
    """Return the root of the mini corpus, generating it only if needed (cached).

    Parameters
    ----------
    root : str or Path, optional
        Where the corpus lives. Default: ``<cache>/mini-<key>`` with the cache folder from
        ``$LASERSB_CACHE`` (else ``~/.cache/lasersb``) and ``key`` a hash of the options, the
        seed and :data:`GENERATOR_VERSION`. An existing ``root`` whose ``mini_corpus.json`` has
        another key is regenerated; a non-empty folder that is not a mini corpus is an error.
    seed : int
        Seed of the generator.
    workers : int, optional
        Synthesis worker processes (does not change the output).
    **options
        Fields of :class:`MiniCorpusOptions`.

    Returns
    -------
    Path
        The corpus root (see the module docstring for its layout).

    Example
    -------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp()) / "mini"
    >>> get_mini_corpus(root, corpora=()) == get_mini_corpus(root, corpora=())
    True
    """
    opts = _options(options)
    key = opts.cache_key(seed)
    root = Path(root) if root is not None else default_cache_dir() / f"mini-{key}"
    if _manifest_key(root) == key:
        return root
    with _file_lock(root.parent / f".{root.name}.lock"):
        if _manifest_key(root) == key:  # built by a concurrent caller meanwhile
            return root
        if root.exists() and any(root.iterdir()) and _manifest_key(root) is None:
            raise FileExistsError(
                f"{root} exists and is not a mini corpus (no mini_corpus.json); "
                "pass an empty or new folder"
            )
        tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        try:
            generate_mini_corpus(tmp, seed=seed, workers=workers, **dataclasses.asdict(opts))
            if root.exists():
                old = root.parent / f".{root.name}.old-{os.getpid()}"
                root.rename(old)
                shutil.rmtree(old)
            tmp.rename(root)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return root


#: Seed of MiniSpeech, the pretraining corpus of ``recipes/MiniSpeech/hubert_pretrain``.
PRETRAIN_SEED = 22
#: Its options: LibriSpeech's layout only, 60 training speakers x 5 chapters x 5 utterances
#: (1,500 utterances, 64 minutes), a small dev-clean for the pretraining's dev loss. Another seed
#: than the mini corpus's, so other voices (pitch, range, rate) and other random sentences: no
#: training sentence of MiniSpeech is a dev/test sentence of the mini corpus (tested).
PRETRAIN_OPTIONS = {
    "corpora": ("librispeech",),
    "ls_train_speakers": 60,
    "ls_train_chapters": 5,
    "ls_train_utts": 5,
    "ls_dev_speakers": 2,
    "ls_test_speakers": 1,
    "ls_eval_chapters": 1,
    "ls_eval_utts": 5,
}


def planned_librispeech_texts(seed: int = 0, **options) -> dict[str, set[str]]:
    """Every sentence the LibriSpeech part of a corpus may contain, per split, without synthesis.

    Each utterance is planned with a few candidate sentences and keeps the first whose speech
    fits its duration range; this returns all candidates (upper case, as the transcripts), so
    an empty intersection with another corpus's transcripts proves the two share no sentence.

    Example
    -------
    >>> texts = planned_librispeech_texts(0, ls_train_speakers=1, ls_train_chapters=1,
    ...                                   ls_train_utts=1)
    >>> sorted(texts), len(texts["train-clean-100"]) <= 5
    (['dev-clean', 'test-clean', 'train-clean-100'], True)
    """
    opts = _options({**options, "corpora": ("librispeech",)})
    plan = _Plan()
    corpus_rng = np.random.default_rng([seed, CORPORA.index("librispeech")])
    _plan_librispeech(
        Path("unused"), opts, _VoiceBank(np.random.default_rng(seed)), corpus_rng, plan, _Stats()
    )
    texts: dict[str, set[str]] = {}
    for group, candidates in plan.texts:
        texts.setdefault(group.split("/", 1)[1], set()).update(t.upper() for t in candidates)
    return texts


def get_pretrain_corpus(root=None, workers: int | None = None, **options) -> Path:
    """MiniSpeech, the HuBERT pretraining corpus (cached like :func:`get_mini_corpus`).

    Arguments
    ---------
    root : str or Path, optional
        Where it lives (default: the cache folder).
    workers : int, optional
        Synthesis worker processes (does not change the output).
    **options
        Fields of :class:`MiniCorpusOptions` replacing :data:`PRETRAIN_OPTIONS`' (tests use a
        smaller MiniSpeech).

    Returns
    -------
    Path
        The corpus root; the speech is under ``<root>/LibriSpeech``.
    """
    return get_mini_corpus(
        root, seed=PRETRAIN_SEED, workers=workers, **{**PRETRAIN_OPTIONS, **options}
    )


def summary(root: Path) -> str:
    """One-line-per-corpus summary (counts and hours) from ``mini_corpus.json``.

    Example
    -------
    >>> import tempfile
    >>> print(summary(generate_mini_corpus(Path(tempfile.mkdtemp()) / "m", corpora=())))
    lexicon: 443 words
    """
    manifest = json.loads((Path(root) / "mini_corpus.json").read_text())
    lines = [
        f"{group}: {manifest['counts'][group]} files, {seconds / 60:.1f} min"
        for group, seconds in manifest["durations_s"].items()
    ]
    if "voxceleb1_trials" in manifest["counts"]:
        lines.append(f"voxceleb1 trials: {manifest['counts']['voxceleb1_trials']}")
    lines.append(f"lexicon: {manifest['lexicon_words']} words")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``lasersb-mini-corpus --out DIR --seed N [--ls-train-speakers N ...]``.

    Example
    -------
    >>> import tempfile, contextlib, io
    >>> out = Path(tempfile.mkdtemp()) / "m"
    >>> with contextlib.redirect_stdout(io.StringIO()):
    ...     status = main(["--out", str(out), "--corpora", "none"])
    >>> status
    0
    """
    parser = argparse.ArgumentParser(
        prog="lasersb-mini-corpus",
        description="Generate the embedded mini corpus (espeak-ng speech in the layouts of "
        "LibriSpeech, VoxCeleb1, DEMAND, IEMOCAP and ADReSS). Regenerates only when the "
        "options differ from those of an existing corpus in --out.",
    )
    parser.add_argument("--out", default=None, help="output folder (default: the cache folder)")
    parser.add_argument(
        "--preset",
        choices=("mini", "pretrain"),
        default="mini",
        help="mini: the embedded mini corpus (the options below); pretrain: MiniSpeech, the "
        "HuBERT pretraining corpus (64 min of LibriSpeech-layout speech, its own seed; the "
        "options below are ignored)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="synthesis processes")
    parser.add_argument(
        "--corpora",
        default=",".join(CORPORA),
        help=f"comma-separated subset of {','.join(CORPORA)} (or 'none')",
    )
    defaults = MiniCorpusOptions()
    for field in dataclasses.fields(MiniCorpusOptions):
        if field.name == "corpora":
            continue
        value = getattr(defaults, field.name)
        parser.add_argument(
            "--" + field.name.replace("_", "-"),
            type=type(value),
            default=value,
            help=f"(default {value})",
        )
    args = parser.parse_args(argv)
    corpora = () if args.corpora == "none" else tuple(c for c in args.corpora.split(",") if c)
    options = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(MiniCorpusOptions)
        if f.name != "corpora"
    }
    start = time.perf_counter()
    try:
        if args.preset == "pretrain":
            root = get_pretrain_corpus(args.out, workers=args.workers)
        else:
            root = get_mini_corpus(
                args.out, seed=args.seed, workers=args.workers, corpora=corpora, **options
            )
    except (ValueError, FileExistsError) as error:
        parser.error(str(error))
    print(f"mini corpus at {root} ({time.perf_counter() - start:.1f} s)")
    print(summary(root))
    return 0


if __name__ == "__main__":
    sys.exit(main())
