"""Nothing shiftlab reads from a store or a model folder is unpickled.

Each test plants a pickle whose loading would run a command (touch a marker file) in one
place shiftlab reads, and checks that the marker never appears and that the error, where
there is one, is one line naming the file.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from shiftlab.errors import ModelError, StoreError
from spec_helpers import TINY_STUDY


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture()
def plant(tmp_path):
    """``plant(path)`` writes a malicious pickle there; ``plant.ran()`` says if it ran."""
    marker = tmp_path / "pickle-ran"

    class Planter:
        def __call__(self, path: Path) -> Path:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(pickle.dumps(_Payload(marker)))
            return path

        @staticmethod
        def ran() -> bool:
            return marker.exists()

    planter = Planter()
    planter(tmp_path / "self-check.pkl")
    with open(tmp_path / "self-check.pkl", "rb") as handle:
        pickle.load(handle)  # the payload works: the tests below can fail
    assert planter.ran()
    marker.unlink()
    return planter


def _one_line(error: BaseException, *names: str) -> None:
    message = str(error)
    assert "\n" not in message, message
    for name in names:
        assert name in message, message


@pytest.fixture()
def model_folder(tmp_path):
    from shiftlab.models import build_tiny_llama, save_model_dir
    from shiftlab.toyworld import build_tokenizer

    tokenizer = build_tokenizer()
    folder = tmp_path / "model"
    save_model_dir(build_tiny_llama(len(tokenizer)), tokenizer, folder)
    return folder


def test_a_model_folder_with_only_pickled_weights_is_refused(model_folder, plant):
    from shiftlab.models import load_causal_lm

    (model_folder / "model.safetensors").unlink()
    plant(model_folder / "pytorch_model.bin")
    with pytest.raises(ModelError) as caught:
        load_causal_lm(str(model_folder))
    _one_line(caught.value, "pytorch_model.bin", "safetensors")
    assert not plant.ran()


def test_a_pickle_beside_safetensors_is_never_read(model_folder, plant):
    from shiftlab.models import load_causal_lm

    plant(model_folder / "pytorch_model.bin")
    model, _ = load_causal_lm(str(model_folder))
    assert model is not None and not plant.ran()


def test_an_adapter_with_only_pickled_weights_is_refused(model_folder, plant, tmp_path):
    from shiftlab.models import attach_lora, load_causal_lm, load_lora

    model, _ = load_causal_lm(str(model_folder))
    adapter = tmp_path / "adapter"
    attach_lora(model).save_pretrained(adapter)
    (adapter / "adapter_model.safetensors").unlink()
    plant(adapter / "adapter_model.bin")
    fresh, _ = load_causal_lm(str(model_folder))
    with pytest.raises(ModelError) as caught:
        load_lora(fresh, str(adapter))
    _one_line(caught.value, "adapter_model.bin")
    assert not plant.ran()


def test_a_reward_model_with_only_pickled_weights_is_refused(model_folder, plant, tmp_path):
    from transformers import AutoConfig

    from shiftlab.consistency import RewardModelScorer

    folder = tmp_path / "rm"
    shutil.copytree(model_folder, folder)
    config = AutoConfig.from_pretrained(folder)
    config.architectures = ["LlamaForSequenceClassification"]
    config.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    plant(folder / "pytorch_model.bin")
    with pytest.raises(ModelError) as caught:
        RewardModelScorer(folder)
    _one_line(caught.value, "pytorch_model.bin")
    assert not plant.ran()


def test_an_encoder_with_only_pickled_weights_is_refused(plant, tmp_path):
    from shiftlab.shift import TextEncoder
    from shiftlab.shift._encoders import default_encoder_path

    folder = tmp_path / "encoder"
    shutil.copytree(default_encoder_path(), folder)
    (folder / "model.safetensors").unlink()
    plant(folder / "pytorch_model.bin")
    with pytest.raises(ModelError) as caught:
        TextEncoder(folder)
    _one_line(caught.value, "pytorch_model.bin")
    assert not plant.ran()


def _tiny_training():
    from shiftlab.models import attach_lora, build_tiny_llama
    from shiftlab.spec import TrainingSpec
    from shiftlab.toyworld import build_tokenizer
    from shiftlab.training import encode_sft

    tokenizer = build_tokenizer()
    model = attach_lora(build_tiny_llama(len(tokenizer)))
    data = encode_sft(tokenizer, [([{"role": "user", "content": "hi ."}], "the sky is blue .")], 32)
    config = TrainingSpec(steps=3, batch_size=1, warmup_steps=0)
    return model, tokenizer, data, config


def test_a_planted_checkpoint_is_not_read_by_a_run_that_writes_none(plant, tmp_path):
    from shiftlab.training import train

    model, tokenizer, data, config = _tiny_training()
    plant(tmp_path / "ckpt" / "checkpoint-00000001" / "state.pt")
    log = train(model, tokenizer, data, config, checkpoint_dir=tmp_path / "ckpt", progress=False)
    assert log.height == 3 and not plant.ran()


def test_a_planted_checkpoint_is_refused_by_a_run_that_writes_them(plant, tmp_path):
    from shiftlab.training import train

    model, tokenizer, data, config = _tiny_training()
    config = config.model_copy(update={"checkpoint_every": 1})
    folder = tmp_path / "ckpt"
    # An old-format checkpoint: a pickled state.pt and no state.json.
    plant(folder / "checkpoint-00000001" / "state.pt")
    with pytest.raises(StoreError) as caught:
        train(model, tokenizer, data, config, checkpoint_dir=folder, progress=False)
    _one_line(caught.value, "state.json", str(folder))
    # A real checkpoint whose tensors file was replaced by a pickle.
    shutil.rmtree(folder)
    train(model, tokenizer, data, config, checkpoint_dir=folder, stop_after=1, progress=False)
    (checkpoint,) = folder.glob("checkpoint-*")
    json.loads((checkpoint / "state.json").read_text())  # the fingerprint matches this run
    plant(checkpoint / "tensors.safetensors")
    with pytest.raises(StoreError) as caught:
        train(model, tokenizer, data, config, checkpoint_dir=folder, progress=False)
    _one_line(caught.value, "tensors.safetensors")
    assert not plant.ran()


def test_a_submitit_folder_others_can_write_to_is_refused(tmp_path):
    from shiftlab.executors import ExecutorError, private_job_folder

    folder = private_job_folder(tmp_path / "jobs")
    assert folder.stat().st_mode & 0o777 == 0o700
    folder.chmod(0o777)
    with pytest.raises(ExecutorError) as caught:
        private_job_folder(folder)
    _one_line(caught.value, "writable by others", "chmod go-w")


def test_the_cli_names_the_pickled_model_in_one_line(model_folder, plant, tmp_path):
    (model_folder / "model.safetensors").unlink()
    plant(model_folder / "pytorch_model.bin")
    study = {**TINY_STUDY, "base_models": [{"name": "toy", "path": str(model_folder)}]}
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({**study, "store": str(tmp_path / "store")}))
    exe = str(Path(sys.executable).with_name("shiftlab"))
    result = subprocess.run(
        [exe, "run", str(spec), "--workers", "1", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("shiftlab: error: ") and "pytorch_model.bin" in line
    assert not plant.ran()
