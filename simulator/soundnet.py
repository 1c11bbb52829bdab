"""SoundNet (Aytar, Vondrick & Torralba 2016): the 8-layer 1-D convolutional network on raw audio.

The layers, as in the original torch7 ``main_train.lua`` (cvondrick/soundnet) and the PyTorch port
``SoundNet8_pytorch`` (smallflyingpig/SoundNet_Pytorch), whose ``sound8.pth`` the Courtois NeuroMod
fine-tuning (brain-bzh/cNeuromod_encoding_2020) starts from:

layer  kernel  stride  padding  channels  max-pool  total stride
conv1      64       2       32        16         8            16
conv2      32       2       16        32         8           256
conv3      16       2        8        64                     512
conv4       8       2        4       128                    1024
conv5       4       2        2       256         4          8192
conv6       4       2        2       512                   16384
conv7       4       2        2      1024                   32768
conv8       8       2        0  1000 (objects) and 401 (places): two heads on conv7

Each of conv1..conv7 is convolution, batch norm, ReLU, then the max-pool where listed (its kernel
equals its stride). These seven layers hold 2 874 320 parameters, the "about 2.5 to 2.9 M" of the
brain-alignment study; the two heads add 11 478 393 (8 193 000 + 3 285 393), 14 352 713 in all.
conv7 advances one frame per 32 768 samples, 1.486 s at 22 050 Hz: about one frame per fMRI TR of
1.49 s; the paddings add frames at the edges (a 10 s sound gives 8).

State-dict keys follow the port: ``conv1.0.weight`` (convolution), ``conv1.1.*`` (batch norm), ...,
``conv8.0.*`` (objects) and ``conv8_2.0.*`` (places). The port stores convolution weights as
Conv2d kernels ``(out, in, k, 1)``; here they are Conv1d ``(out, in, k)`` and load either way.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from .model import ModelError

SAMPLE_RATE = 22050

# The original fed waveforms in [-256, 256]: torch7's audio.load gives 32-bit integer levels and
# extract_feat.lua multiplies by 2**-23; the TensorFlow port that the PyTorch weights come from
# multiplies librosa's [-1, 1] by 256 (eborboihuc/SoundNet-tensorflow, util.preprocess). The
# PyTorch port itself does not scale; its checks feed that already scaled demo input.
INPUT_SCALE = 256.0

# name, in channels, out channels, kernel, stride, padding, max-pool (kernel = stride) or 0
_TRUNK = (
    ("conv1", 1, 16, 64, 2, 32, 8),
    ("conv2", 16, 32, 32, 2, 16, 8),
    ("conv3", 32, 64, 16, 2, 8, 0),
    ("conv4", 64, 128, 8, 2, 4, 0),
    ("conv5", 128, 256, 4, 2, 2, 4),
    ("conv6", 256, 512, 4, 2, 2, 0),
    ("conv7", 512, 1024, 4, 2, 2, 0),
)
# name, classes; each head is a kernel-8, stride-2, unpadded convolution on conv7
_HEADS = (("conv8", 1000), ("conv8_2", 401))
_HEAD_KERNEL = 8
_SUFFIXES = (".pth", ".pt", ".safetensors")
_FORMAT = "cortexreplay.soundnet"


def frame_counts(n_samples: int) -> dict[str, int]:
    """Frames each of conv1..conv7 gives for a sound of ``n_samples`` (after its max-pool).

    >>> frame_counts(10 * SAMPLE_RATE)["conv7"], frame_counts(10 * SAMPLE_RATE + 32768)["conv7"]
    (8, 9)
    """
    counts = _counts(n_samples)
    if len(counts) < len(_TRUNK):
        layer = _TRUNK[len(counts)][0]
        raise ValueError(f"SoundNet's {layer} has no frame for a sound of {n_samples} samples; "
                         f"it needs at least {_shortest(layer)}")
    return counts


def _shortest(layer: str, frames: int = 1) -> int:
    """The fewest samples for which ``layer`` gives ``frames`` frames."""
    return next(n for n in range(1, 1 << 24) if _counts(n).get(layer, 0) >= frames)


def _counts(n_samples: int) -> dict[str, int]:
    """Frames per layer, up to the first layer that has none."""
    counts, n = {}, int(n_samples)
    for name, _, _, kernel, stride, pad, pool in _TRUNK:
        n = (n + 2 * pad - kernel) // stride + 1  # torch's Conv1d and MaxPool1d output lengths
        if pool:
            n //= pool
        if n < 1:
            break
        counts[name] = n
    return counts


class SoundNet(nn.Module):
    """SoundNet's trunk (conv1..conv7) and, with ``heads``, its object and place heads (conv8).

    ``forward`` takes waveforms (batch, n_samples) at 22 050 Hz scaled by `normalize` and returns
    the heads' raw scores ``(objects, places)``, each (batch, n_head_frames, classes) (the
    original put a LogSoftMax after them); without heads it returns conv7's activations.
    ``hidden_states`` gives every layer time-major, as wav2vec 2.0 does. The heads need 8 conv7
    frames: a sound of 209 374 samples (9.5 s) or more. In training mode batch norm needs two
    values per channel, so a batch of one sound needs 12 766 samples (0.58 s).

    >>> net = build_soundnet(seed=0, heads=False).eval()
    >>> x = SoundNet.normalize(torch.zeros(2 * SAMPLE_RATE))
    >>> [tuple(h.shape) for h in net.hidden_states(x)][-2:]
    [(1, 3, 512), (1, 2, 1024)]
    >>> net.layer_names()[0], sum(p.numel() for p in net.parameters())
    ('conv1', 2874320)
    """

    def __init__(self, heads: bool = True):
        super().__init__()
        for name, c_in, c_out, kernel, stride, pad, pool in _TRUNK:
            block = [nn.Conv1d(c_in, c_out, kernel, stride, pad), nn.BatchNorm1d(c_out), nn.ReLU()]
            if pool:
                block.append(nn.MaxPool1d(pool, pool))
            self.add_module(name, nn.Sequential(*block))
        self.heads = heads
        if heads:
            for name, classes in _HEADS:
                self.add_module(name, nn.Sequential(nn.Conv1d(1024, classes, _HEAD_KERNEL, 2)))

    @staticmethod
    def normalize(wave) -> torch.Tensor:
        """A waveform in [-1, 1] as the (1, n_samples) float32 input SoundNet expects: times 256."""
        return torch.as_tensor(wave, dtype=torch.float32).reshape(1, -1) * INPUT_SCALE

    def layer_names(self) -> list[str]:
        """Names of the feature spaces, shallow to deep: conv1..conv7."""
        return [spec[0] for spec in _TRUNK]

    def layer_modules(self) -> dict[str, nn.Module]:
        """The module whose parameters belong to each named layer (the heads belong to none)."""
        return {name: getattr(self, name) for name in self.layer_names()}

    def _trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Channel-major outputs (batch, channels, frames) of conv1..conv7."""
        if x.ndim != 2:
            raise ValueError(f"SoundNet takes waveforms of shape (batch, n_samples), "
                             f"but got a tensor of shape {tuple(x.shape)}")
        counts = frame_counts(x.shape[1])  # a clear message for a sound too short for the pools
        # conv7 has the fewest frames; batch norm cannot train on a single value per channel
        if self.training and x.shape[0] == 1 and counts["conv7"] < 2:
            shortest = _shortest("conv7", 2)
            raise ValueError(f"SoundNet's batch norm cannot train on one sound of {x.shape[1]} "
                             f"samples (one conv7 frame); it needs at least {shortest}")
        h, outs = x.unsqueeze(1), []
        for name in self.layer_names():
            h = getattr(self, name)(h)
            outs.append(h)
        return outs

    def hidden_states(self, x: torch.Tensor) -> list[torch.Tensor]:
        """conv1..conv7's activations to ``x`` (batch, n_samples), each (batch, frames, channels).

        Computed with autograd whenever the caller has it enabled, so losses on them train the net.
        """
        return [h.transpose(1, 2) for h in self._trunk(x)]

    def forward(self, x: torch.Tensor):
        """``(objects, places)`` scores, each (batch, frames, classes); conv7's without heads."""
        top = self._trunk(x)[-1]
        if not self.heads:
            return top.transpose(1, 2)
        if top.shape[2] < _HEAD_KERNEL:
            raise ValueError(f"SoundNet's heads need {_HEAD_KERNEL} conv7 frames, but a sound of "
                             f"{x.shape[1]} samples gives {top.shape[2]}")
        return tuple(getattr(self, name)(top).transpose(1, 2) for name, _ in _HEADS)


