"""An index of the frames of an MPEG audio (MP3) stream, for sample-exact seeking.

An MP3 file is a sequence of frames, each a 4-byte header followed by side information and
main data; a Layer III frame's main data may begin up to 511 bytes back, in earlier frames (the
*bit reservoir*), and its output overlaps the previous frame's (IMDCT overlap-add and the
polyphase synthesis filter). To decode a window exactly as a decode from the start would, a
decoder must start a few frames early and discard their output; how many follows from the
``main_data_begin`` field of the frames at the start of the window.

:func:`frame_index` scans a stream once (vectorised with NumPy: every sync candidate is parsed
at once, then the chain of frames is followed from the first real frame) and reads the
Xing/Info header with its LAME extension for the encoder delay and padding, exactly as FFmpeg's
``mp3dec`` and mpg123's gapless mode use them: a decode from the start skips ``delay + 529``
samples (529: the decoder's own delay) and the stream holds ``frames * samples_per_frame -
delay - padding`` samples.

Sources: ISO/IEC 11172-3 (MPEG-1 audio) 2.4.1.3 (header), 2.4.1.7 and 2.4.2.7
(``main_data_begin``), ISO/IEC 13818-3 (MPEG-2 low sampling frequencies), the MPEG 2.5
extension; the Xing VBR header and the LAME tag ("Mp3 info tag rev 1 specifications", LAME
project); FFmpeg ``libavformat/mp3dec.c`` (``start_skip_samples = start_pad + 528 + 1``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MpegFrames", "frame_index", "tag_span", "read_if_mp3", "DECODER_DELAY", "NotMpegAudio"]

#: Samples of delay of the standard MP3 decoder (the polyphase synthesis), which gapless
#: players add to the encoder delay from the LAME tag (FFmpeg: ``528 + 1``).
DECODER_DELAY = 529

# bitrate tables (kbit/s) by [lsf][layer - 1][index]; lsf = 1 for MPEG-2 and 2.5
_BITRATES = np.array([
    [[0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448, 0],
     [0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384, 0],
     [0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 0]],
    [[0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256, 0],
     [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0],
     [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160, 0]],
], dtype=np.int64)
# sample rates by [version bits][index]: version 0 = MPEG 2.5, 2 = MPEG 2, 3 = MPEG 1
_RATES = np.array([[11025, 12000, 8000, 0], [0, 0, 0, 0], [22050, 24000, 16000, 0],
                   [44100, 48000, 32000, 0]], dtype=np.int64)


#: Times a damaged stream is resynchronised before the rest is given up.
_MAX_RESYNCS = 64


class NotMpegAudio(ValueError):
    """The bytes hold no consistent chain of MPEG audio frames (or a free-format stream)."""


@dataclass(frozen=True)
class MpegFrames:
    """The audio frames of an MPEG audio stream.

    Attributes
    ----------
    offsets : np.ndarray, int64, shape (n,)
        Byte offset of each audio frame (the Xing/Info frame, if any, left out).
    lengths : np.ndarray, int64, shape (n,)
        Byte length of each frame.
    main_data_begin : np.ndarray, int64, shape (n,)
        Layer III: bytes of the frame's main data that lie in earlier frames; 0 for Layer II.
    main_data_bytes : np.ndarray, int64, shape (n,)
        Layer III: bytes of main data the frame itself carries (its length less header, CRC and
        side information).
    samples_per_frame : int
        1152 (Layer II, MPEG-1 Layer III) or 576 (MPEG-2/2.5 Layer III).
    sample_rate_hz : int
    channels : int
    layer : int
    version : str
        ``"1"``, ``"2"`` or ``"2.5"``.
    skip : int
        Samples a decode from the start drops (encoder delay + :data:`DECODER_DELAY` when the
        stream has a LAME tag, else 0).
    length : int
        Samples of the stream after the gapless trimming, as the Xing header declares them
        (counted from the frames found when there is no header); a truncated file has fewer
        frames than that.
    """

    offsets: np.ndarray
    lengths: np.ndarray
    main_data_begin: np.ndarray
    main_data_bytes: np.ndarray
    samples_per_frame: int
    sample_rate_hz: int
    channels: int
    layer: int
    version: str
    skip: int
    length: int

    @property
    def n_frames(self) -> int:
        return int(self.offsets.shape[0])

    def preroll_frames(self, frame: int) -> int:
        """Frames to decode (and discard) before ``frame`` so that its output equals a decode
        from the start: the previous frame, decoded correctly, fills the IMDCT overlap and the
        synthesis filter; its bit reservoir and ``frame``'s reach back ``main_data_begin``
        bytes into earlier frames' main data. One more frame is added as a margin."""
        if frame <= 0:
            return 0
        need = 1
        for f, extra in ((frame, 0), (frame - 1, 1)):
            if f <= 0:
                continue
            back, k = int(self.main_data_begin[f]), 0
            while back > 0 and f - k - 1 >= 0:
                k += 1
                back -= int(self.main_data_bytes[f - k])
            need = max(need, k + extra)
        return min(frame, need + 1)


