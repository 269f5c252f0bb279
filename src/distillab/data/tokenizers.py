"""Tokenizer identity: soft labels and KD are only valid between models that share a vocabulary."""

from __future__ import annotations

import hashlib
import json


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the full vocabulary (token -> id, special tokens included); equal iff the vocabularies are."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda item: item[1])
    return hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode()).hexdigest()[:16]
