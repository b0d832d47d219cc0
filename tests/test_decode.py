"""The decoder layer: every backend on real files, sample-exact MP3 windows, the resamplers."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from deejai.engine import audio, decode
from deejai.engine.decode import mpeg, resample
from deejai.engine.errors import AudioError, ConfigError, UnsupportedFormatError
from tests.audiogen import synth, write_mp3

FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg (the program) not installed")


def _ffmpeg(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), *args,
                    str(dst)], check=True)
    return dst


def _wav(path: Path, seconds: float, rate: int = 44100, kind: str = "chord", seed: int = 0,
         channels: int = 2) -> Path:
    x = synth(kind, seconds, rate, seed)
    sf.write(path, x if channels == 2 else x[:, 0], rate, subtype="PCM_16")
    return path


def _windows_equal_full_decode(source, positions, length, atol=0.0):
    full = source.read(0, source.info.frames)
    assert full.shape[0] == source.info.frames
    for a in positions:
        w = source.read(a, a + length)
        ref = full[a:a + length]
        assert w.shape == ref.shape, (a, w.shape, ref.shape)
        np.testing.assert_allclose(w, ref, atol=atol, err_msg=f"window at sample {a}")
    return full


# ------------------------------------------------------------------------- MP3 by frame index


@needs_ffmpeg
@pytest.mark.parametrize("encoding", [
    ("-b:a", "32k"),               # low CBR: the bit reservoir spans the most frames
    ("-q:a", "4"),                 # LAME VBR (a Xing/LAME header with the gapless delay)
    ("-b:a", "320k"),
    ("-ar", "22050", "-b:a", "48k"),  # MPEG-2: 576 samples per frame
    ("-ac", "1", "-b:a", "64k"),   # mono
], ids=["cbr32", "vbr", "cbr320", "mpeg2", "mono"])
def test_mp3_windows_are_sample_exact_at_any_position(tmp_path, encoding):
    src = _wav(tmp_path / "a.wav", 20.0, kind="noise", seed=3)
    mp3 = _ffmpeg(src, tmp_path / "a.mp3", "-c:a", "libmp3lame", *encoding)
    with decode.open_source(mp3, backends=["pyav"]) as s:
        assert s.info.decoder == "pyav" and s.info.format == "MP3" and s.info.seekable
        rng = np.random.default_rng(0)
        positions = [0, 1, 1151, 1152, s.info.frames - 9000] + list(
            rng.integers(0, s.info.frames - 9000, 12))
        full = _windows_equal_full_decode(s, positions, 8000)  # bit for bit
    # the same gapless length and alignment as libsndfile (mpg123), to decoder precision
    with sf.SoundFile(mp3) as fh:
        ref = fh.read(dtype="float32", always_2d=True).mean(axis=1)
    assert full.shape == ref.shape
    np.testing.assert_allclose(full, ref, atol=1e-4)


def test_mp3_frame_index_reads_the_lame_header(tmp_path):
    path = write_mp3(tmp_path / "a.mp3", seconds=5.0, kind="chord")
    data = path.read_bytes()
    idx = mpeg.frame_index(data)
    with sf.SoundFile(path) as fh:
        assert idx.length == fh.frames and idx.sample_rate_hz == fh.samplerate
    assert idx.samples_per_frame == 1152 and idx.layer == 3 and idx.version == "1"
    assert idx.skip >= mpeg.DECODER_DELAY
    assert np.all(np.diff(idx.offsets) == idx.lengths[:-1])  # a contiguous chain
    assert 0 <= idx.main_data_begin.max() <= 511
    assert idx.preroll_frames(0) == 0 and idx.preroll_frames(10) >= 2


def test_mp3_frame_index_rejects_what_is_not_mpeg_audio(tmp_path):
    with pytest.raises(mpeg.NotMpegAudio):
        mpeg.frame_index(np.random.default_rng(1).integers(0, 255, 100000, dtype=np.uint8))
    with pytest.raises(mpeg.NotMpegAudio):
        mpeg.frame_index(b"ID3")


def test_damaged_mp3_frames_decode_as_silence_not_an_error(tmp_path):
    path = write_mp3(tmp_path / "a.mp3", seconds=12.0, kind="chord", seed=1)
    data = bytearray(path.read_bytes())
    idx = mpeg.frame_index(bytes(data))
    o = int(idx.offsets[200])  # overwrite the body of one frame in the middle
    data[o + 40:o + 300] = bytes(260)
    (tmp_path / "b.mp3").write_bytes(bytes(data))
    y, info = audio.decode(tmp_path / "b.mp3", 16000)
    assert info.decoder == "pyav" and np.isfinite(y).all()
    assert abs(len(y) - 12.0 * 16000) < 16000 * 0.05


def test_an_mp3_named_file_holding_wav_is_read_by_its_content(tmp_path):
    src = _wav(tmp_path / "a.wav", 3.0)
    fake = tmp_path / "actually a wav.mp3"
    fake.write_bytes(src.read_bytes())
    with decode.open_source(fake) as s:
        assert s.info.format == "WAV" and s.info.decoder == "pyav"


# ------------------------------------------------------------------------- other formats


@needs_ffmpeg
@pytest.mark.parametrize("ext,args", [
    ("flac", ("-c:a", "flac")),
    ("ogg", ("-c:a", "libvorbis", "-q:a", "4")),
    ("opus", ("-c:a", "libopus", "-b:a", "96k")),
    ("m4a", ("-c:a", "aac", "-b:a", "128k")),
    ("wav", ("-c:a", "pcm_s16le",)),
])
def test_container_formats_give_windows_equal_to_the_full_decode(tmp_path, ext, args):
    src = _wav(tmp_path / "src.wav", 14.0, kind="chirp", seed=2)
    f = _ffmpeg(src, tmp_path / f"a.{ext}", *args)
    # AAC's perceptual noise substitution draws from a generator whose state depends on where
    # decoding started: windows agree to well below a 16-bit step, not bit for bit
    atol = 1e-4 if ext == "m4a" else 1e-6
    with decode.open_source(f, backends=["pyav"]) as s:
        assert s.info.seekable and abs(s.info.duration_s - 14.0) < 0.1
        _windows_equal_full_decode(s, [0, 48000, 160000, s.info.frames - 40000], 30000,
                                   atol=atol)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_stdlib_wave_backend_reads_integer_pcm(tmp_path, width):
    rate = 22050
    x = synth("chord", 2.0, rate, seed=4)  # (n, 2) in [-0.5, 0.5]
    full_scale = 2 ** (8 * width - 1)
    ints = np.round(x * (full_scale - 1)).astype(np.int64)
    path = tmp_path / f"w{width}.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(width)
        w.setframerate(rate)
        if width == 1:
            raw = (ints + 128).astype(np.uint8).tobytes()
        elif width == 3:
            v = ints.reshape(-1) & 0xFFFFFF
            raw = np.stack([v & 0xFF, (v >> 8) & 0xFF, v >> 16], axis=1).astype(np.uint8).tobytes()
        else:
            raw = ints.astype(f"<i{width}").tobytes()
        w.writeframes(raw)
    with decode.open_source(path, backends=["wave"]) as s:
        assert (s.info.decoder, s.info.sample_rate_hz, s.info.frames) == ("wave", rate, x.shape[0])
        y = s.read(1000, 5000)
    np.testing.assert_allclose(y, x[1000:5000].mean(axis=1), atol=2.0 / full_scale + 1e-7)


def test_backend_order_and_its_override(monkeypatch, tmp_path):
    assert decode.backend_order("linux")[0] == "pyav"
    assert decode.backend_order("android")[0] == "android"
    assert decode.backend_order("ios")[0] == "ios"
    monkeypatch.setenv("DEEJAI_DECODERS", "wave")
    assert decode.backend_order("linux") == ("wave",)
    path = write_mp3(tmp_path / "a.mp3", seconds=2.0)
    with pytest.raises(UnsupportedFormatError) as exc:
        decode.open_source(path)
    assert "not a PCM WAV file" in str(exc.value)
    monkeypatch.setenv("DEEJAI_DECODERS", "pyav,nonesuch")
    with pytest.raises(ConfigError):
        decode.backend_order()


def test_every_backend_reports_garbage_in_one_line(tmp_path):
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(np.random.default_rng(5).integers(0, 255, 50000, dtype=np.uint8).tobytes())
    with pytest.raises(UnsupportedFormatError) as exc:
        decode.open_source(junk)
    assert "\n" not in str(exc.value) and str(junk) in str(exc.value)
    with pytest.raises(AudioError):
        decode.open_source(tmp_path / "missing.mp3")


def test_content_digest_ignores_tags_but_not_audio(tmp_path):
    f1 = _ffmpeg(_wav(tmp_path / "a.wav", 4.0, seed=1), tmp_path / "a.ogg", "-c:a", "libvorbis",
                 "-metadata", "title=one") if FFMPEG else None
    if f1 is None:
        pytest.skip("ffmpeg not installed")
    f2 = _ffmpeg(tmp_path / "a.wav", tmp_path / "b.ogg", "-c:a", "libvorbis", "-metadata",
                 "title=another title, longer")
    f3 = _ffmpeg(_wav(tmp_path / "c.wav", 4.0, seed=2), tmp_path / "c.ogg", "-c:a", "libvorbis")

    def digest(p):
        h = hashlib.blake2b(digest_size=16)
        with decode.open_source(p, backends=["pyav"]) as s:
            s.content_digest(h)
        return h.hexdigest()

    assert digest(f1) == digest(f2) != digest(f3)


# ------------------------------------------------------------------------- resampling


def test_numpy_resampler_matches_soxr_in_the_bands_musicnn_reads():
    pytest.importorskip("soxr")
    rate = 44100
    x = synth("noise", 6.0, rate, seed=7)[:, 0] + synth("chirp", 6.0, rate, seed=8)[:, 0]
    a = resample.resample(x, rate, 16000)
    b = resample.resample_numpy(x, rate, 16000)
    assert a.shape == b.shape == (resample.output_length(x.shape[0], rate, 16000),)
    card = {"sample_rate_hz": 16000, "n_fft": 512, "hop_length": 256, "n_mels": 96,
            "patch_frames": 187}
    diff = np.abs(audio.log_mel(a, card) - audio.log_mel(b, card))[8:-8]
    assert diff[:, :90].max() < 1e-3  # the top bands (7.3-8 kHz) see the filters' edges
    assert diff[:, 90:].max() < 0.15  # (0.34 with a 24-zero-crossing filter cut at 0.95)
    assert resample.resample_numpy(x[:1000], rate, rate) is not None


@pytest.mark.parametrize("sr_in,sr_out", [(48000, 16000), (22050, 16000), (8000, 16000),
                                           (44100, 22050)])
def test_numpy_resampler_keeps_a_tone_at_its_place(sr_in, sr_out):
    t = np.arange(int(1.5 * sr_in)) / sr_in
    x = np.sin(2 * np.pi * 1000.0 * t).astype(np.float32)
    y = resample.resample_numpy(x, sr_in, sr_out)
    tt = np.arange(y.shape[0]) / sr_out
    ref = np.sin(2 * np.pi * 1000.0 * tt)
    mid = slice(sr_out // 10, -sr_out // 10)  # away from the edges
    np.testing.assert_allclose(y[mid], ref[mid], atol=2e-3)
