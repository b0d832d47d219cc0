"""The iOS decoder (ExtAudioFile through ctypes) against a fake of AudioToolbox.

There is no AudioToolbox off Apple systems, so :class:`FakeAudioToolbox` and
:class:`FakeCoreFoundation` stand in for the two libraries: each C function takes exactly the
ctypes arguments the real one gets (``byref`` pointers, the ``AudioStreamBasicDescription`` and
``AudioBufferList`` structures, a raw buffer address) and answers the way the documented
function does, decoding with FFmpeg and converting with soxr. What this proves: the engine's
side of the calls (structure layouts, sizes, the client format it asks for, seeking in file
frames, reading in chunks until the end, error codes) and the source's window logic. It does
not prove that Apple's functions behave as their documentation says: the code has never run on
an iPhone or a Mac (``docs/mobile.md``).
"""
from __future__ import annotations

import ctypes
import os
import struct

import numpy as np
import pytest

from deejai.engine import audio, decode
from deejai.engine.decode import ios, resample
from deejai.engine.errors import AudioError
from tests.audiogen import write_mp3


def _fcc(code: str) -> int:
    return struct.unpack(">I", code.encode())[0]


def _status(code: str) -> int:
    return struct.unpack(">i", code.encode())[0]


class _File:
    def __init__(self, path: str):
        with decode.open_source(path, backends=["pyav"]) as s:
            self.native = s.read(0, s.info.frames)
            self.rate, self.channels, self.frames = (s.info.sample_rate_hz, s.info.channels,
                                                     s.info.frames)
            self.format_id = _fcc("mp3 ") if s.info.format == "MP3" else _fcc("flac")
        self.client: np.ndarray | None = None
        self.client_rate = 0
        self.pos = 0  # client frame


def _c_function(restype, argtypes, impl):
    """A real C function pointer (libffi) that calls ``impl``: the code under test sets its
    own ``restype``/``argtypes`` on it and calls it as it would call the framework's."""
    fn = ctypes.CFUNCTYPE(restype, *argtypes)(impl)
    fn._keep = impl
    return fn


_OSStatus = ctypes.c_int32
_P = ctypes.c_void_p
_U32 = ctypes.c_uint32


