"""The run record's FLOPs: each model's compute on the tokens it ran over, against hand-computed numbers.

Three Llama shapes (gated MLP: 3 hidden x intermediate per layer; attention: hidden x head_dim x (2 heads + 2
kv heads)); forward FLOPs per token = 2 N + 2 layers (n_ctx + 1) heads head_dim + 2 hidden vocab:

    student   hidden 64, 2 layers, 2 heads / 1 kv, head_dim 32, MLP 128, vocab 256, n_ctx 31:
              N = 2 (64*32*6 + 3*64*128) = 73,728; F = 147,456 + 2*2*32*2*32 + 2*64*256 = 188,416
    generator hidden 32, 1 layer, 2 heads / 2 kv, head_dim 16, MLP 64, vocab 256, n_ctx 15:
              N = 32*16*8 + 3*32*64 = 10,240; F = 20,480 + 2*1*16*2*16 + 2*32*256 = 37,888
    scorer    hidden 48, 3 layers, 3 heads / 1 kv, head_dim 16, MLP 96, vocab 256, n_ctx 39:
              N = 3 (48*16*8 + 3*48*96) = 59,904; F = 119,808 + 2*3*40*3*16 + 2*48*256 = 155,904
"""

from __future__ import annotations

from dataclasses import dataclass

from distillab.data.run_record import StudentRun, TeacherPass, run_record

VOCAB = 256
STUDENT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
               intermediate_size=128)  # fmt: skip
GENERATOR = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                 intermediate_size=64)  # fmt: skip
SCORER = dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=3, num_key_value_heads=1,
              intermediate_size=96)  # fmt: skip


@dataclass
class Config:
    learning_rate: float = 1e-3


def llama(**shape):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=VOCAB, max_position_embeddings=512, **shape)


def model_folder(path, shape) -> str:
    llama(**shape).save_pretrained(path)
    return str(path)


def student_run(generation: TeacherPass | None, scoring: TeacherPass | None) -> StudentRun:
    return StudentRun(
        method="kd",
        student={"kind": "fresh", "source": "x"},
        model_config=llama(**STUDENT),
        train_tokens=400,  # D: the supervised tokens
        tokens_processed=1_000,  # prompts too
        mean_sequence_length=31.0,
        loss_history=[],
        config=Config(),
        dataset="data",
        dataset_metadata=None,
        tokenizer_fingerprint="f",
        generation=generation,
        scoring=scoring,
    )


def test_each_pass_counts_its_own_model_on_every_token_it_ran_over(tmp_path):
    generator = model_folder(tmp_path / "generator", GENERATOR)
    scorer = model_folder(tmp_path / "scorer", SCORER)
    record = run_record(
        student_run(TeacherPass(generator, None, 3_000, 15.0), TeacherPass(scorer, "main", 2_000, 39.0))
    )
    flops = record["flops"]
    assert record["params_non_embedding"] == 73_728
    assert record["train_tokens"] == 400  # D stays the supervised tokens
    assert flops["student_forward"]["per_token"] == 188_416
    assert flops["student_train"] == 3 * 188_416 * 1_000  # forward + backward on all 1,000 tokens
    assert flops["generation"]["forward"]["per_token"] == 37_888
    assert flops["teacher_generation"] == 37_888 * 3_000
    assert flops["scoring"]["forward"]["per_token"] == 155_904
    assert flops["teacher_scoring"] == 155_904 * 2_000
    assert flops["total"] == 3 * 188_416 * 1_000 + 37_888 * 3_000 + 155_904 * 2_000
    assert flops["teacher_included"] is True
    # the student learnt from the model that scored its targets
    assert record["teacher"] == {"model": scorer, "revision": "main"}


def test_scoring_counts_without_a_named_generator(tmp_path):
    scorer = model_folder(tmp_path / "scorer", SCORER)
    record = run_record(student_run(None, TeacherPass(scorer, None, 2_000, 39.0)))
    flops = record["flops"]
    assert flops["teacher_scoring"] == 155_904 * 2_000
    assert flops["teacher_generation"] == 0 and flops["generation"] is None
    assert flops["teacher_included"] is False  # the generation's cost is unknown
    assert record["teacher"] == {"model": scorer, "revision": None}


def test_a_hard_label_run_names_its_generator(tmp_path):
    generator = model_folder(tmp_path / "generator", GENERATOR)
    record = run_record(student_run(TeacherPass(generator, None, 3_000, 15.0), None))
    assert record["teacher"] == {"model": generator, "revision": None}
    assert record["flops"]["teacher_scoring"] == 0 and record["flops"]["teacher_included"] is True
