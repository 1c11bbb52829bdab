"""Shared fixtures: a tiny real checkpoint and a tiny real synthetic recording, made once per session."""
import pytest
import torch

from simulator.cortex import CortexSettings, synthesize
from simulator.pretrain import PretrainSettings, pretrain

# Tiny models are fastest on one thread, and tests must not fight each other for cores.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A 'tiny' wav2vec 2.0 pretrained for a few steps on short synthetic clips."""
    out = tmp_path_factory.mktemp("checkpoint")
    settings = PretrainSettings(size="tiny", steps=4, warmup_steps=2, corpus_sounds=4, clip_s=0.5)
    return pretrain(out, settings, log=None)


@pytest.fixture(scope="session")
def tiny_recording(tmp_path_factory, tiny_checkpoint):
    """6 one-second sounds x 2 repeats, 1 subject, 24 voxels, a plastic teacher."""
    out = tmp_path_factory.mktemp("recording") / "rec.zarr"
    settings = CortexSettings(seed=0, sounds=6, duration_s=1.0, subjects=1, voxels=24, repeats=2,
                              plasticity=3e-3, retention=0.9, snr=2.0, teacher_steps=1,
                              pre_s=2.0, post_s=3.0)
    return synthesize(out, tiny_checkpoint, settings, log=None)
