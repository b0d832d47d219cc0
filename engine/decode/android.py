"""Android's own decoders: MediaExtractor + MediaCodec, driven through pyjnius.

Every Android device must decode MP3, AAC, FLAC, Vorbis and Opus (the Compatibility Definition
Document, section 5.1.2), but the platform does not resample: this backend returns native-rate
mono samples and :mod:`deejai.engine.decode.resample` (NumPy on a phone) converts them.

The decoding loop lives in a small Java class shipped inside the APK,
``org.deejai.Decoder`` (``ui_kivy/java/org/deejai/Decoder.java``, built by buildozer's
``android.add_src``): it feeds the codec, mixes each output buffer to mono, places it by its
presentation time into the requested window (``PcmWindow.java``) and hands the window over as
one ``byte[]`` of little-endian float32: one JNI call per window, never one per sample.

Two sources, as on the desktop (:mod:`deejai.engine.decode.pyav_backend`):

* :class:`AndroidMp3Source` — MP3 with a consistent frame chain. The engine indexes the frames
  itself (:func:`deejai.engine.decode.mpeg.frame_index`), cuts the frames of a window plus the
  pre-roll that the bit reservoir and the filter overlap need
  (:meth:`~deejai.engine.decode.mpeg.MpegFrames.preroll_frames`) and passes them to the codec
  with their timestamps. Windows are where the desktop puts them, in VBR files too, where
  ``MediaExtractor.seekTo`` is only as exact as the Xing table of contents (about 1 % of the
  duration).
* :class:`AndroidSource` — every other format: ``MediaExtractor.seekTo(t - PREROLL_S,
  SEEK_TO_PREVIOUS_SYNC)`` (stepping back again if a seek lands after the target), decode, and
  keep what the output timestamps place in the window; the gapless trim comes from the track
  format's ``encoder-delay`` / ``encoder-padding`` keys (MP4 edit lists, LAME tags).

The Java calls sit behind :class:`JavaDecoder` (the seam): :class:`AndroidSource` and
:class:`AndroidMp3Source` only talk to an object with its methods, so their logic is tested on
the desktop (``tests/test_android_decoder.py``) with a stand-in codec, and ``PcmWindow`` itself
runs there on a desktop JVM through pyjnius. MediaCodec itself has not run: this backend has
never been used on a device. ``docs/mobile.md`` lists the checks for the first run.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from deejai.engine.decode import AudioInfo, NotMine, Source
from deejai.engine.decode.mpeg import DECODER_DELAY, NotMpegAudio, frame_index, read_if_mp3
from deejai.engine.errors import AudioError

__all__ = ["open_file", "open_with", "AndroidSource", "AndroidMp3Source", "JavaDecoder",
           "DecoderLike", "preload_classes", "APP_CLASSES", "JAVA_CLASS", "PREROLL_S"]

#: The helper class the APK carries (``ui_kivy/java/org/deejai/Decoder.java``).
JAVA_CLASS = "org.deejai.Decoder"

#: Seconds decoded before a container seek target and thrown away (codec settling; the same
#: margin the desktop's container path uses).
PREROLL_S = 0.5

#: Share of MP3 frames whose output may be missing from a window before the file counts as
#: damaged (as :data:`deejai.engine.decode.pyav_backend.MAX_BAD_FRAME_SHARE`).
MAX_MISSING_SHARE = 0.25

_FORMATS = {"audio/mpeg": "MP3", "audio/mp4a-latm": "M4A", "audio/flac": "FLAC",
            "audio/vorbis": "OGG", "audio/opus": "OPUS", "audio/raw": "WAV",
            "audio/3gpp": "AMR", "audio/amr-wb": "AMR-WB", "audio/x-ms-wma": "WMA"}


class DecoderLike(Protocol):
    """What the sources need from the Java helper (:class:`JavaDecoder` is the real one)."""

    mime: str
    sample_rate_hz: int
    channels: int
    duration_us: int
    encoder_delay: int
    encoder_padding: int
    codec_name: str

    def decode_range(self, start: int, stop: int, preroll_us: int) -> np.ndarray: ...

    def decode_packets(self, data: bytes, sizes: list[int], pts_us: list[int], start: int,
                       stop: int) -> np.ndarray: ...

    def close(self) -> None: ...


def _java_error(exc: BaseException) -> str:
    """The first line of a pyjnius ``JavaException`` (its class and message)."""
    for attr in ("innermessage", "classname"):
        value = getattr(exc, attr, None)
        if value:
            return str(value).strip().splitlines()[0]
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class JavaDecoder:
    """The seam: ``org.deejai.Decoder`` through pyjnius, and nothing else.

    Parameters
    ----------
    path : str
        The file.
    jnius : module, optional
        The pyjnius module (default: ``import jnius``; ImportError off Android tells
        :func:`deejai.engine.decode.open_source` to try the next backend).

    Raises
    ------
    NotMine
        No audio track, or no decoder on this device for its format.
    """

    def __init__(self, path: str, jnius: Any = None):
        if jnius is None:
            import jnius  # noqa: F811  (ImportError: not on Android)
        self._jnius = jnius
        try:
            cls = jnius.autoclass(JAVA_CLASS)
        except jnius.JavaException as exc:  # an APK built without android.add_src
            raise NotMine(f"{JAVA_CLASS} is not in this app ({_java_error(exc)}); the APK must "
                          f"be built with buildozer.spec's android.add_src") from None
        try:
            self._java = cls(path)
        except jnius.JavaException as exc:
            raise NotMine(_java_error(exc)) from None
        j = self._java
        self.mime = str(j.mime())
        self.sample_rate_hz = int(j.sampleRate())
        self.channels = int(j.channels())
        self.duration_us = int(j.durationUs())
        self.encoder_delay = int(j.encoderDelay())
        self.encoder_padding = int(j.encoderPadding())
        self.codec_name = str(j.codecName())
        _log_first(self)

    def _samples(self, count: int) -> np.ndarray:
        raw = self._java.samples()  # one byte[] for the window
        data = raw.tostring() if hasattr(raw, "tostring") else bytes(raw)
        return np.frombuffer(data, dtype="<f4", count=count).astype(np.float32)

    def decode_range(self, start: int, stop: int, preroll_us: int) -> np.ndarray:
        """Stream samples ``[start, stop)`` (fewer where the stream ends) by seeking."""
        try:
            n = int(self._java.decodeRange(int(start), int(stop), int(preroll_us)))
            return self._samples(n)
        except self._jnius.JavaException as exc:
            raise RuntimeError(_java_error(exc)) from None

    def decode_packets(self, data: bytes, sizes: list[int], pts_us: list[int], start: int,
                       stop: int) -> np.ndarray:
        """Decode the packets (back to back in ``data``) and return samples ``[start, stop)``."""
        try:
            n = int(self._java.decodePackets(data, list(sizes), list(pts_us), int(start),
                                             int(stop)))
            return self._samples(n)
        except self._jnius.JavaException as exc:
            raise RuntimeError(_java_error(exc)) from None

    def close(self) -> None:
        java = self.__dict__.pop("_java", None)
        if java is not None:
            java.close()


_logged: set[str] = set()


def _log_first(decoder: "JavaDecoder") -> None:
    """One INFO line per codec and process (``adb logcat`` shows it: docs/mobile.md)."""
    if decoder.codec_name in _logged:
        return
    _logged.add(decoder.codec_name)
    import logging

    logging.getLogger(__name__).info(
        "deejai: MediaCodec %s decodes %s (%d Hz, %d channels, encoder delay %d)",
        decoder.codec_name, decoder.mime, decoder.sample_rate_hz, decoder.channels,
        decoder.encoder_delay)


def time_us(sample: int, sample_rate_hz: int) -> int:
    """Presentation time (microseconds, rounded down) of ``sample``, as ``PcmWindow.timeOf``:
    rounding it to the nearest sample gives ``sample`` back at any rate below 500 kHz."""
    return (int(sample) * 1_000_000) // int(sample_rate_hz)


class AndroidSource(Source):
    """Any format MediaExtractor reads, seeking the extractor and placing output by timestamp.

    The codec's timeline counts from the first decoded sample; the desktop's starts after the
    gapless trim. Sample ``s`` here is codec sample ``s + offset`` with ``offset`` the track's
    ``encoder-delay`` (plus the MP3 decoder's own 529 samples for ``audio/mpeg``, which the
    desktop also drops, :data:`~deejai.engine.decode.mpeg.DECODER_DELAY`).
    """

    def __init__(self, path: str, decoder: DecoderLike):
        self.path = path
        self.decoder = d = decoder
        rate = int(d.sample_rate_hz)
        if rate <= 0 or d.channels <= 0:
            d.close()
            raise NotMine(f"{d.mime}: no sample rate or channel count")
        self.offset = int(d.encoder_delay) + (DECODER_DELAY if d.mime == "audio/mpeg" else 0)
        if d.duration_us <= 0:
            # a stream without a duration: decode it whole once (as the desktop does)
            self._full: np.ndarray | None = self._decode(0, 1 << 40)
            frames = int(self._full.shape[0])
            seekable = False
        else:
            self._full = None
            total = (int(d.duration_us) * rate + 500_000) // 1_000_000
            frames = max(0, total - int(d.encoder_delay) - int(d.encoder_padding))
            seekable = True
        fmt = _FORMATS.get(d.mime, d.mime.split("/")[-1].upper())
        self.info = AudioInfo(path, rate, int(d.channels), frames, frames / rate, fmt,
                              "android", seekable)

    def _decode(self, start: int, stop: int) -> np.ndarray:
        rate = self.decoder.sample_rate_hz
        try:
            y = self.decoder.decode_range(start + self.offset, stop + self.offset,
                                          int(PREROLL_S * 1_000_000))
        except RuntimeError as exc:
            raise AudioError(self.path, f"decoding failed at {start / rate:.1f} s "
                                        f"({exc})") from None
        return np.asarray(y, dtype=np.float32)

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._full is not None:
            return self._full[start:stop]
        return self._decode(start, stop)[: stop - start]

    def close(self) -> None:
        decoder = self.__dict__.pop("decoder", None)
        if decoder is not None:
            decoder.close()


class AndroidMp3Source(Source):
    """An MP3 file held in memory, its frames cut by the engine's index and fed to MediaCodec.

    Window placement is the desktop's (:class:`deejai.engine.decode.pyav_backend.Mp3Source`):
    a decode from the start drops ``index.skip`` samples, so stream sample ``s`` is sample
    ``s + skip`` of the decoder's output, and frame ``f`` (timestamp ``f * samples_per_frame``)
    holds output samples ``[f * spf, (f + 1) * spf)``.

    Attributes
    ----------
    data : bytes
        The whole file (the audio hash is computed from these bytes, as on the desktop).
    """

    def __init__(self, path: str, data: bytes, span: tuple[int, int], decoder: DecoderLike):
        self.path = path
        self.data = data
        self.index = frame_index(data, *span)  # NotMpegAudio: let the extractor decide
        self.decoder = decoder
        idx = self.index
        if decoder.sample_rate_hz != idx.sample_rate_hz:
            raise NotMpegAudio(f"the extractor says {decoder.sample_rate_hz} Hz, the frames "
                               f"{idx.sample_rate_hz} Hz")
        self.info = AudioInfo(path, idx.sample_rate_hz, idx.channels, idx.length,
                              idx.length / idx.sample_rate_hz, "MP3", "android", True)

    def packets(self, start: int, stop: int) -> tuple[bytes, list[int], list[int], int, int]:
        """The frames that decode samples ``[start, stop)``, with their pre-roll.

        Returns
        -------
        data : bytes
            The frames back to back.
        sizes : list of int
            Bytes of each frame.
        pts_us : list of int
            Timestamp of each frame (microseconds): frame ``f`` at sample ``f * spf``.
        first, last : int
            Decoder-output samples ``[first, last)`` of the window (``start + skip``...).
        """
        idx = self.index
        spf, rate = idx.samples_per_frame, idx.sample_rate_hz
        f_lo = (start + idx.skip) // spf
        f_hi = min(idx.n_frames, -(-(stop + idx.skip) // spf))
        first = f_lo - idx.preroll_frames(f_lo)
        data = self.data
        offsets, lengths = idx.offsets[first:f_hi], idx.lengths[first:f_hi]
        if offsets.size and int(offsets[-1] + lengths[-1] - offsets[0]) == int(lengths.sum()):
            payload = data[int(offsets[0]):int(offsets[-1] + lengths[-1])]  # contiguous
        else:  # junk between frames (a resynchronised stream): cut each frame
            payload = b"".join(data[int(o):int(o + n)] for o, n in zip(offsets, lengths))
        pts = [time_us(f * spf, rate) for f in range(first, f_hi)]
        return payload, [int(n) for n in lengths], pts, start + idx.skip, stop + idx.skip

    def _read(self, start: int, stop: int) -> np.ndarray:
        idx = self.index
        payload, sizes, pts, first, last = self.packets(start, stop)
        if not sizes:
            return np.zeros(0, dtype=np.float32)
        try:
            y = np.asarray(self.decoder.decode_packets(payload, sizes, pts, first, last),
                           dtype=np.float32)
        except RuntimeError as exc:
            raise AudioError(self.path, f"decoding failed at "
                                        f"{start / idx.sample_rate_hz:.1f} s ({exc})") from None
        # frames the codec dropped (damage) come back as a short window or as zeros; a short
        # window past the last frame is a truncated file, which the reader reports
        wanted = min(stop, idx.n_frames * idx.samples_per_frame - idx.skip) - start
        if wanted > 0 and wanted - y.shape[0] > MAX_MISSING_SHARE * wanted + idx.samples_per_frame:
            raise AudioError(self.path, f"damaged: MP3 frames near "
                                        f"{start / idx.sample_rate_hz:.1f} s do not decode")
        return y[: stop - start]

    def close(self) -> None:
        decoder = self.__dict__.pop("decoder", None)
        if decoder is not None:
            decoder.close()


def open_with(path: str, make_decoder: Any) -> Source:
    """Open ``path`` with decoders made by ``make_decoder(path)`` (a :class:`JavaDecoder` on a
    phone; the tests pass a stand-in): an :class:`AndroidMp3Source` for MP3 with a consistent
    frame chain, else an :class:`AndroidSource`."""
    mp3 = read_if_mp3(path)
    decoder = make_decoder(path)
    if mp3 is not None and decoder.mime == "audio/mpeg":
        try:
            return AndroidMp3Source(path, *mp3, decoder)
        except NotMpegAudio:
            pass  # the extractor's timestamps then (e.g. a free-format stream)
    return AndroidSource(path, decoder)


#: The app's own Java classes the engine uses from worker threads: the decoder helper and the
#: LiteRT interpreter (from the AAR that buildozer's gradle dependency brings in).
APP_CLASSES = ("org.deejai.Decoder", "org.deejai.PcmWindow", "org.tensorflow.lite.Interpreter",
               "org.tensorflow.lite.Interpreter$Options")


def preload_classes(jnius: Any = None) -> dict[str, str]:
    """Load :data:`APP_CLASSES` now, on the calling thread (the app's main thread, at start).

    JNI's ``FindClass`` called from a thread that native code attached (every thread Python
    starts, such as the scan's analysis threads) searches the system class loader, which does
    not know the APK's own classes (Android's "JNI tips", FAQ "Why didn't FindClass find my
    class?"). pyjnius keeps every class it has loaded, so loading them once from the main
    thread makes ``autoclass`` find them from any thread afterwards.

    Returns
    -------
    dict
        Class name -> ``"ok"`` or the reason it could not be loaded (logged as a warning).
    """
    import logging

    log = logging.getLogger(__name__)
    if jnius is None:
        import jnius  # noqa: F811
    result = {}
    for name in APP_CLASSES:
        try:
            jnius.autoclass(name)
            result[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - reported; the engine then says what fails
            result[name] = _java_error(exc)
            log.warning("deejai: Java class %s cannot be loaded: %s", name, result[name])
    log.info("deejai: Java classes preloaded: %s", result)
    return result


def check_available() -> None:
    """ImportError where pyjnius is missing (off Android), so that
    :func:`deejai.engine.decode.open_source` tries the next backend."""
    import jnius  # noqa: F401


def open_file(path: str) -> Source:
    """Open ``path`` with MediaExtractor/MediaCodec (:class:`NotMine` when the device has no
    decoder for it, or the APK lacks the helper class)."""
    return open_with(path, JavaDecoder)
