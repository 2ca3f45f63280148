"""Corpus preparation scripts: one prepare_<corpus> module per corpus, each idempotent."""