class FakeAudioToolbox:
    """AudioToolbox's ExtAudioFile functions over FFmpeg + soxr. Each is a C function with the
    prototype of ``ExtendedAudioFile.h`` / ``AudioConverter.h``; arguments arrive the way C
    passes them (refs as addresses, pointers to the caller's structures)."""

    MAX_FRAMES_PER_READ = 3000  # ExtAudioFileRead may return fewer frames than asked

    def __init__(self, cf: "FakeCoreFoundation"):
        self.cf = cf
        self.files: dict[int, _File] = {}
        self.log: list[tuple] = []
        self.quality: int | None = None
        self.next_handle = 1000
        P = ctypes.POINTER
        self.ExtAudioFileOpenURL = _c_function(_OSStatus, [_P, P(_P)], self._open)
        self.ExtAudioFileGetProperty = _c_function(_OSStatus, [_P, _U32, P(_U32), _P], self._get)
        self.ExtAudioFileSetProperty = _c_function(_OSStatus, [_P, _U32, _U32, _P], self._set)
        self.ExtAudioFileSeek = _c_function(_OSStatus, [_P, ctypes.c_int64], self._seek)
        self.ExtAudioFileRead = _c_function(_OSStatus, [_P, P(_U32), P(ios.AudioBufferList)],
                                            self._read)
        self.ExtAudioFileDispose = _c_function(_OSStatus, [_P], self._dispose)
        self.AudioConverterSetProperty = _c_function(_OSStatus, [_P, _U32, _U32, _P],
                                                     self._converter)

    def _open(self, url, out_ref):
        path = self.cf.urls[url]
        self.log.append(("open", path))
        if not os.path.exists(path):
            return -43  # fnfErr
        try:
            f = _File(path)
        except Exception:  # noqa: BLE001 - not audio
            return _status("typ?")
        self.next_handle += 1
        self.files[self.next_handle] = f
        out_ref[0] = self.next_handle
        return 0

    def _get(self, ref, prop, io_size, out):
        f, size = self.files[ref], io_size[0]
        if prop == _fcc("ffmt"):
            assert size == 40
            value = ctypes.cast(out, ctypes.POINTER(ios.AudioStreamBasicDescription)).contents
            value.mSampleRate = float(f.rate)
            value.mFormatID = f.format_id
            value.mChannelsPerFrame = f.channels
            value.mFramesPerPacket = 1152
        elif prop == _fcc("#frm"):
            assert size == 8
            ctypes.cast(out, ctypes.POINTER(ctypes.c_int64))[0] = f.frames
        elif prop == _fcc("acnv"):
            assert size == ctypes.sizeof(ctypes.c_void_p)
            ctypes.cast(out, ctypes.POINTER(ctypes.c_void_p))[0] = 0xC0 if f.client_rate else None
        else:
            return _status("pty?")
        return 0

    def _set(self, ref, prop, size, data):
        f = self.files[ref]
        if prop == _fcc("cfmt"):
            assert size == 40
            fmt = ctypes.cast(data, ctypes.POINTER(ios.AudioStreamBasicDescription)).contents
            # what the engine must ask for: packed float32 mono linear PCM
            assert (fmt.mFormatID, fmt.mChannelsPerFrame, fmt.mBitsPerChannel) == (_fcc("lpcm"), 1, 32)
            assert fmt.mFormatFlags & 1 and fmt.mFormatFlags & 8  # IsFloat | IsPacked
            assert (fmt.mBytesPerFrame, fmt.mBytesPerPacket, fmt.mFramesPerPacket) == (4, 4, 1)
            f.client_rate = int(fmt.mSampleRate)
            f.client = resample.resample(f.native, f.rate, f.client_rate)  # the converter
            self.log.append(("client", f.client_rate))
        elif prop == _fcc("accf"):
            assert size == ctypes.sizeof(ctypes.c_void_p)
            assert ctypes.cast(data, ctypes.POINTER(ctypes.c_void_p))[0] is None
            self.log.append(("converter-config",))
        else:
            return _status("pty?")
        return 0

    def _converter(self, conv, prop, size, data):
        assert conv == 0xC0 and prop == _fcc("srcq") and size == 4
        self.quality = ctypes.cast(data, ctypes.POINTER(ctypes.c_uint32))[0]
        return 0

    def _seek(self, ref, file_frame):
        f = self.files[ref]
        assert file_frame >= 0
        client = file_frame * f.client_rate / f.rate
        assert client == int(client), "seeks land on whole client frames"
        f.pos = int(client)
        self.log.append(("seek", file_frame))
        return 0

    def _read(self, ref, io_frames, buffers):
        f = self.files[ref]
        abl = buffers.contents
        assert abl.mNumberBuffers == 1 and abl.mBuffers[0].mNumberChannels == 1
        buf = abl.mBuffers[0]
        assert buf.mDataByteSize >= 4 * io_frames[0]
        want = min(io_frames[0], self.MAX_FRAMES_PER_READ)
        chunk = np.ascontiguousarray(f.client[f.pos:f.pos + want], dtype=np.float32)
        ctypes.memmove(buf.mData, chunk.ctypes.data, chunk.nbytes)
        io_frames[0] = chunk.shape[0]
        buf.mDataByteSize = chunk.nbytes
        f.pos += chunk.shape[0]
        return 0

    def _dispose(self, ref):
        self.files.pop(ref)
        return 0


class FakeCoreFoundation:
    """``CFURLCreateFromFileSystemRepresentation`` and ``CFRelease`` (CFURL.h, CFBase.h)."""

    def __init__(self):
        self.urls: dict[int, str] = {}
        self.released: list[int] = []
        self.CFURLCreateFromFileSystemRepresentation = _c_function(
            ctypes.c_void_p, [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_long, ctypes.c_bool],
            self._url)
        self.CFRelease = _c_function(None, [ctypes.c_void_p], self.released.append)

    def _url(self, allocator, raw, length, is_dir):
        assert allocator is None and is_dir is False and len(raw) == length
        handle = 0x5000 + len(self.urls)
        self.urls[handle] = raw.decode()
        return handle


@pytest.fixture
def toolbox():
    cf = FakeCoreFoundation()
    at = FakeAudioToolbox(cf)
    return ios.AudioToolbox(at, cf)


