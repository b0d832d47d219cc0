"""The Android decoder, as far as it runs off a phone.

What runs here, for real:

* ``PcmWindow.java`` (the helper's buffer, mono-mix and range logic) compiled with ``javac`` and
  driven on a desktop JVM through pyjnius;
* ``Decoder.java`` type-checked by ``javac`` against signature stubs of ``android.media``, and
  its public methods compared (``javap``) with a desktop stand-in class of the same name that
  decodes PCM WAV with ``javax.sound`` (``tests/java/desktop_decoder``) — through that class
  the engine's pyjnius seam (:class:`JavaDecoder`) runs with the real pyjnius conversions
  (bytes -> ``byte[]``, lists -> ``int[]``/``long[]``, ``byte[]`` -> ``ByteArray.tostring``);
* the Python sources (:class:`AndroidMp3Source`, :class:`AndroidSource`) over a stand-in codec
  that decodes with FFmpeg (PyAV) and places its output buffers with the real ``PcmWindow``.

MediaExtractor and MediaCodec themselves cannot run here (no Android runtime): the APK's first
run is the test of those (``docs/mobile.md``).
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from deejai.engine import decode
from deejai.engine.decode import android
from deejai.engine.errors import AudioError
from tests.audiogen import synth, write_mp3

ROOT = Path(__file__).resolve().parents[1]
JAVA_SRC = ROOT / "ui_kivy" / "java" / "org" / "deejai"
STUBS = ROOT / "tests" / "java" / "android_stubs"
DESKTOP_DECODER = ROOT / "tests" / "java" / "desktop_decoder" / "org" / "deejai" / "Decoder.java"
FFMPEG = shutil.which("ffmpeg")
needs_ffmpeg = pytest.mark.skipif(FFMPEG is None, reason="ffmpeg (the program) not installed")


def _javac() -> str | None:
    return shutil.which("javac")


@pytest.fixture(scope="session")
def java_classes(tmp_path_factory) -> dict[str, Path]:
    """The helper compiled twice: for the device (against the stubs, Java 8 bytecode as
    Android's d8 takes) and for the desktop JVM (PcmWindow + the javax.sound stand-in)."""
    javac = _javac()
    if javac is None:
        pytest.skip("javac is not installed (Debian: default-jdk-headless)")
    root = tmp_path_factory.mktemp("java")
    device, desktop = root / "device", root / "desktop"
    stubs = sorted(str(p) for p in STUBS.rglob("*.java"))
    helper = sorted(str(p) for p in JAVA_SRC.glob("*.java"))
    for out, sources, release in ((device, stubs + helper, "8"),
                                  (desktop, [str(DESKTOP_DECODER), str(JAVA_SRC / "PcmWindow.java")],
                                   "11")):
        proc = subprocess.run([javac, "--release", release, "-Xlint:all", "-Werror", "-d",
                               str(out), *sources], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    return {"device": device, "desktop": desktop}


@pytest.fixture(scope="session")
def jnius(java_classes):
    """pyjnius on a desktop JVM whose class path holds the desktop build."""
    jnius_config = pytest.importorskip("jnius_config", reason="pyjnius is not installed")
    if "jnius" not in sys.modules:
        jnius_config.add_classpath(str(java_classes["desktop"]))
    try:
        import jnius as module
    except (ImportError, SystemError, OSError) as exc:  # pragma: no cover - no JVM
        pytest.skip(f"pyjnius cannot start a JVM: {exc}")
    return module


def _bytes(array) -> bytes:
    return array.tostring() if hasattr(array, "tostring") else bytes(array)


# --------------------------------------------------------------------------- PcmWindow.java


def _window(jnius, rate, start, length):
    return jnius.autoclass("org.deejai.PcmWindow")(rate, start, length)


def _buffer(jnius, x: np.ndarray):
    return jnius.autoclass("java.nio.ByteBuffer").wrap(np.ascontiguousarray(x).tobytes())


def _samples(window) -> np.ndarray:
    return np.frombuffer(_bytes(window.toBytes()), dtype="<f4")


def test_pcm_window_places_buffers_by_timestamp_and_drops_the_preroll(jnius):
    W = jnius.autoclass("org.deejai.PcmWindow")
    rate, start, length = 44100, 10_000, 3000
    mono = np.arange(20_000, dtype=np.float32) / 20_000  # stream sample i holds i / 20000
    w = _window(jnius, rate, start, length)
    kept = 0
    for at in range(6_000, 20_000, 1152):  # 1152-sample buffers from before the window
        chunk = mono[at:at + 1152]
        kept += w.write(_buffer(jnius, chunk), 0, chunk.nbytes, W.timeOf(at, rate), 1,
                        W.ENCODING_PCM_FLOAT)
        if w.isFull():
            break
    assert kept == length and w.count() == length and w.isFull()
    np.testing.assert_array_equal(_samples(w), mono[start:start + length])


def test_pcm_window_mixes_channels_and_scales_16_bit(jnius):
    W = jnius.autoclass("org.deejai.PcmWindow")
    rng = np.random.default_rng(0)
    x = rng.integers(-32768, 32767, size=(500, 3)).astype("<i2")  # 3 interleaved channels
    w = _window(jnius, 48000, 0, 500)
    w.write(_buffer(jnius, x), 0, x.nbytes, 0, 3, W.ENCODING_PCM_16BIT)
    expected = (x.astype(np.float32) / 32768).sum(axis=1, dtype=np.float32) * np.float32(1 / 3)
    np.testing.assert_allclose(_samples(w), expected, atol=1e-7)
    # stereo float: the channel mean, exactly as the desktop decoder's numpy mean
    y = rng.standard_normal((700, 2)).astype("<f4")
    w = _window(jnius, 48000, 100, 400)
    w.write(_buffer(jnius, y), 0, y.nbytes, W.timeOf(50, 48000), 2, W.ENCODING_PCM_FLOAT)
    np.testing.assert_array_equal(_samples(w), y.mean(axis=1, dtype=np.float32)[50:450])


def test_pcm_window_honours_offset_gaps_and_the_end(jnius):
    W = jnius.autoclass("org.deejai.PcmWindow")
    w = _window(jnius, 16000, 0, 1000)
    x = np.ones(300, dtype="<f4")
    junk = np.full(10, 7.0, dtype="<f4")
    payload = np.concatenate([junk, x])  # the PCM starts 40 bytes into the buffer
    w.write(_buffer(jnius, payload), junk.nbytes, x.nbytes, 0, 1, W.ENCODING_PCM_FLOAT)
    w.write(_buffer(jnius, x), 0, x.nbytes, W.timeOf(500, 16000), 1, W.ENCODING_PCM_FLOAT)
    assert w.count() == 800 and not w.isFull()
    y = _samples(w)
    assert (y[:300] == 1).all() and (y[300:500] == 0).all() and (y[500:800] == 1).all()
    # a buffer past the end: nothing kept, the window is complete
    assert w.write(_buffer(jnius, x), 0, x.nbytes, W.timeOf(1000, 16000), 1,
                   W.ENCODING_PCM_FLOAT) == 0
    assert w.isFull() and w.count() == 800


def test_pcm_window_timestamps_round_trip_at_every_rate(jnius):
    W = jnius.autoclass("org.deejai.PcmWindow")
    for rate in (8000, 11025, 22050, 44100, 48000, 96000, 192000):
        w = _window(jnius, rate, 0, 1)
        for sample in (0, 1, 1151, 1152, 10 ** 6 + 3, 3 * 10 ** 8 + 7):
            assert w.sampleAt(W.timeOf(sample, rate)) == sample, (rate, sample)


def test_pcm_window_rejects_what_it_cannot_read(jnius):
    W = jnius.autoclass("org.deejai.PcmWindow")
    w = _window(jnius, 16000, 0, 10)
    x = np.zeros(10, dtype="<f4")
    with pytest.raises(jnius.JavaException, match="unsupported PCM encoding"):
        w.write(_buffer(jnius, x), 0, x.nbytes, 0, 1, 3)  # ENCODING_PCM_8BIT
    with pytest.raises(jnius.JavaException, match="sample rate"):
        W(0, 0, 10)


# --------------------------------------------------------------------------- Decoder.java


def _public_api(javap: str, classes: Path) -> list[str]:
    out = subprocess.run([javap, "-public", "-cp", str(classes), "org.deejai.Decoder"],
                         capture_output=True, text=True, check=True).stdout
    return sorted(line.strip() for line in out.splitlines() if line.strip().startswith("public "))


def test_device_helper_compiles_and_the_desktop_stand_in_has_its_api(java_classes):
    javap = shutil.which("javap")
    assert (java_classes["device"] / "org" / "deejai" / "Decoder.class").is_file()
    device = _public_api(javap, java_classes["device"])
    assert any("decodeRange(long, long, long)" in line for line in device)
    assert _public_api(javap, java_classes["desktop"]) == device


def _write_wav(path: Path, seconds: float, rate: int = 22050, channels: int = 2) -> np.ndarray:
    x = synth("chord", seconds, rate, seed=4)[:, :channels]
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(channels)
        fh.setsampwidth(2)
        fh.setframerate(rate)
        fh.writeframes(pcm.tobytes())
    return pcm


def test_java_seam_reads_windows_through_pyjnius(jnius, tmp_path):
    """JavaDecoder + AndroidSource over the desktop stand-in (real pyjnius conversions): every
    window equals the same range read by the standard library's WAV reader, also where the
    stand-in's "sync" seek lands thousands of samples early."""
    path = tmp_path / "a.wav"
    _write_wav(path, 4.0)
    source = android.open_with(str(path), android.JavaDecoder)
    assert isinstance(source, android.AndroidSource)
    assert source.info.decoder == "android" and source.info.format == "WAV"
    assert source.decoder.codec_name == "desktop.wav.decoder"
    with decode.open_source(path, backends=["wave"]) as ref:
        assert source.info.frames == ref.info.frames and source.info.sample_rate_hz == 22050
        for a in (0, 1, 4095, 4096, 30_001, ref.info.frames - 5000):
            np.testing.assert_array_equal(source.read(a, a + 5000), ref.read(a, a + 5000))
    source.close()


def test_java_seam_decodes_packets_in_one_call(jnius, tmp_path):
    path = tmp_path / "a.wav"
    pcm = _write_wav(path, 1.0, rate=16000, channels=1)
    dec = android.JavaDecoder(str(path))
    sizes = [640] * 10  # ten 320-sample packets, back to back
    payload = pcm[:3200].tobytes()
    pts = [android.time_us(320 * i + 7, 16000) for i in range(10)]  # stamped 7 samples late
    y = dec.decode_packets(payload, sizes, pts, 100, 2000)
    expected = pcm[93:1993, 0].astype(np.float32) / 32768
    np.testing.assert_array_equal(y, expected)
    dec.close()


def test_java_seam_reports_a_file_the_helper_cannot_read(jnius, tmp_path):
    bad = tmp_path / "x.wav"
    bad.write_bytes(b"RIFF....WAVEjunk" * 10)
    with pytest.raises(decode.NotMine, match="not a WAV file|IOException"):
        android.JavaDecoder(str(bad))


# --------------------------------------------------------------------------- the sources


_MIMES = {"mp3": "audio/mpeg", "mp3float": "audio/mpeg", "flac": "audio/flac",
          "vorbis": "audio/vorbis", "opus": "audio/opus", "aac": "audio/mp4a-latm"}


class FFmpegCodec:
    """A stand-in for ``org.deejai.Decoder``: FFmpeg (PyAV) decodes, the real ``PcmWindow``
    (through pyjnius) places the output buffers, as on a phone.

    ``decode_packets`` feeds one packet per ``decode`` and stamps each output buffer with its
    input packet's time (MediaCodec's software MP3 decoder does the same); ``decode_range``
    seeks the container backwards to a key frame before ``start - preroll`` and stamps output by
    the frames' timestamps. ``pcm16=True`` hands 16-bit buffers over, as a decoder that ignores
    ``KEY_PCM_ENCODING`` would.
    """

    def __init__(self, path: str, jnius, pcm16: bool = False):
        import av

        self.av, self.path, self.pcm16 = av, path, pcm16
        self._W = jnius.autoclass("org.deejai.PcmWindow")
        self._ByteBuffer = jnius.autoclass("java.nio.ByteBuffer")
        self.container = av.open(path)
        st = self.container.streams.audio[0]
        self.mime = _MIMES.get(st.codec_context.name, "audio/" + st.codec_context.name)
        self.sample_rate_hz = int(st.codec_context.sample_rate)
        self.channels = int(st.codec_context.channels)
        self.duration_us = int(Fraction(st.duration * st.time_base) * 1_000_000) if st.duration else 0
        self.encoder_delay = self.encoder_padding = 0  # FFmpeg's timeline is already trimmed
        self.codec_name = "ffmpeg." + st.codec_context.name
        self.calls = []

    def _write(self, window, frame, pts_us):
        x = frame.to_ndarray()
        if frame.format.is_planar:
            x = x.T  # (samples, channels): interleave
        else:
            x = x.reshape(-1, self.channels)
        if x.dtype.kind == "i":  # FLAC decodes to integers: as float, the way the desktop reads them
            x = x.astype(np.float32) / np.float32(2 ** (8 * x.dtype.itemsize - 1))
        if self.pcm16:
            data = np.clip(np.round(x.astype(np.float32) * 32768), -32768, 32767).astype("<i2")
            enc = self._W.ENCODING_PCM_16BIT
        else:
            data = x.astype("<f4")
            enc = self._W.ENCODING_PCM_FLOAT
        raw = np.ascontiguousarray(data).tobytes()
        window.write(self._ByteBuffer.wrap(raw), 0, len(raw), pts_us, self.channels, enc)

    def _result(self, window) -> np.ndarray:
        return np.frombuffer(_bytes(window.toBytes()), dtype="<f4").astype(np.float32)

    def decode_packets(self, data, sizes, pts_us, start, stop):
        self.calls.append(("packets", len(sizes), start, stop))
        window = self._W(self.sample_rate_hz, start, stop - start)
        ctx = self.av.CodecContext.create("mp3float", "r")
        at = 0
        for size, pts in zip(sizes, pts_us):
            packet = self.av.Packet(bytes(data[at:at + size]))
            at += size
            done = 0
            for frame in ctx.decode(packet):
                self._write(window, frame, pts + done * 1_000_000 // self.sample_rate_hz)
                done += frame.samples
            if window.isFull():
                break
        return self._result(window)

    def decode_range(self, start, stop, preroll_us):
        self.calls.append(("range", start, stop))
        window = self._W(self.sample_rate_hz, start, stop - start)
        st = self.container.streams.audio[0]
        target_us = max(0, android.time_us(start, self.sample_rate_hz) - preroll_us)
        self.container.seek(int(target_us / 1_000_000 / st.time_base), stream=st, backward=True)
        st.codec_context.flush_buffers()
        for frame in self.container.decode(st):
            if frame.pts is None:
                continue
            self._write(window, frame, int(round(float(frame.pts * st.time_base) * 1_000_000)))
            if window.isFull():
                break
        return self._result(window)

    def close(self):
        self.container.close()


def _ffmpeg(src: Path, dst: Path, *args: str) -> Path:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), *args,
                    str(dst)], check=True)
    return dst


