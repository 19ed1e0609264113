"""Checkpoints on a full disk: one line naming the checkpoint and the free space, the
half-written temporary removed, the previous checkpoint kept."""

import pytest
import safetensors.torch
import torch

from shiftlab.errors import OutOfSpace
from shiftlab.training._checkpoints import latest_checkpoint, load_checkpoint, save_checkpoint


def test_a_full_disk_while_checkpointing_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, 1, {"weights": torch.ones(3)}, "run-a")
    real = safetensors.torch.save_file

    def full_disk(tensors, path):
        real(tensors, path)  # as far as it got
        raise RuntimeError(
            "Error while serializing: IoError(No space left on device (os error 28))"
        )

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(OutOfSpace) as caught:
        save_checkpoint(tmp_path, 2, {"weights": torch.zeros(3)}, "run-a")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'checkpoint-00000002'}: no space left on the device (")
    assert " free on /" in message and "\n" not in message
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-00000001"]
    step, state = load_checkpoint(latest_checkpoint(tmp_path), "run-a")
    assert step == 1 and torch.equal(state["weights"], torch.ones(3))
