"""Tests of the CTC tokenizers (characters for ASR, ARPAbet phones for PR)."""

import pytest

from lasersb.data.tokenizers import CharTokenizer, PhoneTokenizer, arpabet_inventory


def test_char_tokenizer_vocabulary_and_round_trip():
    tok = CharTokenizer()
    assert tok.vocab_size == 29 and tok.blank_index == 0
    assert tok.labels[1] == "|" and tok.labels[2] == "A" and tok.labels[-1] == "'"
    text = "IT'S A  LONG   WAY"
    ids = tok.encode(text)
    assert tok.blank_index not in ids
    assert ids.count(tok.word_boundary_index) == 3
    assert tok.decode(ids) == "IT'S A LONG WAY"
    assert tok.decode([0, *ids, 0]) == "IT'S A LONG WAY"
    assert tok.units("it's a long way") == ["IT'S", "A", "LONG", "WAY"]


def test_char_tokenizer_unknown_characters():
    with pytest.raises(ValueError, match="not in the ASR vocabulary"):
        CharTokenizer().encode("HELLO, WORLD")
    assert CharTokenizer(unknown="skip").decode(CharTokenizer(unknown="skip").encode("A-B")) == "AB"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        CharTokenizer().decode([99])


def test_phone_tokenizer_stress_handling():
    plain, stressed = PhoneTokenizer(), PhoneTokenizer(keep_stress=True)
    assert plain.vocab_size == 40 and stressed.vocab_size == 70
    phones = "DH AH0 K AE1 T"
    assert plain.decode(plain.encode(phones)) == ["DH", "AH", "K", "AE", "T"]
    assert stressed.decode(stressed.encode(phones)) == ["DH", "AH0", "K", "AE1", "T"]
    assert plain.units(phones) == plain.decode_units(plain.encode(phones))
    with pytest.raises(ValueError, match="stress digits are kept"):
        stressed.encode(["AH"])
    with pytest.raises(ValueError, match="not in the 39-phone"):
        plain.encode(["XX"])


def test_phone_inventory_is_fixed_and_sorted():
    inventory = arpabet_inventory()
    assert list(inventory) == sorted(inventory) and len(set(inventory)) == 39
    assert PhoneTokenizer().labels[1:] == inventory


def test_phone_tokenizer_from_manifests(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text("ID,duration,wav,spk_id,wrd,phn\nu1,1.0,a.flac,s,CAT,K AE1 T\n")
    tok = PhoneTokenizer.from_manifests(csv, keep_stress=True)
    assert tok.labels == ("<blank>", "AE1", "K", "T")
    bad = tmp_path / "nophn.csv"
    bad.write_text("ID,wav\nu1,a.flac\n")
    with pytest.raises(ValueError, match="no 'phn' column"):
        PhoneTokenizer.from_manifests(bad)
