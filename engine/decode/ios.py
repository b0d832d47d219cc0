"""iOS's own decoders: Extended Audio File Services (AudioToolbox) through :mod:`ctypes`.

``ExtAudioFile`` opens any file Core Audio reads (MP3, AAC/M4A, ALAC, FLAC, WAV, AIFF, CAF...)
and converts it to a *client format* the caller sets. This backend asks for what the model
wants — mono float32, packed, at the model's sample rate — so iOS decodes, mixes down and
resamples in one step (Apple's converter at its highest quality), and the source reports that
rate as its ``info.sample_rate_hz``: :class:`deejai.engine.audio.AudioReader` then does not
resample at all.

Seeks: ``ExtAudioFileSeek`` takes a position in the *file's* sample frames (Apple Technical
Q&A QA1609) and returns samples "from precisely this location, even if it is located in the
middle of a packet". A window ``[start, stop)`` of client frames is read from an aligned file
position (a multiple of ``file_rate / gcd``, which maps to a whole client frame) ``MARGIN_S``
early, so the converter's edge transient after a seek falls outside the samples kept.

The C calls sit behind :class:`AudioToolbox` (the seam), written against the documented
functions and structures of ``ExtendedAudioFile.h``, ``CoreAudioTypes.h`` and ``CFURL.h``:
``ExtAudioFileOpenURL``, ``ExtAudioFileGetProperty``/``SetProperty``
(``kExtAudioFileProperty_FileDataFormat``, ``_FileLengthFrames``, ``_ClientDataFormat``,
``_AudioConverter``, ``_ConverterConfig``), ``ExtAudioFileSeek``, ``ExtAudioFileRead``,
``ExtAudioFileDispose``, ``AudioConverterSetProperty`` and
``CFURLCreateFromFileSystemRepresentation``/``CFRelease``. The tests
(``tests/test_ios_decoder.py``) run all of it against a fake of those two libraries that
decodes with FFmpeg and honours the same memory layout. **It has never run on an iPhone** (nor
on macOS, where the same code would work): ``docs/mobile.md`` lists the first checks.
"""
from __future__ import annotations

import ctypes
import math
import os
import struct
import sys
from ctypes import POINTER, Structure, byref, c_bool, c_double, c_int32, c_int64, c_long
from ctypes import c_uint32, c_void_p
from typing import Any

import numpy as np

from deejai.engine.decode import AudioInfo, NotMine, Source
from deejai.engine.errors import AudioError

__all__ = ["open_file", "IOSSource", "AudioToolbox", "AudioStreamBasicDescription",
           "AudioBufferList", "fourcc", "MARGIN_S"]

#: Seconds read before a window after a seek and thrown away (sample-rate converter settling).
MARGIN_S = 0.05

#: Client frames read per ``ExtAudioFileRead`` call.
READ_CHUNK_FRAMES = 1 << 15

AUDIOTOOLBOX = "/System/Library/Frameworks/AudioToolbox.framework/AudioToolbox"
COREFOUNDATION = "/System/Library/Frameworks/CoreFoundation.framework/CoreFoundation"


def fourcc(code: str) -> int:
    """A four-character code as Core Audio's 32-bit constant (``'ffmt'`` -> 0x66666d74)."""
    return struct.unpack(">I", code.encode("latin-1"))[0]


def osstatus_text(status: int) -> str:
    """An ``OSStatus`` as Apple prints it: ``'fmt?'`` when its four bytes are printable."""
    raw = struct.pack(">i", int(status))
    if all(32 <= b < 127 for b in raw):
        return f"'{raw.decode('latin-1')}'"
    return str(int(status))


# ExtendedAudioFile.h, AudioConverter.h, CoreAudioTypes.h
kExtAudioFileProperty_FileDataFormat = fourcc("ffmt")
kExtAudioFileProperty_ClientDataFormat = fourcc("cfmt")
kExtAudioFileProperty_FileLengthFrames = fourcc("#frm")
kExtAudioFileProperty_AudioConverter = fourcc("acnv")
kExtAudioFileProperty_ConverterConfig = fourcc("accf")
kAudioConverterSampleRateConverterQuality = fourcc("srcq")
kAudioConverterQuality_Max = 0x7F
kAudioFormatLinearPCM = fourcc("lpcm")
kAudioFormatFlagIsFloat = 1 << 0
kAudioFormatFlagIsPacked = 1 << 3
kCFAllocatorDefault = None
# AudioFile.h / MacErrors.h results that mean "not a file I read", not "damaged"
_NOT_MINE = {fourcc("typ?"), fourcc("fmt?"), fourcc("dta?"), fourcc("wht?"), fourcc("!dat")}
_PERMISSION = {fourcc("prm?"), -54}
_NOT_FOUND = {-43}

