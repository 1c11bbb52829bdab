"""The learning network: wav2vec 2.0 (transformers) built from a named size or loaded from disk.

Layer names used everywhere downstream: ``"cnn"`` is the convolutional feature encoder's output
and ``"layer_k"`` the output of transformer block k (1-based). A SoundNet (simulator.soundnet)
names its own layers (``"conv1"`` ... ``"conv7"``); `layer_names`, `layer_modules`,
`model_input` and `hidden_spaces` answer for either network, so the rest of the code does not
care which one it holds.
"""
from __future__ import annotations

import os

import torch
from transformers import Wav2Vec2Config, Wav2Vec2ForPreTraining
from transformers.utils import logging as hf_logging

from replay.checks import check_choice

hf_logging.disable_progress_bar()  # per-call bars would interleave with the replay's own

# Shared by every size. layerdrop=0 keeps every block in every step (transformers draws layerdrop
# from numpy's global state); mask_time_prob>0 makes transformers create the learned mask
# embedding, while the masks themselves come from our own sampler (simulator.ssl).
_COMMON = dict(
    layerdrop=0.0,
    mask_time_prob=0.4,
    mask_time_length=3,
    num_negatives=30,
    feat_extract_norm="layer",
    do_stable_layer_norm=True,
    conv_bias=True,
    # Single-sound steps see ~40 masked frames, so the codebook collapses to one code per group
    # within ~30 steps at the default weight 0.1 (contrastive loss 0: every negative equals its
    # positive, gradients vanish). 0.5 keeps perplexity at 30-50 of 128 codes at lr up to 3e-3.
    diversity_loss_weight=0.5,
)

_TINY = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
             conv_dim=(128,) * 7, codevector_dim=128, proj_codevector_dim=64,
             num_codevectors_per_group=64, num_conv_pos_embeddings=32,
             num_conv_pos_embedding_groups=4)

SIZES = {
    # ~1.2 M parameters: the demo and the tests.
    "tiny": _TINY,
    # "tiny" with transformer layers that are not one linear space. Minutes of pretraining leave
    # tiny's blocks near-linear and its residual stream barely changing (frame by frame, layer_3
    # is a linear map of layer_1 with R^2 0.9998), unlike a trained wav2vec 2.0's layers. Here
    # linear weights start 15x wider than transformers' 0.02, so attention and GELU work in their
    # nonlinear range and each block adds what the layer before does not carry (docs/validation.md,
    # claim 6). Post-norm (as wav2vec 2.0 BASE) would separate the layers further, but its
    # codebook collapses within 150 pretraining steps at this width.
    "tiny-wide-init": {**_TINY, "initializer_range": 0.3},
    "small": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536,
                  conv_dim=(256,) * 7, codevector_dim=256, proj_codevector_dim=128,
                  num_codevectors_per_group=160, num_conv_pos_embeddings=64,
                  num_conv_pos_embedding_groups=16),
    # wav2vec 2.0 BASE (Baevski et al. 2020): transformers' defaults.
    "base": dict(),
}


class ModelError(ValueError):
    """A model name, size or directory that cannot be used."""


def build_model(size: str = "tiny", seed: int = 0) -> Wav2Vec2ForPreTraining:
    """A freshly initialised wav2vec 2.0 of a named size, deterministic from ``seed``.

    >>> model = build_model("tiny", seed=0)
    >>> layer_names(model)
    ['cnn', 'layer_1', 'layer_2', 'layer_3', 'layer_4']
    """
    check_choice("size", size, SIZES, ModelError)
    return init_model(Wav2Vec2Config(**{**_COMMON, **SIZES[size]}), seed)


def init_model(config: Wav2Vec2Config, seed: int = 0) -> Wav2Vec2ForPreTraining:
    """Untrained weights for ``config``, deterministic from ``seed``."""
    # Initialise under our own seed without touching the caller's global torch stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return Wav2Vec2ForPreTraining(config)


def load_model(name_or_dir: str) -> Wav2Vec2ForPreTraining:
    """Load a wav2vec 2.0 pretraining model from a local directory (or a hub id already cached).

    Nothing is downloaded at run time (``local_files_only``): a hub id loads only from the local
    Hugging Face cache, so a mistyped directory fails at once instead of retrying a network.
    """
    try:
        return Wav2Vec2ForPreTraining.from_pretrained(name_or_dir, local_files_only=True)
    except (OSError, ValueError) as err:
        if not os.path.isdir(name_or_dir):
            why = "no such directory, nor a cached hub model of that name"
        else:
            why = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(f"cannot load a wav2vec 2.0 model from {name_or_dir!r}: {why} "
                         "(make one with 'cortexreplay pretrain --out DIR')") from None


def names_its_layers(model) -> bool:
    """Whether ``model`` names its own layers (a SoundNet) rather than being a wav2vec 2.0."""
    return callable(getattr(model, "layer_modules", None))