def build_soundnet(seed: int = 0, heads: bool = True) -> SoundNet:
    """An untrained SoundNet, deterministic from ``seed``, initialised as the original was
    (``main_train.lua``): convolutions N(0, 0.01) with zero bias, batch-norm scales N(1, 0.02)."""
    # Construction draws PyTorch's default init from the global stream: fork it so the caller's
    # is untouched. Our own generator then overwrites every weight, trunk first, so a trunk is
    # the same with or without heads.
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        model = SoundNet(heads=heads)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv1d):
                module.weight.normal_(0.0, 0.01, generator=generator)
                module.bias.zero_()
            elif isinstance(module, nn.BatchNorm1d):
                module.weight.normal_(1.0, 0.02, generator=generator)
                module.bias.zero_()
    return model


def save_soundnet(model: SoundNet, path) -> None:
    """Write ``model``'s weights as a safetensors file that `load_soundnet` reads."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.fspath(path), metadata={"format": _FORMAT, "version": "1"})


def is_soundnet_file(path) -> bool:
    """Whether ``path`` names a SoundNet weights file (a .pth, .pt or .safetensors file) rather
    than a wav2vec 2.0 model, which is a directory. What the file holds is `load_soundnet`'s to
    check, so a damaged file fails with its own message, not as a missing wav2vec 2.0 directory.
    """
    path = os.fspath(path)
    return os.path.isfile(path) and path.lower().endswith(_SUFFIXES)


def load_soundnet(path) -> SoundNet:
    """SoundNet with the weights of a local file, in eval mode.

    Reads a PyTorch state dict (``torch.load(weights_only=True)``) in the port's key names, such
    as ``sound8.pth``, also inside a checkpoint dict (``{"checkpoint": ...}`` or
    ``{"state_dict": ...}``, keys under ``soundnet.`` as the NeuroMod encoding models save them,
    whose fMRI head is left out); or a safetensors file, as `save_soundnet` writes. A file
    without conv8 heads gives a trunk-only network.
    """
    where = f"cannot load SoundNet weights from {os.fspath(path)!r}"
    state = _soundnet_keys(_read_state(path, where))
    heads = _check_keys(state, where)
    model = build_soundnet(heads=heads)
    expected = model.state_dict()
    for key, value in expected.items():
        if key not in state:  # num_batches_tracked, which older files lack
            state[key] = value
            continue
        got = state[key]
        if not isinstance(got, torch.Tensor):
            raise ModelError(f"{where}: {key} holds a {type(got).__name__}, not a tensor")
        if got.ndim == 4 and value.ndim == 3 and 1 in got.shape[2:]:
            got = got.reshape(got.shape[:2] + (-1,))  # the port's Conv2d kernel (out, in, k, 1)
        if tuple(got.shape) != tuple(value.shape):
            raise ModelError(f"{where}: {key} has shape {tuple(state[key].shape)}, but SoundNet "
                             f"expects {tuple(value.shape)}")
        state[key] = got.to(value.dtype)
    model.load_state_dict(state)
    return model.eval()


def _read_state(path, where: str) -> dict:
    """The tensors of a safetensors file or a ``torch.save``d dict, on the CPU."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ModelError(f"{where}: it is a directory (a wav2vec 2.0 model?), not a weights file")
    if not os.path.isfile(path):
        raise ModelError(f"{where}: no such file")
    with open(path, "rb") as f:
        head = f.read(9)
    try:
        # safetensors: an 8-byte header length, then the JSON header
        if len(head) == 9 and head[8:9] == b"{":
            from safetensors.torch import load_file
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # unpickling, zip and safetensors errors have no common base
        why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"{where}: not a safetensors or PyTorch weights file ({why})") from None
    if not isinstance(state, dict):
        raise ModelError(f"{where}: it holds a {type(state).__name__}, not a state dict")
    return state


