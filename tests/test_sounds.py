"""Tests of simulator.sounds: determinism, format, balance and acoustic differences."""

import re
from collections import Counter

import numpy as np
import pytest
from scipy import signal

from simulator.sounds import CATEGORIES, make_sound, make_sound_set

SR = 16000


@pytest.fixture(scope="module")
def sounds():
    return make_sound_set(16, 2.0, seed=7)


def _log_flatness(x):
    """log10 of the spectral flatness (geometric / arithmetic mean of the Welch PSD)."""
    _, psd = signal.welch(x, SR, nperseg=1024)
    psd = psd[1:] + 1e-20
    return np.mean(np.log10(psd)) - np.log10(np.mean(psd))


def _syllabic_modulation(x):
    """Share of the amplitude envelope's modulation power between 2 and 8 Hz."""
    envelope = signal.resample_poly(np.abs(signal.hilbert(x)), 1, 160)  # 100 Hz
    freqs, psd = signal.welch(envelope - envelope.mean(), 100, nperseg=128)
    return psd[(freqs >= 2) & (freqs <= 8)].sum() / psd[(freqs > 0.5) & (freqs < 40)].sum()


def _by_category(sounds, feature):
    values = {c: [] for c in CATEGORIES}
    for x, category in zip(sounds.audio, sounds.categories):
        values[category].append(feature(x.astype(float)))
    return {c: np.array(v) for c, v in values.items()}


def test_same_seed_same_audio_and_different_seed_different_audio():
    a, b = make_sound_set(8, 0.5, seed=3), make_sound_set(8, 0.5, seed=3)
    c = make_sound_set(8, 0.5, seed=4)
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.names == b.names and a.categories == b.categories
    assert not np.allclose(a.audio, c.audio, atol=1e-3)


@pytest.mark.parametrize("category", CATEGORIES)
def test_make_sound_is_a_function_of_the_generator_state(category):
    x = make_sound(category, 0.5, np.random.default_rng(11))
    y = make_sound(category, 0.5, np.random.default_rng(11))
    z = make_sound(category, 0.5, np.random.default_rng(12))
    np.testing.assert_array_equal(x, y)
    assert not np.allclose(x, z, atol=1e-3)


def test_shapes_dtype_rms_fades_and_no_clipping(sounds):
    audio = sounds.audio
    assert audio.shape == (16, 2 * SR) and audio.dtype == np.float32
    assert sounds.sample_rate == SR
    assert np.all(np.isfinite(audio))
    rms = np.sqrt(np.mean(audio.astype(float) ** 2, axis=1))
    np.testing.assert_allclose(rms, 0.1, rtol=1e-4)
    assert np.abs(audio).max() < 1.0
    # 10 ms cosine fades: zero at both ends, still small 2 ms in.
    assert np.all(audio[:, 0] == 0) and np.all(audio[:, -1] == 0)
    assert np.abs(audio[:, :32]).max() < 0.1 * np.abs(audio).max()
    assert np.abs(audio[:, -32:]).max() < 0.1 * np.abs(audio).max()


@pytest.mark.parametrize("category", CATEGORIES)
def test_other_sample_rate_and_odd_duration(category):
    x = make_sound(category, 0.3337, np.random.default_rng(0), sample_rate=8000)
    assert x.shape == (2670,) and x.dtype == np.float32
    assert np.all(np.isfinite(x)) and np.abs(x).max() < 1.0
    assert np.sqrt(np.mean(x.astype(float) ** 2)) == pytest.approx(0.1, rel=1e-4)


def test_categories_balanced_shuffled_and_named():
    sounds = make_sound_set(10, 0.2, seed=1)
    assert Counter(sounds.categories) == {"speech": 3, "music": 3, "noise": 2, "sweep": 2}
    # The order is shuffled by the seed: four seeds give (almost surely) four orders.
    orders = {tuple(make_sound_set(10, 0.05, seed=s).categories) for s in range(4)}
    assert len(orders) == 4
    assert len(set(sounds.names)) == 10
    for i, (name, category) in enumerate(zip(sounds.names, sounds.categories)):
        assert re.fullmatch(rf"{category}_{i:03d}", name)


def test_noise_is_spectrally_flatter_than_music(sounds):
    flatness = _by_category(sounds, _log_flatness)
    # Harmonic notes concentrate power in a few partials; noise textures spread it.
    assert np.median(flatness["noise"]) > np.median(flatness["music"]) + 2
    assert flatness["noise"].min() > flatness["music"].max()


def test_speech_has_syllabic_rate_modulation(sounds):
    modulation = _by_category(sounds, _syllabic_modulation)
    # Syllables of 100-300 ms put the envelope's power near 4-5 Hz; noise drifts slowly.
    assert modulation["speech"].min() > 0.3
    assert modulation["speech"].mean() > 2 * modulation["noise"].mean()


def test_unknown_category_is_refused():
    message = (
        "Invalid value for the 'category' parameter. Allowed values are 'speech', 'music', "
        "'noise' and 'sweep', but got 'voice' instead."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        make_sound("voice", 1.0, np.random.default_rng(0))


def test_bad_duration_and_count_are_refused():
    with pytest.raises(ValueError, match=r"'duration_s' parameter.*but got 0\.0 instead"):
        make_sound("noise", 0.0, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"'n_sounds' parameter.*but got 0 instead"):
        make_sound_set(0, 1.0, seed=0)