@needs_ffmpeg
@pytest.mark.parametrize("encoding", [
    ("-b:a", "32k"), ("-q:a", "4"), ("-ar", "22050", "-b:a", "48k"), ("-ac", "1", "-b:a", "64k"),
], ids=["cbr32", "vbr", "mpeg2", "mono"])
def test_mp3_windows_equal_the_desktop_decoders(jnius, tmp_path, encoding):
    """Frames cut by the engine's own index, fed to the codec with their timestamps: every
    window is the desktop's (FFmpeg, frame by frame), bit for bit with float output."""
    wav = tmp_path / "a.wav"
    _write_wav(wav, 15.0, rate=44100)
    mp3 = _ffmpeg(wav, tmp_path / "a.mp3", "-c:a", "libmp3lame", *encoding)
    source = android.open_with(str(mp3), lambda p: FFmpegCodec(p, jnius))
    assert isinstance(source, android.AndroidMp3Source)
    with decode.open_source(mp3, backends=["pyav"]) as ref:
        assert (source.info.frames, source.info.sample_rate_hz, source.info.channels) == (
            ref.info.frames, ref.info.sample_rate_hz, ref.info.channels)
        assert source.info.format == "MP3" and source.info.decoder == "android"
        rng = np.random.default_rng(1)
        for a in [0, 1, 1151, 1152, ref.info.frames - 9000, *rng.integers(0, ref.info.frames - 9000, 6)]:
            np.testing.assert_array_equal(source.read(a, a + 8000), ref.read(a, a + 8000),
                                          err_msg=f"window at {a}")
    # one decode call per window, and it cut only the frames around the window
    kinds = {c[0] for c in source.decoder.calls}
    assert kinds == {"packets"}
    assert all(n < 20 for _, n, _, _ in source.decoder.calls)
    source.close()


