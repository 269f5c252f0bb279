"""Batched scoring on tiny models: completion tokens only, independent of batching and padding."""

from __future__ import annotations

import math

import pytest
import torch

from distillab.evaluate import run
from distillab.evaluate.config import EvaluateConfig
from distillab.evaluate.evalsets import encode_set, load_heldout_set
from distillab.evaluate.scoring import score, teacher_logits


@pytest.fixture(scope="module")
def teacher(tiny_teacher):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_teacher).eval(), AutoTokenizer.from_pretrained(
        tiny_teacher
    )


@pytest.fixture(scope="module")
def student(student_dirs):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(student_dirs["soft"]).eval()


@pytest.fixture(scope="module")
def heldout(hard_label_dir):
    return load_heldout_set(
        EvaluateConfig(teacher="unused", heldout_data=str(hard_label_dir), heldout_last_n=6)
    )


def test_cross_entropy_is_over_completion_tokens_only(teacher, heldout):
    model, tokenizer = teacher
    encoded = encode_set(heldout, tokenizer, max_length=512)
    nll, tokens = 0.0, 0
    for messages, ids in zip(heldout.rows, encoded.input_ids, strict=True):
        prompt = tokenizer.apply_chat_template(
            messages[:-1], add_generation_prompt=True, tokenize=True, return_dict=True
        )
        start = len(prompt["input_ids"])
        with torch.no_grad():
            log_probs = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
        nll -= sum(log_probs[p - 1, ids[p]].item() for p in range(start, len(ids)))
        tokens += len(ids) - start
    totals = score(model, encoded, batch_size=4, pad_id=tokenizer.pad_token_id)
    assert totals.tokens == tokens == encoded.scored_tokens
    assert totals.cross_entropy == pytest.approx(nll / tokens, rel=1e-4)


def test_results_do_not_depend_on_batch_size_or_pad_token(teacher, student, heldout):
    model, tokenizer = teacher
    encoded = encode_set(heldout, tokenizer, max_length=512)
    one = score(student, encoded, batch_size=1, pad_id=tokenizer.pad_token_id, teacher=model)
    many = score(student, encoded, batch_size=4, pad_id=0, teacher=model)
    assert many.tokens == one.tokens
    assert many.cross_entropy == pytest.approx(one.cross_entropy, rel=1e-4)
    assert many.kl_per_token == pytest.approx(one.kl_per_token, rel=1e-4)
    assert many.top1_agreement == pytest.approx(one.top1_agreement)


def test_a_model_against_itself_has_zero_kl_and_full_agreement(teacher, heldout):
    model, tokenizer = teacher
    totals = score(
        model, encode_set(heldout, tokenizer, 512), batch_size=3, pad_id=tokenizer.pad_token_id, teacher=model
    )
    assert totals.kl_per_token == pytest.approx(0.0, abs=1e-5)
    assert totals.top1_agreement == 1.0


def test_a_different_student_disagrees_with_the_teacher(teacher, student, heldout):
    model, tokenizer = teacher
    totals = score(
        student,
        encode_set(heldout, tokenizer, 512),
        batch_size=3,
        pad_id=tokenizer.pad_token_id,
        teacher=model,
    )
    assert totals.kl_per_token > 0.1
    assert 0.0 <= totals.top1_agreement < 1.0
    assert math.isfinite(totals.cross_entropy)


def test_the_teachers_kept_logits_score_like_the_teacher_beside_the_student(teacher, student, heldout):
    """evaluate computes the teacher's held-out logits once for every student: the same sums as running it
    beside each student, up to the size limit (TEACHER_LOGITS_BYTES), past which the teacher runs again."""
    model, tokenizer = teacher
    encoded = encode_set(heldout, tokenizer, 512)
    pad_id = tokenizer.pad_token_id
    beside = score(student, encoded, batch_size=3, pad_id=pad_id, teacher=model)
    kept = score(student, encoded, 3, pad_id, teacher=teacher_logits(model, encoded, 3, pad_id))
    assert (kept.tokens, kept.nll, kept.kl, kept.agreements) == (
        beside.tokens,
        beside.nll,
        beside.kl,
        beside.agreements,
    )
    fits = encoded.scored_tokens * model.config.vocab_size * 4  # float32
    assert len(run._kept_teacher_logits(model, encoded, 3, pad_id)) == -(-len(encoded.input_ids) // 3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run, "TEACHER_LOGITS_BYTES", fits - 1)
        assert run._kept_teacher_logits(model, encoded, 3, pad_id) is None
