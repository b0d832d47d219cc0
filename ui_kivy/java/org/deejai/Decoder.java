package org.deejai;

import android.media.AudioFormat;
import android.media.MediaCodec;
import android.media.MediaExtractor;
import android.media.MediaFormat;

import java.io.IOException;
import java.nio.ByteBuffer;

/**
 * Decodes windows of one audio file with the platform's decoders (MediaExtractor + MediaCodec)
 * for deejai's Python engine ({@code deejai/engine/decode/android.py}), which drives it through
 * pyjnius.
 *
 * <p>Two ways in:
 * <ul>
 * <li>{@link #decodeRange}: seek the extractor to {@code SEEK_TO_PREVIOUS_SYNC} before the window
 *     (less a pre-roll), feed the codec from there and keep what lands in the window, placed by
 *     the output buffers' presentation times ({@link PcmWindow}). For FLAC, Vorbis, Opus, AAC,
 *     WAV, and MP3 files the engine cannot index.</li>
 * <li>{@link #decodePackets}: the engine passes the compressed packets itself (MP3 frames from its
 *     own frame index, with their timestamps), so windows are placed exactly even in VBR files,
 *     where MediaExtractor's seek is only as exact as the Xing table of contents.</li>
 * </ul>
 * Either way the result stays here until {@link #samples} hands it over in one byte array
 * (little-endian float32 mono): one JNI call per window.
 *
 * <p>Android API 21+ ({@code getInputBuffer}/{@code getOutputBuffer}); float output is asked for
 * with {@code KEY_PCM_ENCODING} (API 24+) and 16-bit output is read as well where a decoder
 * ignores the request. Written against the documented API; it has not run on a device yet.
 */
public final class Decoder {
    /** Microseconds {@code dequeueInputBuffer}/{@code dequeueOutputBuffer} wait. */
    private static final long TIMEOUT_US = 10_000L;
    /** Consecutive empty waits after the end of input before the decoder is given up on. */
    private static final int MAX_IDLE = 200;
    /** Seconds fed past the window's end before input stops (codec latency). */
    private static final long TAIL_US = 200_000L;

    private final MediaExtractor extractor;
    private final int track;
    private final String mime;
    private final int sampleRate;
    private final int channels;
    private final long durationUs;
    private final int encoderDelay;
    private final int encoderPadding;
    private MediaCodec codec;
    private int outChannels;
    private int outEncoding = PcmWindow.ENCODING_PCM_16BIT;
    private int outRate;
    private PcmWindow window;

    /**
     * Open {@code path} and prepare a decoder for its first audio track.
     *
     * @throws IOException when the file cannot be read, has no audio track, or no decoder here
     *     decodes its format
     */
    public Decoder(String path) throws IOException {
        extractor = new MediaExtractor();
        MediaFormat found = null;
        int index = -1;
        try {
            extractor.setDataSource(path);
            for (int i = 0; i < extractor.getTrackCount(); i++) {
                MediaFormat f = extractor.getTrackFormat(i);
                String m = f.getString(MediaFormat.KEY_MIME);
                if (m != null && m.startsWith("audio/")) {
                    extractor.selectTrack(i);
                    found = f;
                    index = i;
                    break;
                }
            }
        } catch (IOException | RuntimeException e) {
            extractor.release();
            throw new IOException("cannot read " + path + ": " + e.getMessage(), e);
        }
        if (found == null) {
            extractor.release();
            throw new IOException("no audio track in " + path);
        }
        track = index;
        MediaFormat format = found;
        mime = format.getString(MediaFormat.KEY_MIME);
        sampleRate = format.getInteger(MediaFormat.KEY_SAMPLE_RATE);
        channels = format.getInteger(MediaFormat.KEY_CHANNEL_COUNT);
        durationUs = format.containsKey(MediaFormat.KEY_DURATION)
                ? format.getLong(MediaFormat.KEY_DURATION) : -1L;
        // "encoder-delay"/"encoder-padding": gapless trim (LAME tag, MP4 edit list), where the
        // extractor found it (MediaFormat.KEY_ENCODER_DELAY names the same key from API 30)
        encoderDelay = format.containsKey("encoder-delay") ? format.getInteger("encoder-delay") : 0;
        encoderPadding = format.containsKey("encoder-padding")
                ? format.getInteger("encoder-padding") : 0;
        outChannels = channels;
        outRate = sampleRate;
        try {
            codec = MediaCodec.createDecoderByType(mime);
            start();
        } catch (IOException | RuntimeException e) {
            if (codec != null) {
                codec.release();
                codec = null;
            }
            extractor.release();
            throw new IOException("no decoder for " + mime + ": " + e.getMessage(), e);
        }
    }

    /** Configure and start the codec, asking for float output (16-bit where it refuses). */
    private void start() {
        try {
            MediaFormat f = extractor.getTrackFormat(track);
            f.setInteger(MediaFormat.KEY_PCM_ENCODING, AudioFormat.ENCODING_PCM_FLOAT);
            codec.configure(f, null, null, 0);
        } catch (RuntimeException floatRefused) {
            codec.reset();
            codec.configure(extractor.getTrackFormat(track), null, null, 0);
        }
        codec.start();
    }

    public String mime() {
        return mime;
    }

    public int sampleRate() {
        return sampleRate;
    }

    public int channels() {
        return channels;
    }

    /** The track's duration in microseconds, -1 when the file does not say. */
    public long durationUs() {
        return durationUs;
    }

    public int encoderDelay() {
        return encoderDelay;
    }

    public int encoderPadding() {
        return encoderPadding;
    }

    /** The decoder's component name (e.g. {@code c2.android.mp3.decoder}). */
    public String codecName() {
        return codec.getName();
    }

