"""The front end: decoding, resampling, the mel spectrogram against librosa, patches, bad files."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deejai.engine import audio
from deejai.engine.errors import AudioError, EmptyAudioError, ModelError, UnsupportedFormatError
from tests.audiogen import synth, write_mp3

MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "msd-musicnn"

#: musicnn's front end (musicnn/configuration.py) as a plain mapping; the card says the same.
CARD = {
    "name": "test-card",
    "sample_rate_hz": 16000,
    "n_fft": 512,
    "hop_length": 256,
    "n_mels": 96,
    "patch_frames": 187,
    "compression": {"type": "log10", "scale": 10000, "offset": 1},
}
SR, HOP, P = 16000, 256, 187


def librosa_log_mel(y: np.ndarray) -> np.ndarray:
    librosa = pytest.importorskip("librosa")
    mel = librosa.feature.melspectrogram(y=y, sr=SR, hop_length=HOP, n_fft=512, n_mels=96)
    return np.log10(10000 * mel.T + 1)


def assert_close_rel(ours: np.ndarray, ref: np.ndarray, rtol: float = 1e-4, atol: float = 1e-5):
    """|ours - ref| <= rtol * |ref| + atol everywhere (atol only matters near log10(1) = 0)."""
    assert ours.shape == ref.shape
    err = np.abs(ours.astype(np.float64) - ref)
    assert np.all(err <= rtol * np.abs(ref) + atol), float(err.max())


# ------------------------------------------------------------------ mel spectrogram vs librosa


def test_mel_filters_match_librosa():
    librosa = pytest.importorskip("librosa")
    for sr, n_fft, n_mels in [(16000, 512, 96), (22050, 2048, 96), (44100, 1024, 40)]:
        ref = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
        ours = audio.mel_filters(sr, n_fft, n_mels)
        assert ours.dtype == np.float32 and ours.shape == ref.shape
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-9)


@pytest.mark.filterwarnings("ignore:n_fft=.*is too large")
@pytest.mark.parametrize("seconds", [0.01, 0.5, 3.0, 7.3])
@pytest.mark.parametrize("kind", ["noise", "chirp", "beat"])
def test_log_mel_matches_librosa(kind, seconds):
    y = synth(kind, seconds, SR, seed=3)[:, 0]
    ours = audio.log_mel(y, CARD)
    ref = librosa_log_mel(y)
    assert ours.dtype == np.float32
    assert ours.shape == (1 + len(y) // HOP, 96)
    assert_close_rel(ours, ref)


def test_log_mel_matches_the_model_cards_golden_reference():
    golden = MODEL_DIR / "golden.npz"
    if not golden.is_file():
        pytest.skip("models/msd-musicnn/golden.npz not there")
    g = np.load(golden)
    card = json.loads((MODEL_DIR / "card.json").read_text())
    assert_close_rel(audio.log_mel(g["signal"], card), g["signal_log_mel"])


def test_log_mel_of_silence_is_zero_not_nan():
    out = audio.log_mel(np.zeros(SR * 2, np.float32), CARD)
    assert np.isfinite(out).all() and np.all(out == 0)


def test_card_asking_for_another_front_end_is_a_model_error():
    with pytest.raises(ModelError, match="htk"):
        audio.log_mel(np.zeros(SR), {**CARD, "mel": "htk"})
    with pytest.raises(ModelError, match="compression"):
        audio.log_mel(np.zeros(SR), {**CARD, "compression": {"type": "db"}})


# ------------------------------------------------------------------ decoding


def test_decode_matches_librosa_load(tmp_path):
    librosa = pytest.importorskip("librosa")
    path = write_mp3(tmp_path / "a.mp3", seconds=4.0, kind="chirp", seed=2)
    ours, info = audio.decode(path, SR)
    ref, _ = librosa.load(str(path), sr=SR)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    # librosa decodes with libsndfile (mpg123), deejai with FFmpeg's mp3float: two MP3 decoders
    # agree to below one 16-bit step (3e-5), with the same gapless alignment
    np.testing.assert_allclose(ours, ref, atol=6e-5)
    assert info.sample_rate_hz == 44100 and info.channels == 2 and info.seekable
    assert info.format == "MP3"


def test_info_reads_the_length_without_decoding(tmp_path):
    path = write_mp3(tmp_path / "a.mp3", seconds=7.0, kind="noise", seed=1)
    i = audio.info(path)
    assert i.decoder == "pyav"
    assert abs(i.duration_s - 7.0) < 0.05
    y, _ = audio.decode(path, SR)
    assert abs(len(y) / SR - i.duration_s) < 1e-3


def test_downmix_is_the_channel_mean(tmp_path):
    t = np.arange(SR) / SR
    left = 0.5 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "st.wav"
    sf.write(path, np.stack([left, -left], axis=1).astype(np.float32), SR, subtype="FLOAT")
    y, info = audio.decode(path, SR)
    assert info.channels == 2
    assert np.abs(y).max() < 1e-6  # L + R cancel


@pytest.mark.parametrize("native_hz", [44100, 48000, 22050, 16000])
def test_window_decode_equals_a_slice_of_the_full_decode(tmp_path, native_hz):
    path = tmp_path / f"x{native_hz}.flac"
    sf.write(path, synth("noise", 9.0, native_hz, seed=5), native_hz)
    full, _ = audio.decode(path, SR)
    for start_s, dur in [(0.0, 1.0), (1.3, 2.0), (4.77, 3.1), (8.5, 5.0)]:
        win, _ = audio.decode(path, SR, start_s=start_s, duration_s=dur)
        a = int(round(start_s * SR))
        ref = full[a:a + int(round(dur * SR))]
        assert win.shape == ref.shape
        # soxr's edge transient stays inside the 50 ms margin: only float rounding remains
        np.testing.assert_allclose(win, ref, atol=2e-5)


def test_mp3_window_decode_equals_a_slice_of_the_full_decode(mp3):
    full, _ = audio.decode(mp3, SR)
    win, _ = audio.decode(mp3, SR, start_s=2.5, duration_s=1.5)
    a = int(2.5 * SR)
    np.testing.assert_allclose(win, full[a:a + len(win)], atol=2e-5)


def test_lossless_formats_decode_alike(tmp_path):
    y = synth("chord", 3.0, 44100, seed=4)
    for ext in ("wav", "flac"):
        sf.write(tmp_path / f"a.{ext}", y, 44100, subtype="PCM_16")
    wav, _ = audio.decode(tmp_path / "a.wav", SR)
    flac, _ = audio.decode(tmp_path / "a.flac", SR)
    # libsndfile's float <-> 16-bit scaling differs between its WAV and FLAC codecs by about
    # one least significant bit (3e-5)
    np.testing.assert_allclose(wav, flac, atol=1e-4)
    sf.write(tmp_path / "a.ogg", y, 44100)
    ogg, info = audio.decode(tmp_path / "a.ogg", SR)
    assert info.format == "OGG" and abs(len(ogg) - len(wav)) <= 1


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_m4a_is_decoded_by_ffmpeg_with_exact_windows(tmp_path):
    sf.write(tmp_path / "a.wav", synth("chord", 12.0, 44100, seed=6), 44100)
    m4a = tmp_path / "a b ü.m4a"
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i",
                    str(tmp_path / "a.wav"), "-c:a", "aac", str(m4a)], check=True)
    i = audio.info(m4a)
    assert i.decoder == "pyav" and i.seekable and i.format == "M4A"
    y, _ = audio.decode(m4a, SR)
    ref, _ = audio.decode(tmp_path / "a.wav", SR)
    assert abs(len(y) - len(ref)) < 0.1 * SR  # AAC may add priming samples
    win, _ = audio.decode(m4a, SR, start_s=7.25, duration_s=2.0)
    a = int(7.25 * SR)
    np.testing.assert_allclose(win, y[a:a + len(win)], atol=1e-4)  # AAC noise substitution
    patches, starts, dur = audio.load_patches(m4a, CARD, 1)
    assert patches.shape == (1, P, 96) and np.isfinite(patches).all()


# ------------------------------------------------------------------ patches


def test_patch_starts_all_and_spread():
    np.testing.assert_array_equal(audio.patch_starts(1000, P, 0), [0, 187, 374, 561, 748])
    # None is the default k everywhere (from the CLI down to here), 0 is every patch
    many = 187 * (audio.DEFAULT_PATCHES + 10)
    assert len(audio.patch_starts(many, P, None)) == audio.DEFAULT_PATCHES
    assert len(audio.patch_starts(many, P, 0)) == audio.DEFAULT_PATCHES + 10
    three = audio.patch_starts(1000, P, 3)
    np.testing.assert_array_equal(three, [0, 406, 813])  # first is the intro, last ends the track
    assert three[-1] + P == 1000
    assert list(audio.patch_starts(1000, P, 1)) == [(1000 - P) // 2]
    assert len(audio.patch_starts(1000, P, 50)) == 5  # never more than fit without overlap
    for n_frames in range(P, 3000, 97):
        for k in (2, 3, 4, 8, 16, 32):
            s = audio.patch_starts(n_frames, P, k)
            assert s[0] == 0 and s[-1] == n_frames - P or len(s) == 1
            assert np.all(np.diff(s) >= P)
    assert list(audio.patch_starts(100, P, 4)) == [0]


def test_load_patches_are_slices_of_the_full_log_mel(tmp_path):
    path = write_mp3(tmp_path / "long.mp3", seconds=20.0, kind="beat", seed=7)
    full, _ = audio.decode(path, SR)
    mel = audio.log_mel(full, CARD)
    n_frames = 1 + len(full) // HOP
    for k, expected in [(None, n_frames // P), (4, 4), (100, n_frames // P)]:
        timings: dict = {}
        patches, starts_s, dur = audio.load_patches(path, CARD, k, timings=timings)
        assert patches.shape == (expected, P, 96) and patches.dtype == np.float32
        assert starts_s.shape == (expected,) and starts_s.dtype == np.float32
        assert dur == pytest.approx(len(full) / SR)
        assert set(timings) == {"decode", "resample", "mel"}
        starts = np.round(starts_s * SR / HOP).astype(int)
        for p, s in zip(patches, starts):
            np.testing.assert_allclose(p, mel[s:s + P], atol=5e-4)
    patches, starts_s, _ = audio.load_patches(path, CARD, 4)
    assert starts_s[0] == 0.0
    assert starts_s[-1] == pytest.approx((n_frames - P) * HOP / SR)


def test_short_track_is_padded_by_repeating_its_spectrogram(tmp_path):
    path = write_mp3(tmp_path / "short.mp3", seconds=1.0, kind="chirp", seed=1)
    patches, starts_s, dur = audio.load_patches(path, CARD, 8)
    assert patches.shape == (1, P, 96) and list(starts_s) == [0.0]
    assert dur == pytest.approx(1.0, abs=0.05)
    y, _ = audio.decode(path, SR)
    mel = audio.log_mel(y, CARD)
    n = mel.shape[0]
    np.testing.assert_allclose(patches[0, :n], mel, atol=1e-6)
    np.testing.assert_allclose(patches[0, n:2 * n], mel, atol=1e-6)
    zeros, _, _ = audio.load_patches(path, {**CARD, "pad_short": "zeros"}, 8)
    assert np.all(zeros[0, n:] == 0)


def test_silence_gives_finite_patches(tmp_path):
    path = write_mp3(tmp_path / "silence.mp3", seconds=8.0, kind="silence")
    patches, _, _ = audio.load_patches(path, CARD, None)
    assert patches.shape[0] == 2
    assert np.isfinite(patches).all() and patches.max() < 1e-3


def test_unicode_and_spaces_in_names(tmp_path):
    path = write_mp3(tmp_path / "Ünïcødé földer" / "東京 – a song (live).mp3", seconds=4.0)
    patches, _, _ = audio.load_patches(path, CARD, 2)
    assert patches.shape == (1, P, 96)


# ------------------------------------------------------------------ bad input


def _one_line(exc: pytest.ExceptionInfo, path: Path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and str(path) in msg
    assert exc.value.path == str(path)
    return msg


def test_non_audio_bytes_named_mp3(tmp_path):
    path = tmp_path / "not audio.mp3"
    path.write_bytes(np.random.default_rng(0).bytes(20000))
    for fn in (audio.info, lambda p: audio.decode(p, SR), lambda p: audio.load_patches(p, CARD)):
        with pytest.raises(UnsupportedFormatError) as exc:
            fn(path)
        assert "not an audio file" in _one_line(exc, path)


def test_text_file_named_mp3(tmp_path):
    path = tmp_path / "notes.mp3"
    path.write_text("these are not the droids\n" * 100)
    with pytest.raises(UnsupportedFormatError):
        audio.load_patches(path, CARD)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.mp3"
    path.touch()
    with pytest.raises(EmptyAudioError) as exc:
        audio.load_patches(path, CARD)
    assert "empty" in _one_line(exc, path)


def test_truncated_mp3(tmp_path):
    path = write_mp3(tmp_path / "full.mp3", seconds=20.0, kind="noise", seed=2)
    data = path.read_bytes()
    half = tmp_path / "half.mp3"
    half.write_bytes(data[: len(data) // 2])
    with pytest.raises(AudioError) as exc:
        audio.load_patches(half, CARD, 4)
    assert "truncated" in _one_line(exc, half)
    with pytest.raises(AudioError):
        audio.decode(half, SR)
    stub = tmp_path / "stub.mp3"  # the Xing header frame and little else
    stub.write_bytes(data[:600])
    with pytest.raises(AudioError) as exc:
        audio.load_patches(stub, CARD, 4)
    _one_line(exc, stub)


def test_missing_file_and_folder(tmp_path):
    missing = tmp_path / "no such folder" / "x.mp3"
    with pytest.raises(AudioError) as exc:
        audio.load_patches(missing, CARD)
    assert "no such file" in _one_line(exc, missing)
    with pytest.raises(AudioError) as exc:
        audio.decode(tmp_path, SR)
    assert "folder" in _one_line(exc, tmp_path)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads files whatever their mode")
def test_unreadable_file(mp3):
    mp3.chmod(0)
    try:
        with pytest.raises(AudioError) as exc:
            audio.load_patches(mp3, CARD)
        assert "permission denied" in _one_line(exc, mp3)
    finally:
        mp3.chmod(0o644)


def test_importing_the_front_end_loads_no_decoder():
    code = ("import sys, deejai.engine.audio, deejai.engine.analyse, deejai.ui_cli.analyse; "
            "heavy = {'soundfile', 'soxr', 'audioread', 'librosa', 'mutagen', 'ai_edge_litert',"
            " 'scipy'} & set(sys.modules); print(sorted(heavy)); sys.exit(1 if heavy else 0)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
