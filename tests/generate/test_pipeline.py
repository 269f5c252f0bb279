"""The distilabel pipeline is only built (no engine started, nothing written) until it runs."""

from __future__ import annotations

from distillab.generate.config import GenerateConfig
from distillab.generate.engines import TransformersTeacher
from distillab.generate.pipeline import build_distilabel_pipeline


def test_building_the_pipeline_starts_no_engine_and_writes_nothing(tmp_path):
    output_dir = tmp_path / "out"
    config = GenerateConfig(model="teacher", generator="chain_sum", output_dir=str(output_dir), batch_size=4)
    teacher = TransformersTeacher(model=str(tmp_path / "no-such-model"))
    pipeline = build_distilabel_pipeline(config, teacher, total=10)
    assert list(pipeline.dag) == ["teacher", "shard_writer"]
    step = pipeline.dag.get_step("teacher")["step"]
    assert step.llm is teacher and step.input_batch_size == 4
    assert teacher._model is None  # not loaded: the model folder does not even exist
    assert not output_dir.exists()