    /**
     * Decode stream samples {@code [startSample, stopSample)} by seeking the extractor.
     *
     * @param prerollUs decoded before the window and thrown away (codec settling)
     * @return samples now held ({@link #samples}); fewer than asked where the stream ends
     */
    public int decodeRange(long startSample, long stopSample, long prerollUs) {
        window = new PcmWindow(sampleRate, startSample, (int) (stopSample - startSample));
        long startUs = PcmWindow.timeOf(startSample, sampleRate);
        long stopUs = PcmWindow.timeOf(stopSample, sampleRate);
        long seekUs = Math.max(0L, startUs - prerollUs);
        extractor.seekTo(seekUs, MediaExtractor.SEEK_TO_PREVIOUS_SYNC);
        // an inexact seek can land after the target: step back until it lands before it
        for (int tries = 0; tries < 8 && seekUs > 0; tries++) {
            long at = extractor.getSampleTime();
            if (at < 0 || at <= Math.max(0L, startUs - prerollUs)) {
                break;
            }
            seekUs = Math.max(0L, seekUs - 2 * (at - seekUs) - prerollUs);
            extractor.seekTo(seekUs, MediaExtractor.SEEK_TO_PREVIOUS_SYNC);
        }
        codec.flush();
        final long feedUntilUs = stopUs + TAIL_US;
        run(new Feed() {
            @Override
            public long next(ByteBuffer buf) {
                long t = extractor.getSampleTime();
                if (t < 0 || t > feedUntilUs) {
                    return -1L;
                }
                int n = extractor.readSampleData(buf, 0);
                if (n < 0) {
                    return -1L;
                }
                buf.limit(n);
                extractor.advance();
                return t;
            }
        });
        return window.count();
    }

    /**
     * Decode packets the caller cut from the file (MP3 frames), each with its presentation time.
     *
     * @param data the packets, back to back
     * @param sizes byte length of each packet
     * @param ptsUs presentation time of each packet (microseconds)
     * @return samples now held ({@link #samples})
     */
    public int decodePackets(byte[] data, int[] sizes, long[] ptsUs, long startSample,
                             long stopSample) {
        if (sizes.length != ptsUs.length) {
            throw new IllegalArgumentException("sizes and ptsUs differ in length");
        }
        window = new PcmWindow(sampleRate, startSample, (int) (stopSample - startSample));
        codec.flush();
        final byte[] bytes = data;
        final int[] lens = sizes;
        final long[] times = ptsUs;
        run(new Feed() {
            private int i;
            private int at;

            @Override
            public long next(ByteBuffer buf) {
                if (i >= lens.length) {
                    return -1L;
                }
                buf.put(bytes, at, lens[i]);
                buf.flip();
                at += lens[i];
                return times[i++];
            }
        });
        return window.count();
    }

    /** The decoded window as little-endian float32 mono, {@code 4 * count()} bytes. */
    public byte[] samples() {
        return window == null ? new byte[0] : window.toBytes();
    }

    /** Where the input of one decode comes from. */
    private interface Feed {
        /** Fill {@code buf} (position 0 .. limit) with one packet; its time, or -1 at the end. */
        long next(ByteBuffer buf);
    }

    private void run(Feed feed) {
        MediaCodec.BufferInfo info = new MediaCodec.BufferInfo();
        boolean inputDone = false;
        int idle = 0;
        while (true) {
            if (!inputDone) {
                int in = codec.dequeueInputBuffer(TIMEOUT_US);
                if (in >= 0) {
                    ByteBuffer buf = codec.getInputBuffer(in);
                    buf.clear();
                    long pts = feed.next(buf);
                    if (pts < 0 || window.isFull()) {
                        codec.queueInputBuffer(in, 0, 0, 0L, MediaCodec.BUFFER_FLAG_END_OF_STREAM);
                        inputDone = true;
                    } else {
                        codec.queueInputBuffer(in, 0, buf.limit(), pts, 0);
                    }
                }
            }
            int out = codec.dequeueOutputBuffer(info, TIMEOUT_US);
            if (out >= 0) {
                idle = 0;
                if (info.size > 0) {
                    ByteBuffer ob = codec.getOutputBuffer(out);
                    window.write(ob, info.offset, info.size, info.presentationTimeUs,
                                 outChannels, outEncoding);
                }
                codec.releaseOutputBuffer(out, false);
                if ((info.flags & MediaCodec.BUFFER_FLAG_END_OF_STREAM) != 0 || window.isFull()) {
                    return;
                }
            } else if (out == MediaCodec.INFO_OUTPUT_FORMAT_CHANGED) {
                MediaFormat f = codec.getOutputFormat();
                outChannels = f.getInteger(MediaFormat.KEY_CHANNEL_COUNT);
                outRate = f.getInteger(MediaFormat.KEY_SAMPLE_RATE);
                outEncoding = f.containsKey(MediaFormat.KEY_PCM_ENCODING)
                        ? f.getInteger(MediaFormat.KEY_PCM_ENCODING) : PcmWindow.ENCODING_PCM_16BIT;
                if (outRate != sampleRate) {  // e.g. HE-AAC whose header gave the core rate
                    throw new IllegalStateException("the decoder gives " + outRate
                            + " Hz, the track says " + sampleRate + " Hz");
                }
            } else if (out == MediaCodec.INFO_TRY_AGAIN_LATER && inputDone && ++idle > MAX_IDLE) {
                return;  // a decoder that never signals the end of the stream
            }
        }
    }

    /** Release the decoder and the file. */
    public void close() {
        if (codec != null) {
            try {
                codec.stop();
            } catch (IllegalStateException ignored) {
                // not started, or already in an error state
            }
            codec.release();
            codec = null;
        }
        extractor.release();
    }
}