_FORMAT_NAMES = {"mp3 ": "MP3", ".mp3": "MP3", "aac ": "M4A", "aach": "M4A", "aacp": "M4A",
                 "alac": "M4A", "flac": "FLAC", "lpcm": "WAV", "opus": "OPUS", "ac-3": "AC3",
                 ".mp2": "MP3", ".mp1": "MP3"}


class AudioStreamBasicDescription(Structure):
    """``AudioStreamBasicDescription`` (CoreAudioTypes.h): 40 bytes."""

    _fields_ = [
        ("mSampleRate", c_double),
        ("mFormatID", c_uint32),
        ("mFormatFlags", c_uint32),
        ("mBytesPerPacket", c_uint32),
        ("mFramesPerPacket", c_uint32),
        ("mBytesPerFrame", c_uint32),
        ("mChannelsPerFrame", c_uint32),
        ("mBitsPerChannel", c_uint32),
        ("mReserved", c_uint32),
    ]


class AudioBuffer(Structure):
    """``AudioBuffer`` (CoreAudioTypes.h)."""

    _fields_ = [("mNumberChannels", c_uint32), ("mDataByteSize", c_uint32), ("mData", c_void_p)]


class AudioBufferList(Structure):
    """``AudioBufferList`` with one buffer (interleaved/mono client data)."""

    _fields_ = [("mNumberBuffers", c_uint32), ("mBuffers", AudioBuffer * 1)]


def mono_float_format(sample_rate_hz: float) -> AudioStreamBasicDescription:
    """The client format: packed native-endian float32, one channel, ``sample_rate_hz``."""
    return AudioStreamBasicDescription(
        mSampleRate=float(sample_rate_hz), mFormatID=kAudioFormatLinearPCM,
        mFormatFlags=kAudioFormatFlagIsFloat | kAudioFormatFlagIsPacked, mBytesPerPacket=4,
        mFramesPerPacket=1, mBytesPerFrame=4, mChannelsPerFrame=1, mBitsPerChannel=32,
        mReserved=0)


class ExtAudioFileError(Exception):
    """An ``OSStatus`` other than ``noErr`` (``status``) from ``call``."""

    def __init__(self, call: str, status: int):
        super().__init__(f"{call} failed (OSStatus {osstatus_text(status)})")
        self.call, self.status = call, int(status)