@needs_ffmpeg
def test_mp3_windows_with_16_bit_output(jnius, tmp_path):
    mp3 = write_mp3(tmp_path / "a.mp3", seconds=8.0, kind="noise", seed=2)
    source = android.open_with(str(mp3), lambda p: FFmpegCodec(p, jnius, pcm16=True))
    with decode.open_source(mp3, backends=["pyav"]) as ref:
        for a in (0, 50_000, 200_000):
            np.testing.assert_allclose(source.read(a, a + 4000), ref.read(a, a + 4000),
                                       atol=1.0 / 32768)
    source.close()


@needs_ffmpeg
@pytest.mark.parametrize("fmt,args", [
    ("flac", ("-c:a", "flac")),
    ("ogg", ("-c:a", "libvorbis", "-q:a", "4")),
    ("m4a", ("-c:a", "aac", "-b:a", "128k")),
])
def test_other_formats_seek_the_extractor_with_a_preroll(jnius, tmp_path, fmt, args):
    wav = tmp_path / "a.wav"
    _write_wav(wav, 12.0, rate=44100)
    path = _ffmpeg(wav, tmp_path / f"a.{fmt}", *args)
    source = android.open_with(str(path), lambda p: FFmpegCodec(p, jnius))
    assert isinstance(source, android.AndroidSource) and source.info.seekable
    with decode.open_source(path, backends=["pyav"]) as ref:
        assert abs(source.info.frames - ref.info.frames) <= 2048
        for a in (1000, 100_000, 300_000):
            np.testing.assert_allclose(source.read(a, a + 8000), ref.read(a, a + 8000), atol=1e-4,
                                       err_msg=f"{fmt} window at {a}")
    assert all(c[0] == "range" for c in source.decoder.calls)
    source.close()