def test_reads_windows_converted_to_the_client_rate(toolbox, tmp_path):
    mp3 = write_mp3(tmp_path / "a.mp3", seconds=12.0, kind="chirp", seed=3)
    source = ios.IOSSource(str(mp3), toolbox, 16000)
    info = source.info
    assert (info.decoder, info.format, info.sample_rate_hz, info.channels) == ("ios", "MP3", 16000, 2)
    f = next(iter(toolbox.at.files.values()))
    assert info.frames == round(f.frames * 16000 / f.rate)
    assert toolbox.at.quality == ios.kAudioConverterQuality_Max
    assert ("converter-config",) in toolbox.at.log
    for a in (0, 5, 7999, 8000, 100_000, info.frames - 1000):
        np.testing.assert_array_equal(source.read(a, a + 20_000), f.client[a:a + 20_000])
    seeks = [e[1] for e in toolbox.at.log if e[0] == "seek"]
    assert seeks and all(s % (f.rate // np.gcd(f.rate, 16000)) == 0 for s in seeks)
    source.close()
    assert not toolbox.at.files and len(toolbox.cf.released) == 1  # disposed, URL released


def test_without_a_client_rate_the_file_rate_is_kept(toolbox, tmp_path):
    mp3 = write_mp3(tmp_path / "a.mp3", seconds=3.0, sample_rate_hz=22050)
    source = ios.IOSSource(str(mp3), toolbox)
    assert source.info.sample_rate_hz == 22050 and toolbox.at.quality is None
    with decode.open_source(mp3, backends=["pyav"]) as ref:
        np.testing.assert_allclose(source.read(1000, 9000), ref.read(1000, 9000), atol=1e-6)


def test_open_errors(toolbox, tmp_path):
    junk = tmp_path / "junk.mp3"
    junk.write_bytes(b"\x00" * 4000)
    with pytest.raises(decode.NotMine, match="'typ\\?'"):
        ios.IOSSource(str(junk), toolbox, 16000)
    with pytest.raises(AudioError, match="no such file"):
        ios.IOSSource(str(tmp_path / "missing.mp3"), toolbox, 16000)


def test_osstatus_text():
    assert ios.osstatus_text(_status("fmt?")) == "'fmt?'"
    assert ios.osstatus_text(-50) == "-50"
    assert ios.fourcc("lpcm") == 0x6C70636D


def test_structures_have_core_audio_layouts():
    assert ctypes.sizeof(ios.AudioStreamBasicDescription) == 40
    assert ios.AudioStreamBasicDescription.mFormatID.offset == 8
    assert ctypes.sizeof(ios.AudioBufferList) == 24 if ctypes.sizeof(ctypes.c_void_p) == 8 else 16
    assert ios.AudioBufferList.mBuffers.offset == ctypes.sizeof(ctypes.c_void_p)


def test_ios_backend_is_skipped_off_apple_systems(tmp_path):
    mp3 = write_mp3(tmp_path / "a.mp3", seconds=2.0)
    with decode.open_source(mp3, backends=["ios", "pyav"]) as s:
        assert s.info.decoder == "pyav"
    assert "ios" not in decode.available_backends("ios")


def test_analysis_through_the_ios_source_needs_no_resampler(toolbox, tmp_path, monkeypatch):
    """open_source hands the model's rate to ExtAudioFile: the reader does not resample, and
    the vectors are the desktop's."""
    from deejai.engine.analyse import analyse
    from deejai.engine.model import load_model

    mp3 = write_mp3(tmp_path / "a.mp3", seconds=15.0, kind="beat", seed=2)
    model = load_model()
    desktop = analyse(mp3, model)
    monkeypatch.setattr(ios, "_toolbox", toolbox)
    monkeypatch.setattr(ios, "check_available", lambda: None)
    monkeypatch.setenv("DEEJAI_DECODERS", "ios")

    def no_resampling(*args):
        raise AssertionError("the reader resampled what ExtAudioFile already converted")

    monkeypatch.setattr(audio, "_resample", no_resampling)
    with audio.open_reader(mp3, 16000) as reader:
        assert reader.info.decoder == "ios" and reader.info.sample_rate_hz == 16000
    phone = analyse(mp3, model)
    model.close()
    assert phone.audio_hash == desktop.audio_hash  # MP3: the bytes between the tags
    v, w = phone.vector, desktop.vector
    assert float(v @ w) > 0.9999