class AudioToolbox:
    """The seam: the C functions of AudioToolbox and CoreFoundation, typed, and nothing else.

    Parameters
    ----------
    audiotoolbox, corefoundation : ctypes library, optional
        Default ``ctypes.CDLL`` of the system frameworks (OSError where they do not exist,
        e.g. on Linux); the tests pass fakes with the same functions.
    """

    def __init__(self, audiotoolbox: Any = None, corefoundation: Any = None):
        at = audiotoolbox if audiotoolbox is not None else ctypes.CDLL(AUDIOTOOLBOX)
        cf = corefoundation if corefoundation is not None else ctypes.CDLL(COREFOUNDATION)
        self.at, self.cf = at, cf
        sig = {
            (at, "ExtAudioFileOpenURL"): (c_int32, [c_void_p, POINTER(c_void_p)]),
            (at, "ExtAudioFileGetProperty"): (c_int32, [c_void_p, c_uint32, POINTER(c_uint32),
                                                        c_void_p]),
            (at, "ExtAudioFileSetProperty"): (c_int32, [c_void_p, c_uint32, c_uint32, c_void_p]),
            (at, "ExtAudioFileSeek"): (c_int32, [c_void_p, c_int64]),
            (at, "ExtAudioFileRead"): (c_int32, [c_void_p, POINTER(c_uint32),
                                                 POINTER(AudioBufferList)]),
            (at, "ExtAudioFileDispose"): (c_int32, [c_void_p]),
            (at, "AudioConverterSetProperty"): (c_int32, [c_void_p, c_uint32, c_uint32, c_void_p]),
            (cf, "CFURLCreateFromFileSystemRepresentation"): (c_void_p, [c_void_p, ctypes.c_char_p,
                                                                         c_long, c_bool]),
            (cf, "CFRelease"): (None, [c_void_p]),
        }
        for (lib, name), (restype, argtypes) in sig.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes

    @staticmethod
    def _check(call: str, status: int) -> None:
        if status:
            raise ExtAudioFileError(call, status)

    def open(self, path: str) -> c_void_p:
        """``ExtAudioFileOpenURL`` on a file URL made from ``path``; returns the ExtAudioFileRef."""
        raw = os.fsencode(path)
        url = self.cf.CFURLCreateFromFileSystemRepresentation(kCFAllocatorDefault, raw, len(raw),
                                                              False)
        if not url:
            raise ExtAudioFileError("CFURLCreateFromFileSystemRepresentation", -43)
        ref = c_void_p()
        try:
            self._check("ExtAudioFileOpenURL", self.at.ExtAudioFileOpenURL(url, byref(ref)))
        finally:
            self.cf.CFRelease(url)
        return ref

    def _get(self, ref: c_void_p, prop: int, value: Any, call: str) -> Any:
        size = c_uint32(ctypes.sizeof(value))
        self._check(call, self.at.ExtAudioFileGetProperty(ref, prop, byref(size), byref(value)))
        return value

    def file_format(self, ref: c_void_p) -> AudioStreamBasicDescription:
        return self._get(ref, kExtAudioFileProperty_FileDataFormat, AudioStreamBasicDescription(),
                         "ExtAudioFileGetProperty(FileDataFormat)")

    def length_frames(self, ref: c_void_p) -> int:
        """The file's length in its own sample frames (the gapless length where it says so)."""
        return int(self._get(ref, kExtAudioFileProperty_FileLengthFrames, c_int64(),
                             "ExtAudioFileGetProperty(FileLengthFrames)").value)

    def set_client_format(self, ref: c_void_p, fmt: AudioStreamBasicDescription) -> None:
        self._check("ExtAudioFileSetProperty(ClientDataFormat)", self.at.ExtAudioFileSetProperty(
            ref, kExtAudioFileProperty_ClientDataFormat, ctypes.sizeof(fmt), byref(fmt)))

    def best_resampler(self, ref: c_void_p) -> bool:
        """Set the converter's sample-rate quality to ``kAudioConverterQuality_Max`` (then
        ``kExtAudioFileProperty_ConverterConfig`` = NULL, which makes ExtAudioFile re-read the
        converter's settings). False, and the default quality, where that fails."""
        conv = c_void_p()
        try:
            self._get(ref, kExtAudioFileProperty_AudioConverter, conv,
                      "ExtAudioFileGetProperty(AudioConverter)")
        except ExtAudioFileError:
            return False
        if not conv.value:
            return False
        quality = c_uint32(kAudioConverterQuality_Max)
        if self.at.AudioConverterSetProperty(conv, kAudioConverterSampleRateConverterQuality,
                                             ctypes.sizeof(quality), byref(quality)):
            return False
        null = c_void_p(None)
        return not self.at.ExtAudioFileSetProperty(ref, kExtAudioFileProperty_ConverterConfig,
                                                   ctypes.sizeof(null), byref(null))

    def seek(self, ref: c_void_p, file_frame: int) -> None:
        self._check("ExtAudioFileSeek", self.at.ExtAudioFileSeek(ref, int(file_frame)))

    def read(self, ref: c_void_p, out: np.ndarray) -> int:
        """``ExtAudioFileRead`` into ``out`` (float32, C-contiguous, mono client frames) until
        it is full or the file ends; returns the frames read."""
        assert out.dtype == np.float32 and out.flags.c_contiguous
        done, total = 0, out.shape[0]
        base = out.ctypes.data
        while done < total:
            want = min(READ_CHUNK_FRAMES, total - done)
            abl = AudioBufferList(1)
            abl.mBuffers[0].mNumberChannels = 1
            abl.mBuffers[0].mDataByteSize = 4 * want
            abl.mBuffers[0].mData = base + 4 * done
            frames = c_uint32(want)
            self._check("ExtAudioFileRead", self.at.ExtAudioFileRead(ref, byref(frames), byref(abl)))
            if frames.value == 0:  # the end of the file
                break
            done += int(frames.value)
        return done

    def dispose(self, ref: c_void_p) -> None:
        self.at.ExtAudioFileDispose(ref)