def layer_names(model) -> list[str]:
    """Names of the feature spaces the model exposes, shallow to deep."""
    if names_its_layers(model):
        return model.layer_names()
    return ["cnn"] + [f"layer_{k}" for k in range(1, model.config.num_hidden_layers + 1)]


def layer_modules(model) -> dict[str, torch.nn.Module]:
    """The module whose parameters belong to each named layer (for per-layer weight change)."""
    if names_its_layers(model):
        return model.layer_modules()
    w2v = model.wav2vec2
    modules = {"cnn": w2v.feature_extractor}
    for k, block in enumerate(w2v.encoder.layers, start=1):
        modules[f"layer_{k}"] = block
    return modules


# Parameters of the self-supervised loss, not of any feature space: they learn whenever any layer
# does, so the targets and projections can follow the layers that change.
LOSS_HEADS = ("quantizer", "project_q", "project_hid")


def freeze_except(model: Wav2Vec2ForPreTraining, layers) -> list[bool]:
    """Let only ``layers`` (names of `layer_names`, or ``["all"]``) and the loss's heads learn;
    return, for each of ``model.parameters()``, whether it still learns. Parameters between the
    named layers (feature projection, positional convolution, final norm, mask embedding) learn
    only with ``["all"]``.

    >>> model = build_model("tiny")
    >>> learns = freeze_except(model, ["layer_4"])
    >>> sum(learns) < len(learns), all(p.requires_grad for p in model.wav2vec2.encoder.layers[3].parameters())
    (True, True)
    """
    if list(layers) == ["all"]:
        return [p.requires_grad for p in model.parameters()]
    modules = layer_modules(model)
    unknown = sorted(set(layers) - set(modules))
    if unknown:
        raise ModelError(f"model.trainable_layers names {unknown}; the model has {list(modules)}")
    learning = {id(p) for name in layers for p in modules[name].parameters()}
    learning |= {id(p) for head in LOSS_HEADS for p in getattr(model, head).parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in learning)
    return [id(p) in learning for p in model.parameters()]


def subset_optimizer_state(state: dict | None, kept: list[bool]) -> dict | None:
    """An AdamW ``state_dict`` over all of a model's parameters, cut down to the ``kept`` ones
    (``freeze_except``'s answer), so a checkpoint's optimizer state resumes a partial update."""
    if state is None or all(kept):
        return state
    if len(state["param_groups"]) != 1 or len(state["param_groups"][0]["params"]) != len(kept):
        raise ModelError("the checkpoint's optimizer state does not match its model's parameters")
    old = state["param_groups"][0]["params"]
    index = [i for i, keep in zip(old, kept) if keep]
    group = {**state["param_groups"][0], "params": list(range(len(index)))}
    return {"state": {new: state["state"][i] for new, i in enumerate(index) if i in state["state"]},
            "param_groups": [group]}


def normalize_wave(wave) -> torch.Tensor:
    """Zero-mean, unit-variance waveform as a (1, n_samples) float32 tensor.

    This is what transformers' Wav2Vec2FeatureExtractor does with ``do_normalize=True``.
    """
    x = torch.as_tensor(wave, dtype=torch.float32).reshape(1, -1)
    return (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)


def model_input(model, wave) -> torch.Tensor:
    """``wave`` as the network takes it, (1, n_samples) on the model's device: wav2vec 2.0's
    normalisation (`normalize_wave`), or SoundNet's own scaling."""
    x = model.normalize(wave) if names_its_layers(model) else normalize_wave(wave)
    return x.to(next(model.parameters()).device)


def hidden_spaces(model, x: torch.Tensor) -> list[torch.Tensor]:
    """Every named layer's activations to ``x`` (from `model_input`), in `layer_names` order,
    each (1, n_model_frames, n_features); with autograd when the caller has it on."""
    if names_its_layers(model):
        return model.hidden_states(x)
    out = model.wav2vec2(x, output_hidden_states=True)
    return [out.extract_features] + list(out.hidden_states[1:])


AUTOCAST = ("none", "bfloat16")  # `model.autocast`: the precision of the network's forward passes


def autocast_forwards(model, autocast: str = "bfloat16") -> None:
    """Run ``model``'s forward passes (the pretraining one and ``model.wav2vec2``'s) under
    ``torch.autocast`` at ``autocast`` precision ("none" changes nothing), as autocast is meant to
    be used: around the forward, the backward outside it. Weights and AdamW stay float32.

    bfloat16 pays off on hardware with bf16 units (recent GPUs, AMX CPUs); on an AVX2 CPU it is
    slower than float32 (docs/performance.md).
    """
    check_choice("model.autocast", autocast, AUTOCAST)
    if autocast == "none":
        return
    device = next(model.parameters()).device.type
    for module in (model, model.wav2vec2):
        forward = module.forward

        def wrapped(*args, _forward=forward, **kwargs):
            with torch.autocast(device, dtype=torch.bfloat16):
                return _forward(*args, **kwargs)

        module.forward = wrapped