def _side_info_bytes(lsf: np.ndarray, mono: np.ndarray) -> np.ndarray:
    # MPEG-1: 17 (mono) / 32 bytes; MPEG-2/2.5: 9 / 17 bytes
    return np.where(lsf == 0, np.where(mono, 17, 32), np.where(mono, 9, 17))


def frame_index(data: bytes | bytearray | memoryview | np.ndarray, start: int = 0,
                end: int | None = None) -> MpegFrames:
    """Index the MPEG audio frames of ``data[start:end]`` (the span between the tags).

    Parameters
    ----------
    data : bytes-like
        The file's bytes (or a NumPy ``uint8`` view of them).
    start, end : int
        The audio span (after an ID3v2 tag, before ID3v1/APE tags).

    Returns
    -------
    MpegFrames

    Raises
    ------
    NotMpegAudio
        No chain of at least two consistent frames starts within the first 64 KiB of the span,
        a free-format bitrate, or Layer I (neither is indexed; callers fall back to another
        decoder).
    """
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data
    end = buf.shape[0] if end is None else min(end, buf.shape[0])
    b = buf[start:end]
    if b.shape[0] < 8:
        raise NotMpegAudio("too short for MPEG audio")
    cand = np.flatnonzero(b[:-3] == 0xFF)
    cand = cand[(b[cand + 1] & 0xE0) == 0xE0]
    h1, h2, h3 = b[cand + 1].astype(np.int64), b[cand + 2].astype(np.int64), b[cand + 3].astype(np.int64)
    version = (h1 >> 3) & 3
    layer_bits = (h1 >> 1) & 3
    protected = (h1 & 1) == 0
    br_index = h2 >> 4
    sr_index = (h2 >> 2) & 3
    padding = (h2 >> 1) & 1
    mono = (h3 >> 6) == 3
    ok = (version != 1) & (layer_bits != 0) & (br_index != 0) & (br_index != 15) & (sr_index != 3)
    cand, version, layer_bits, protected = cand[ok], version[ok], layer_bits[ok], protected[ok]
    br_index, sr_index, padding, mono = br_index[ok], sr_index[ok], padding[ok], mono[ok]
    if cand.shape[0] < 2:
        raise NotMpegAudio("no MPEG audio frame headers")
    layer = 4 - layer_bits
    lsf = (version != 3).astype(np.int64)
    bitrate = _BITRATES[lsf, layer - 1, br_index] * 1000
    rate = _RATES[version, sr_index]
    length = np.where(layer == 1, (12 * bitrate // rate + padding) * 4,
                      np.where((layer == 3) & (lsf == 1), 72 * bitrate // rate + padding,
                               144 * bitrate // rate + padding))
    # follow the chain: a frame is real when the next one starts where it ends
    nxt_pos = cand + length
    j = np.searchsorted(cand, nxt_pos)
    j_ok = j < cand.shape[0]
    linked = np.zeros(cand.shape[0], dtype=bool)
    linked[j_ok] = cand[j[j_ok]] == nxt_pos[j_ok]
    nxt = np.where(linked, j, -1)
    first = -1
    for i in np.flatnonzero(linked[: min(cand.shape[0], 4096)]):
        if cand[i] > 65536:
            break
        # two linked frames with the same version, layer and rate start the chain
        k = nxt[i]
        if (k >= 0 and version[k] == version[i] and layer[k] == layer[i]
                and sr_index[k] == sr_index[i]):
            first = int(i)
            break
    if first < 0:
        raise NotMpegAudio("no chain of MPEG audio frames")
    if layer[first] == 1:
        raise NotMpegAudio("MPEG Layer I is not indexed")
    # the chain from ``first`` by pointer doubling (vectorised): a frame ends the chain when
    # the next one is missing or changes version, layer or sample rate (a false sync)
    n_cand = cand.shape[0]
    same = np.zeros(n_cand, dtype=bool)
    has = nxt >= 0
    same[has] = ((version[nxt[has]] == version[first]) & (layer[nxt[has]] == layer[first])
                 & (sr_index[nxt[has]] == sr_index[first]))
    step = np.where(has & same, nxt, n_cand)  # n_cand: the end (a sink that stays put)
    step = np.append(step, n_cand)
    jumps = [step]
    while (1 << len(jumps)) <= n_cand:
        prev = jumps[-1]
        jumps.append(prev[prev])
    t = np.arange(n_cand + 1, dtype=np.int64)
    consistent = ((version == version[first]) & (layer == layer[first])
                  & (sr_index == sr_index[first]) & (step[:-1] < n_cand))

    def follow(start_node: int) -> np.ndarray:
        node = np.full(n_cand + 1, start_node, dtype=np.int64)
        for k, jump in enumerate(jumps):
            sel = (t >> k) & 1 == 1
            node[sel] = jump[node[sel]]
        stop = np.flatnonzero(node >= n_cand)  # increasing until it reaches the sink
        return node[: stop[0]] if stop.size else node

    pieces = [follow(first)]
    # damage (a corrupt header, a cut) ends a chain: resynchronise on the next frame that
    # starts a consistent pair, as decoders do, and go on (its samples follow on directly)
    for _ in range(_MAX_RESYNCS):
        last = int(pieces[-1][-1])
        after = int(cand[last] + length[last])
        i = int(np.searchsorted(cand, after))
        later = np.flatnonzero(consistent[i:])
        if later.size == 0:
            break
        pieces.append(follow(i + int(later[0])))
    chain = np.concatenate(pieces)
    last = int(chain[-1])
    if int(cand[last] + length[last]) > b.shape[0]:
        chain = chain[:-1]  # a truncated last frame
    v0, l0, s0 = int(version[first]), int(layer[first]), int(sr_index[first])
    offsets = cand[chain] + start
    lengths = length[chain]
    lsf0, mono0 = int(lsf[first]), bool(mono[first])
    side = int(_side_info_bytes(np.array([lsf0]), np.array([mono0]))[0]) if l0 == 3 else 0
    crc = protected[chain].astype(np.int64) * 2
    if l0 == 3:
        pos = cand[chain] + 4 + crc
        if lsf0 == 0:  # 9 bits
            mdb = (b[pos].astype(np.int64) << 1) | (b[pos + 1].astype(np.int64) >> 7)
        else:  # 8 bits
            mdb = b[pos].astype(np.int64)
        main_bytes = lengths - 4 - crc - side
    else:
        mdb = np.zeros_like(lengths)
        main_bytes = lengths - 4 - crc
    spf = 1152 if (l0 == 2 or lsf0 == 0) else 576
    rate0 = int(_RATES[v0, s0])
    channels = 1 if mono0 else 2
    # a Xing/Info (or VBRI) header frame is not audio; its LAME tag gives the gapless trim
    skip, pad, declared = 0, 0, None
    f0 = int(offsets[0]) - start
    xing_at = f0 + 4 + (side if l0 == 3 else 0)
    tag = bytes(b[xing_at:xing_at + 4])
    if l0 == 3 and tag in (b"Xing", b"Info"):
        flags = int.from_bytes(bytes(b[xing_at + 4:xing_at + 8]), "big")
        p = xing_at + 8
        if flags & 1:
            declared = int.from_bytes(bytes(b[p:p + 4]), "big")
            p += 4
        if flags & 2:
            p += 4
        if flags & 4:
            p += 100
        if flags & 8:
            p += 4
        encoder = bytes(b[p:p + 4])
        if encoder in (b"LAME", b"Lavf", b"Lavc"):
            v = int.from_bytes(bytes(b[p + 21:p + 24]), "big")
            skip = (v >> 12) + DECODER_DELAY
            pad = v & 0xFFF
        offsets, lengths, mdb, main_bytes = offsets[1:], lengths[1:], mdb[1:], main_bytes[1:]
    elif bytes(b[f0 + 36:f0 + 40]) == b"VBRI":
        offsets, lengths, mdb, main_bytes = offsets[1:], lengths[1:], mdb[1:], main_bytes[1:]
    n = int(offsets.shape[0])
    if n == 0:
        raise NotMpegAudio("no MPEG audio frames after the header frame")
    # the length the header declares (a truncated file holds fewer frames: reads past them
    # come back short, which the caller reports)
    frames = declared if declared else n
    total = frames * spf - (skip - DECODER_DELAY if skip else 0) - pad
    total = min(total, frames * spf - skip)  # a decoder cannot give more than the frames hold
    return MpegFrames(offsets, lengths, mdb, main_bytes, spf, rate0, channels, l0,
                      {3: "1", 2: "2", 0: "2.5"}[v0], skip, max(0, int(total)))


def _syncsafe(b: bytes) -> int:
    return (b[0] & 0x7F) << 21 | (b[1] & 0x7F) << 14 | (b[2] & 0x7F) << 7 | (b[3] & 0x7F)


def tag_span(fh, size: int) -> tuple[int, int]:
    """Byte range ``[start, end)`` of an MP3 file without its ID3v2, APEv2, Lyrics3 and ID3v1 tags.

    Tag layouts: ID3v2.4 section 3.1 (10-byte header, syncsafe size, footer flag 0x10 adds a
    10-byte footer; an appended tag ends with a ``3DI`` footer), APEv2 (32-byte ``APETAGEX``
    footer whose size counts the items and the footer; flag bit 31 adds a 32-byte header),
    Lyrics3v2 (``LYRICS200`` preceded by a 6-digit size) and ID3v1 (the last 128 bytes start
    with ``TAG``).
    """
    start = 0
    while start + 10 <= size:  # one or more ID3v2 tags at the start
        fh.seek(start)
        head = fh.read(10)
        if head[:3] != b"ID3" or head[3] == 0xFF or head[4] == 0xFF:
            break
        start += 10 + _syncsafe(head[6:10]) + (10 if head[5] & 0x10 else 0)
    end = size
    tail_len = min(size, 128 + 32 + 32 + 15 + 1024)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    changed = True
    while changed and end > start:
        changed = False
        rel = end - (size - tail_len)  # position of ``end`` in ``tail``
        if rel >= 128 and tail[rel - 128:rel - 125] == b"TAG":
            end -= 128
            changed = True
            continue
        if rel >= 32 and tail[rel - 32:rel - 24] == b"APETAGEX":
            ape_size = int.from_bytes(tail[rel - 20:rel - 16], "little")
            flags = int.from_bytes(tail[rel - 12:rel - 8], "little")
            end -= ape_size + (32 if flags & 0x80000000 else 0)
            changed = True
        elif rel >= 15 and tail[rel - 9:rel] == b"LYRICS200" and tail[rel - 15:rel - 9].isdigit():
            end -= int(tail[rel - 15:rel - 9]) + 15
            changed = True
        elif rel >= 10 and tail[rel - 10:rel - 7] == b"3DI":
            end -= 20 + _syncsafe(tail[rel - 4:rel])
            changed = True
        if changed and end < size - tail_len:  # a tag larger than the tail we read: stop
            break
    return start, max(start, end)


def looks_like_mp3(path: str, head: bytes) -> bool:
    """Whether a file is worth indexing as MP3: an ID3v2 tag, an MP3 name or a frame sync."""
    import os

    if head[:3] == b"ID3":
        return True
    if os.path.splitext(path)[1].lower() in (".mp3", ".mp2", ".mpga"):
        return True
    return len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0


def read_if_mp3(path: str) -> tuple[bytes, tuple[int, int]] | None:
    """The bytes of ``path`` and their audio span (:func:`tag_span`) when the file looks like
    MP3 (:func:`looks_like_mp3`), else None; whether the frames really chain is for
    :func:`frame_index` to say.

    Raises
    ------
    AudioError
        The file cannot be read, or changed while it was read.
    """
    import io
    import os

    from deejai.engine.errors import AudioError

    try:
        with open(path, "rb") as fh:
            if not looks_like_mp3(path, fh.read(10)):
                return None
            size = os.fstat(fh.fileno()).st_size
            fh.seek(0)
            data = fh.read()
    except PermissionError:
        raise AudioError(path, "permission denied") from None
    except OSError as exc:
        raise AudioError(path, f"cannot read: {exc.strerror or exc}") from None
    if len(data) < size:
        raise AudioError(path, "the file changed while it was read")
    return data, tag_span(io.BytesIO(data), len(data))