class IOSSource(Source):
    """One file opened with ExtAudioFile, read as mono float32 at ``client_rate_hz``.

    Parameters
    ----------
    path : str
    toolbox : AudioToolbox
    client_rate_hz : int, optional
        The rate to convert to (the model's); default: the file's own (no conversion).

    Raises
    ------
    NotMine
        Core Audio does not read the file's type or data format.
    AudioError
        Missing or unreadable file, or a failure setting up the conversion.
    """

    def __init__(self, path: str, toolbox: AudioToolbox, client_rate_hz: int | None = None):
        self.path = path
        self.toolbox = tb = toolbox
        try:
            self.ref = tb.open(path)
        except ExtAudioFileError as exc:
            if exc.status in _NOT_FOUND:
                raise AudioError(path, "no such file") from None
            if exc.status in _PERMISSION:
                raise AudioError(path, "permission denied") from None
            raise NotMine(str(exc)) from None
        try:
            ffmt = tb.file_format(self.ref)
            file_frames = tb.length_frames(self.ref)
            self.file_rate = int(round(ffmt.mSampleRate))
            if self.file_rate <= 0:
                raise NotMine("the file has no sample rate")
            self.rate = int(client_rate_hz or self.file_rate)
            tb.set_client_format(self.ref, mono_float_format(self.rate))
            self.converter_max_quality = self.rate != self.file_rate and tb.best_resampler(self.ref)
        except ExtAudioFileError as exc:
            self.close()
            raise AudioError(path, str(exc)) from None
        except NotMine:
            self.close()
            raise
        g = math.gcd(self.file_rate, self.rate)
        self.step_file, self.step_client = self.file_rate // g, self.rate // g
        frames = (file_frames * self.rate + self.file_rate // 2) // self.file_rate
        code = struct.pack(">I", ffmt.mFormatID).decode("latin-1")
        fmt = _FORMAT_NAMES.get(code, code.strip().upper() or "?")
        self.info = AudioInfo(path, self.rate, int(ffmt.mChannelsPerFrame), int(frames),
                              frames / self.rate, fmt, "ios", True)

    def _read(self, start: int, stop: int) -> np.ndarray:
        margin = max(1, math.ceil(MARGIN_S * self.rate / self.step_client))
        k0 = max(0, start // self.step_client - margin)
        c0 = k0 * self.step_client  # client frame the seek lands on
        out = np.zeros(stop - c0, dtype=np.float32)
        try:
            self.toolbox.seek(self.ref, k0 * self.step_file)
            got = self.toolbox.read(self.ref, out)
        except ExtAudioFileError as exc:
            raise AudioError(self.path, f"decoding failed at {start / self.rate:.1f} s "
                                        f"({exc})") from None
        return out[start - c0:got]

    def close(self) -> None:
        ref = self.__dict__.pop("ref", None)
        if ref is not None:
            self.toolbox.dispose(ref)


_toolbox: AudioToolbox | None = None


def check_available() -> None:
    """Load AudioToolbox once; ImportError off Apple platforms (where it does not exist), so
    :func:`deejai.engine.decode.open_source` tries the next backend."""
    global _toolbox
    if _toolbox is None:
        if sys.platform not in ("ios", "darwin"):
            raise ImportError("AudioToolbox exists only on iOS and macOS")
        try:
            _toolbox = AudioToolbox()
        except (OSError, AttributeError) as exc:
            raise ImportError(f"AudioToolbox cannot be loaded: {exc}") from None


def open_file(path: str, sample_rate_hz: int | None = None) -> IOSSource:
    """Open ``path`` with ExtAudioFile, converting to mono float32 at ``sample_rate_hz`` (the
    model's rate, which :func:`deejai.engine.decode.open_source` passes on) or the file's own."""
    check_available()
    assert _toolbox is not None
    return IOSSource(path, _toolbox, sample_rate_hz)


#: :func:`deejai.engine.decode.open_source` passes the wanted rate to openers that say so.
open_file.resamples = True  # type: ignore[attr-defined]