def _soundnet_keys(state: dict) -> dict:
    """The SoundNet part of a state dict or of a checkpoint dict wrapping one."""
    for wrapper in ("checkpoint", "state_dict"):
        if isinstance(state.get(wrapper), dict):
            state = state[wrapper]
            break
    for prefix in ("soundnet.", "module."):
        if any(isinstance(k, str) and k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()
                     if isinstance(k, str) and k.startswith(prefix)}
    return dict(state)


def _check_keys(state: dict, where: str) -> bool:
    """Whether ``state`` has the heads; a `ModelError` naming missing or unexpected keys."""
    trunk, full = set(_expected_keys(False)), set(_expected_keys(True))
    head_keys = full - trunk
    present = set(state)
    heads = bool(present & head_keys)
    required = {k for k in (full if heads else trunk) if not k.endswith("num_batches_tracked")}
    missing = sorted(required - present)
    unexpected = sorted(str(k) for k in present - full)
    if missing or unexpected:
        parts = [f"{what} {_few(names)}" for what, names in (("missing", missing),
                                                           ("unexpected", unexpected)) if names]
        raise ModelError(f"{where}: not a SoundNet state dict ({'; '.join(parts)})")
    return heads


def _expected_keys(heads: bool) -> list[str]:
    """State-dict keys of a SoundNet, with or without heads, in the port's names."""
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    names = []
    for name, *_ in _TRUNK:
        names += [f"{name}.0.weight", f"{name}.0.bias"] + [f"{name}.1.{b}" for b in bn]
    if heads:
        names += [f"{name}.0.{p}" for name, _ in _HEADS for p in ("weight", "bias")]
    return names


def _few(names: list[str], most: int = 3) -> str:
    """``a, b, c and 5 more``: a short list for a one-line message."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
