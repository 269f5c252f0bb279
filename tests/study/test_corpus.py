"""The study corpus: stdlib documents split by path hash, examples = real prefixes and their real continuations."""

from __future__ import annotations

import hashlib

from transformers import AutoTokenizer

from distillab.study.corpus import (
    CorpusSpec,
    document_paths,
    examples,
    read_document,
    split_documents,
    stdlib_root,
)
from distillab.tiny import build_chat_tokenizer

SPEC = CorpusSpec(
    vocab_size=2048,
    tokenizer_train_bytes=0,
    prompt_tokens=16,
    continuation_tokens=32,
    windows_per_document=3,
    heldout_fraction=0.1,
    train_rows=40,
    heldout_rows=10,
    max_position_embeddings=256,
)


def test_documents_are_the_stdlib_sources_split_by_a_hash_of_their_path():
    paths = document_paths()
    assert "os.py" in paths and "json/decoder.py" in paths
    assert not any("site-packages" in p for p in paths)
    assert len(paths) == len({p for p in stdlib_root().rglob("*.py") if "site-packages" not in p.parts})
    train, heldout = split_documents(paths, 0.1)
    assert sorted(train + heldout) == paths and not set(train) & set(heldout)
    # held out iff the first 15 hex digits of sha256(path), as a fraction, fall under 0.1
    expected = {p for p in paths if int(hashlib.sha256(p.encode()).hexdigest()[:15], 16) < 0.1 * 16**15}
    assert set(heldout) == expected
    assert 0.05 < len(heldout) / len(paths) < 0.15


def test_examples_are_a_document_prefix_and_its_real_continuation(tokenizer_dir):
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    train, heldout = split_documents(document_paths(), SPEC.heldout_fraction)
    seen: set[str] = set()
    rows = list(examples(tokenizer, train, SPEC, SPEC.train_rows, seen))
    held = list(examples(tokenizer, heldout, SPEC, SPEC.heldout_rows, seen))
    assert (len(rows), len(held)) == (40, 10)
    for row in rows + held:
        path = row["id"].split("#")[0]
        assert row["prompt"] + row["continuation"] in read_document(path)
        assert len(tokenizer(row["continuation"], add_special_tokens=False)["input_ids"]) <= 32
    assert len({r["id"].split("#")[0] for r in rows}) >= 40 // 3
    assert not {r["id"].split("#")[0] for r in rows} & {r["id"].split("#")[0] for r in held}
    texts = [r["prompt"] for r in rows + held] + [r["continuation"] for r in rows + held]
    assert len(set(texts)) == len(texts)


def test_isolated_newlines_let_any_completion_extend_its_prompt_token_for_token(tmp_path):
    """A teacher's continuation may start with whitespace; after the template's newline it must not merge
    into other tokens, or its soft labels cannot be aligned (label's check, done here by hand)."""
    texts = [read_document(p) for p in document_paths()[:40]]
    isolated = build_chat_tokenizer(texts, tmp_path / "isolated", 512, isolate_newlines=True)
    merging = build_chat_tokenizer(texts, tmp_path / "merging", 512)
    completions = ["\n\n\nimport os", "    return x", "\n    pass", "x = 1\n"]

    def extends(tokenizer, completion: str) -> bool:
        messages = [{"role": "user", "content": "def f():"}, {"role": "assistant", "content": completion}]
        prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return tokenizer(full, add_special_tokens=False)["input_ids"][: len(prompt_ids)] == prompt_ids

    assert all(extends(isolated, c) for c in completions)
    assert not all(extends(merging, c) for c in completions)
    assert isolated.decode(isolated("a\n\n  b\n")["input_ids"]) == "a\n\n  b\n"