class _FailingCodec(FFmpegCodec):
    def decode_packets(self, *args):
        raise RuntimeError("java.lang.IllegalStateException: codec error 0x80001001")


@needs_ffmpeg
def test_a_codec_failure_is_one_line_about_the_file(jnius, tmp_path):
    mp3 = write_mp3(tmp_path / "a.mp3", seconds=4.0)
    source = android.open_with(str(mp3), lambda p: _FailingCodec(p, jnius))
    with pytest.raises(AudioError) as err:
        source.read(0, 1000)
    assert str(mp3) in str(err.value) and "IllegalStateException" in str(err.value)
    assert "\n" not in str(err.value)


def test_android_backend_is_skipped_where_pyjnius_is_missing(tmp_path, monkeypatch):
    """Off Android (no pyjnius), open_source goes on to the next backend of the phone order."""
    import importlib.util

    if importlib.util.find_spec("jnius") is not None:
        monkeypatch.setitem(sys.modules, "jnius", None)  # as on a machine without pyjnius
    path = tmp_path / "a.wav"
    _write_wav(path, 1.0)
    with decode.open_source(path, backends=["android", "wave"]) as s:
        assert s.info.decoder == "wave"
    assert "android" not in decode.available_backends("android")


@needs_ffmpeg
def test_analysis_through_the_android_sources_matches_the_desktop(jnius, tmp_path, monkeypatch):
    """A whole analysis (patches, resampling to 16 kHz, the model) of an MP3 through the
    Android source gives the desktop's vectors and audio hash."""
    from deejai.engine.analyse import analyse
    from deejai.engine.model import load_model

    mp3 = write_mp3(tmp_path / "a.mp3", seconds=20.0, kind="beat", seed=5,
                    tags={"artist": "A", "title": "T"})
    model = load_model()
    desktop = analyse(mp3, model)
    made: list[FFmpegCodec] = []

    def codec(path):
        made.append(FFmpegCodec(path, jnius))
        return made[-1]

    monkeypatch.setattr(android, "open_file", lambda p: android.open_with(p, codec))
    monkeypatch.setitem(decode.BACKENDS, "android", "deejai.engine.decode.android:open_file")
    monkeypatch.setattr(android, "check_available", lambda: None)
    monkeypatch.setenv("DEEJAI_DECODERS", "android")
    phone = analyse(mp3, model)
    model.close()
    assert made and all(kind == "packets" for c in made for kind, *_ in c.calls)
    assert sum(len(c.calls) for c in made) >= 3  # one decode per patch window
    assert phone.audio_hash == desktop.audio_hash
    v, w = phone.vector, desktop.vector
    assert float(v @ w / np.linalg.norm(v) / np.linalg.norm(w)) > 0.99999


def test_preload_reports_each_class(jnius):
    """On the desktop JVM the helper classes load and the LiteRT classes (only in the APK) are
    reported, not raised."""
    result = android.preload_classes(jnius)
    assert result["org.deejai.Decoder"] == "ok" and result["org.deejai.PcmWindow"] == "ok"
    assert result["org.tensorflow.lite.Interpreter"] != "ok"
