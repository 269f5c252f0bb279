"""The four accelerate configs parse and validate the way `accelerate launch` reads them.

FSDP cannot run on CPU (FSDP1 errors, FSDP2 silently falls back to DDP), so fsdp.yaml is validated only:
accelerate's own launch path turns it into the environment a training process sees, and the FSDP plugin is
built from that environment.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from unittest import mock

import pytest
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, DistributedType, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_multi_gpu_env

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "accelerate_configs"


def launch_args(name: str):
    """`accelerate launch --config_file accelerate_configs/NAME.yaml -m distillab.sft`, as accelerate parses it."""
    argv = ["--config_file", str(CONFIGS / f"{name}.yaml"), "-m", "distillab.sft"]
    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(argv))
    return args


def test_all_four_configs_exist():
    assert sorted(p.stem for p in CONFIGS.glob("*.yaml")) == ["cpu", "ddp", "fsdp", "zero3"]


def test_cpu_is_one_plain_process():
    args = launch_args("cpu")
    assert args.num_processes == 1
    assert not (args.multi_gpu or args.use_deepspeed or args.use_fsdp)


def test_ddp_starts_a_multi_process_launcher():
    args = launch_args("ddp")
    # `use_cpu: true` would route accelerate to its single-process launcher: the config must not set it
    assert args.multi_gpu and not args.cpu and not (args.use_deepspeed or args.use_fsdp)
    assert prepare_multi_gpu_env(args)["ACCELERATE_MIXED_PRECISION"] == "no"  # the run config's bf16 decides


def test_zero3_is_stage_3_with_auto_values_and_a_16bit_gathered_save():
    args = launch_args("zero3")
    assert args.use_deepspeed and args.zero3_init_flag
    ds_file = REPO / args.deepspeed_config_file
    ds_config = json.loads(ds_file.read_text())
    plugin = DeepSpeedPlugin(hf_ds_config=str(ds_file), zero3_init_flag=True)
    assert plugin.zero_stage == 3 and plugin.hf_ds_config.is_zero3()
    assert ds_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "gradient_clipping"):
        assert ds_config[key] == "auto", key
    assert "optimizer" not in ds_config and "scheduler" not in ds_config  # the Trainer's, from the run config


def test_fsdp_validates_into_an_fsdp2_plugin():
    args = launch_args("fsdp")
    assert args.use_fsdp and not args.cpu
    env = prepare_multi_gpu_env(args)
    assert env["ACCELERATE_USE_FSDP"] == "true"
    with mock.patch.dict(os.environ, env):
        plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"  # save_pretrained gets full weights
    assert plugin.auto_wrap_policy is not None


@pytest.mark.parametrize("name", ["cpu", "ddp", "zero3", "fsdp"])
def test_distributed_types(name):
    from accelerate.commands.config.config_args import load_config_from_file

    expected = {"cpu": "NO", "ddp": "MULTI_GPU", "zero3": "DEEPSPEED", "fsdp": "FSDP"}[name]
    assert load_config_from_file(str(CONFIGS / f"{name}.yaml")).distributed_type == DistributedType[expected]
