"""The FFmpeg backend, through PyAV (``pip install av``; python-for-android has a recipe).

MP3 (the common case) is decoded packet by packet: :func:`deejai.engine.decode.mpeg.frame_index`
finds every frame, and a window of samples is decoded from the frames that hold it, starting
:meth:`~deejai.engine.decode.mpeg.MpegFrames.preroll_frames` early for the bit reservoir and
the filter overlap, with FFmpeg's ``mp3float`` decoder fed one frame per packet. The result is
sample-exact: it equals the same range of a decode from the start (FFmpeg's own gapless
trimming: the LAME encoder delay + 529 samples skipped), bit for bit, at any position, in any
length of file, which a container seek cannot promise for VBR files (their Xing table of
contents places a seek only to ~1 % of the duration).

Other formats (FLAC, Ogg Vorbis/Opus, M4A/AAC, WAV, ...) seek with the container and place
the decoded frames by their timestamps, decoding ``PREROLL_S`` early so that codecs with
overlapping transforms (AAC, Vorbis, Opus) have settled; a stream without a known duration is
decoded whole on open.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from deejai.engine.decode import AudioInfo, NotMine, Source
from deejai.engine.decode.mpeg import NotMpegAudio, frame_index, read_if_mp3
from deejai.engine.errors import AudioError, EmptyAudioError

__all__ = ["open_file", "Mp3Source", "ContainerSource"]

import av  # noqa: E402  (ImportError here tells open_source that PyAV is not installed)

#: Seconds decoded before a container seek target and thrown away (codec settling).
PREROLL_S = 0.5

#: Share of a window's MP3 frames that may fail to decode (replaced by silence, as mpg123
#: does) before the file is reported as damaged.
MAX_BAD_FRAME_SHARE = 0.25

_FORMAT_NAMES = {"mp3": "MP3", "flac": "FLAC", "ogg": "OGG", "wav": "WAV", "aiff": "AIFF",
                 "matroska,webm": "WEBM", "mov,mp4,m4a,3gp,3g2,mj2": "M4A", "asf": "WMA",
                 "aac": "AAC", "w64": "W64"}


def _quiet_ffmpeg() -> None:
    try:
        av.logging.set_level(av.logging.PANIC)
    except Exception:  # noqa: BLE001 - older PyAV: keep its default
        pass


_quiet_ffmpeg()


def _mono(frames: list) -> np.ndarray:
    """Channel mean of decoded frames as float32 (any sample format FFmpeg returns)."""
    if not frames:
        return np.zeros(0, dtype=np.float32)
    parts = []
    for fr in frames:
        x = fr.to_ndarray()
        fmt = fr.format
        if not fmt.is_planar:  # packed: (1, samples * channels)
            x = x.reshape(-1, len(fr.layout.channels)).T
        if x.dtype.kind == "i":
            x = x.astype(np.float32) / np.float32(2 ** (8 * x.dtype.itemsize - 1))
        elif x.dtype.kind == "u":
            x = (x.astype(np.float32) - 128.0) / 128.0
        parts.append(x.mean(axis=0, dtype=np.float32) if x.shape[0] > 1
                     else x[0].astype(np.float32, copy=False))
    return np.concatenate(parts)


class Mp3Source(Source):
    """An MP3 file held in memory and decoded frame by frame (sample-exact windows).

    Attributes
    ----------
    data : bytes
        The whole file (its audio hash is computed from these bytes).
    frames : MpegFrames
        The frame index.
    """

    def __init__(self, path: str, data: bytes, span: tuple[int, int]):
        self.path = path
        self.data = data
        self.index = frame_index(data, *span)
        idx = self.index
        # the float decoders: the fixed-point ones carry a rounding (dither) state from frame to
        # frame, so their output would depend on where decoding started
        self._decoder = "mp3float" if idx.layer == 3 else "mp2float"
        self.info = AudioInfo(path, idx.sample_rate_hz, idx.channels, idx.length,
                              idx.length / idx.sample_rate_hz, "MP3", "pyav", True)

    def _read(self, start: int, stop: int) -> np.ndarray:
        idx = self.index
        spf = idx.samples_per_frame
        f_lo = (start + idx.skip) // spf
        f_hi = min(idx.n_frames, -(-(stop + idx.skip) // spf))
        if f_lo >= f_hi:
            return np.zeros(0, dtype=np.float32)
        first = f_lo - idx.preroll_frames(f_lo)
        ctx = av.CodecContext.create(self._decoder, "r")
        data, offsets, lengths = self.data, idx.offsets, idx.lengths
        out = np.zeros((f_hi - f_lo) * spf, dtype=np.float32)
        stereo = idx.channels == 2
        bad = 0
        for f in range(first, f_hi):
            o = int(offsets[f])
            try:
                got = ctx.decode(av.Packet(data[o:o + int(lengths[f])]))
            except av.error.FFmpegError:
                got = []
                if f >= f_lo:
                    bad += 1
            if f < f_lo or not got:
                continue
            fr = got[0]
            dst = out[(f - f_lo) * spf:(f - f_lo + 1) * spf]
            if len(got) == 1 and fr.samples == spf and fr.format.name == "fltp":
                # the float planes straight into the output: (left + right) / 2 below
                planes = fr.planes
                if stereo:
                    np.add(np.frombuffer(planes[0], np.float32, spf),
                           np.frombuffer(planes[1], np.float32, spf), out=dst)
                else:
                    dst[:] = np.frombuffer(planes[0], np.float32, spf)
                continue
            y = _mono(got)
            if y.shape[0] == spf:
                dst[:] = y * 2 if stereo else y  # halved with the rest below
            else:  # a frame of another size: never seen in a valid stream
                bad += 1
        if stereo:
            out *= np.float32(0.5)
        if bad > MAX_BAD_FRAME_SHARE * (f_hi - f_lo) and bad > 2:
            raise AudioError(self.path, f"damaged: {bad} of {f_hi - f_lo} MP3 frames near "
                                        f"{start / idx.sample_rate_hz:.1f} s do not decode")
        t0 = f_lo * spf - idx.skip  # stream sample of out[0]
        return out[start - t0:stop - t0]


class ContainerSource(Source):
    """Any format FFmpeg reads, seeking the container and placing frames by timestamp."""

    def __init__(self, path: str):
        self.path = path
        try:
            self._container = av.open(path, metadata_errors="ignore")
        except (av.error.InvalidDataError, av.error.FFmpegError, ValueError) as exc:
            raise NotMine(_first_line(exc)) from None
        except OSError as exc:
            raise AudioError(path, f"cannot read: {exc.strerror or exc}") from None
        streams = self._container.streams.audio
        if not streams:
            self._container.close()
            raise NotMine("no audio stream")
        self._stream = st = streams[0]
        rate = int(st.codec_context.sample_rate or st.rate or 0)
        channels = int(st.codec_context.channels or 0) or len(st.codec_context.layout.channels)
        if rate <= 0:
            self._container.close()
            raise NotMine("the audio stream has no sample rate")
        self._rate = rate
        fmt = _FORMAT_NAMES.get(self._container.format.name, self._container.format.name.upper())
        duration = None
        if st.duration is not None and st.time_base is not None:
            duration = float(st.duration * st.time_base)
        elif self._container.duration is not None:
            duration = self._container.duration / 1_000_000
        self._start = 0.0
        if st.start_time is not None and st.time_base is not None:
            self._start = float(st.start_time * st.time_base)
        self._full: np.ndarray | None = None
        seekable = duration is not None and duration > 0 and self._container.format.name != "aac"
        if not seekable:
            self._full = self._decode_all()
            frames = int(self._full.shape[0])
        else:
            frames = int(round(duration * rate))
            if st.codec_context.name == "opus":  # Ogg's duration counts Opus's pre-skip
                frames -= int(st.codec_context.delay or 0)
        self.info = AudioInfo(path, rate, channels, frames, frames / rate, fmt, "pyav", seekable)

    def _decode_all(self) -> np.ndarray:
        frames = []
        try:
            for fr in self._container.decode(self._stream):
                frames.append(fr)
        except av.error.FFmpegError as exc:
            if not frames:
                raise AudioError(self.path, f"decoding failed ({_first_line(exc)})") from None
        y = _mono(frames)
        if y.shape[0] == 0:
            raise EmptyAudioError(self.path, "the file decodes to no audio samples")
        return y

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self._full is not None:
            return self._full[start:stop]
        rate = self._rate
        target = start / rate - PREROLL_S
        if target <= 0:
            # near the start a seek cannot pre-roll, and codecs with priming samples (AAC)
            # decode differently after a seek to 0 than from a fresh open: decode from scratch
            self._reopen()
            st = self._stream
        else:
            st = self._stream
            try:
                self._container.seek(int((target + self._start) / st.time_base), stream=st,
                                     backward=True)
                st.codec_context.flush_buffers()
            except av.error.FFmpegError as exc:
                raise AudioError(self.path, f"cannot seek to {start / rate:.1f} s "
                                            f"({_first_line(exc)})") from None
        out = np.zeros(stop - start, dtype=np.float32)
        filled = start  # first sample of [start, stop) not yet written
        try:
            for fr in self._container.decode(st):
                if fr.pts is None:
                    continue
                a = int(round((float(fr.pts * st.time_base) - self._start) * rate))
                y = _mono([fr])
                b = a + y.shape[0]
                if b <= start:
                    continue
                lo, hi = max(a, start), min(b, stop)
                if hi > lo:
                    out[lo - start:hi - start] = y[lo - a:hi - a]
                    filled = max(filled, hi)
                if b >= stop:
                    break
        except av.error.FFmpegError as exc:
            if filled == start:
                raise AudioError(self.path, f"decoding failed at {start / rate:.1f} s "
                                            f"({_first_line(exc)})") from None
        return out[:filled - start]

    def _reopen(self) -> None:
        self._container.close()
        self._container = av.open(self.path, metadata_errors="ignore")
        self._stream = self._container.streams.audio[0]

    #: Seconds of audio packets :meth:`content_digest` hashes.
    HASH_SECONDS = 30.0

    def content_digest(self, h) -> None:
        """The codec, rate, channels and length, then the bytes of the audio packets of the
        first 30 s as the container stores them (no decoding: independent of FFmpeg's decoders,
        and of the tags, which live outside the audio packets)."""
        info, st = self.info, self._stream
        h.update(f"packets:{st.codec_context.name}:{info.sample_rate_hz}:{info.channels}:"
                 f"{info.frames}".encode())
        self._reopen()
        st = self._stream
        limit = self.HASH_SECONDS
        try:
            for packet in self._container.demux(st):
                if packet.size == 0:
                    continue
                h.update(bytes(packet))
                if packet.pts is not None and float(packet.pts * st.time_base) - self._start >= limit:
                    break
        except av.error.FFmpegError as exc:
            raise AudioError(self.path, f"cannot read the audio packets ({_first_line(exc)})") from None

    def close(self) -> None:
        container = self.__dict__.pop("_container", None)
        if container is not None:
            container.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def open_file(path: str) -> Source:
    """Open ``path`` as an :class:`Mp3Source` (MP3 with a consistent frame chain) or a
    :class:`ContainerSource` (anything else FFmpeg reads); :class:`NotMine` when FFmpeg does
    not recognise it."""
    mp3 = read_if_mp3(path)
    if mp3 is not None:
        try:
            return Mp3Source(path, *mp3)
        except NotMpegAudio:
            pass  # e.g. an .mp3 that holds AAC: let the container decide
    return ContainerSource(path)


def version() -> str:
    return str(getattr(av, "__version__", "?"))


def describe() -> dict[str, Any]:
    """PyAV and FFmpeg versions (for ``deejai analyse`` and bug reports)."""
    libs = getattr(av, "library_versions", {})
    return {"pyav": version(), "ffmpeg": {k: ".".join(map(str, v)) for k, v in libs.items()}}
