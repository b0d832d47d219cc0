package org.deejai;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.FloatBuffer;
import java.nio.ShortBuffer;

/**
 * One window of mono float samples, filled from decoded PCM buffers placed by their timestamps.
 *
 * <p>A decoder hands over interleaved 16-bit or float PCM buffers, each with the presentation
 * time of its first frame. {@link #write} mixes every buffer to mono (the channel mean) and
 * places it at sample {@code round(ptsUs * sampleRate / 1e6)} of the stream; only the part that
 * falls into {@code [start, start + length)} is kept. Buffers that lie before the window are the
 * pre-roll a seek needs and are dropped; {@link #isFull} says when the window has everything.
 * {@link #toBytes} then returns the window in one array (little-endian float32), so the Python
 * side crosses JNI once per window, never once per sample.
 *
 * <p>Pure Java (no Android classes): compiled and tested on a desktop JVM.
 */
public final class PcmWindow {
    /** {@code android.media.AudioFormat.ENCODING_PCM_16BIT}. */
    public static final int ENCODING_PCM_16BIT = 2;
    /** {@code android.media.AudioFormat.ENCODING_PCM_FLOAT}. */
    public static final int ENCODING_PCM_FLOAT = 4;

    private final int sampleRate;
    private final long start;
    private final float[] samples;
    private int end;          // one past the last sample written, relative to start
    private boolean reachedEnd;
    private float[] scratch = new float[0];

    /**
     * @param sampleRate samples per second of the decoded stream (Hz), &gt; 0
     * @param start first stream sample of the window
     * @param length samples in the window, &gt;= 0
     */
    public PcmWindow(int sampleRate, long start, int length) {
        if (sampleRate <= 0) {
            throw new IllegalArgumentException("sample rate must be positive: " + sampleRate);
        }
        if (length < 0) {
            throw new IllegalArgumentException("window length must be >= 0: " + length);
        }
        this.sampleRate = sampleRate;
        this.start = start;
        this.samples = new float[length];
    }

    /** The stream sample at presentation time {@code ptsUs}, rounded to the nearest sample. */
    public long sampleAt(long ptsUs) {
        return Math.floorDiv(ptsUs * sampleRate + 500_000L, 1_000_000L);
    }

    /** Presentation time (microseconds, rounded down) of stream sample {@code sample}. */
    public static long timeOf(long sample, int sampleRate) {
        return Math.floorDiv(sample * 1_000_000L, sampleRate);
    }

    /**
     * Mix a buffer of interleaved PCM to mono and place it by its timestamp.
     *
     * @param buf the decoder's output buffer (its position and limit are left alone)
     * @param offset byte offset of the PCM in {@code buf}
     * @param size bytes of PCM
     * @param ptsUs presentation time of the buffer's first frame (microseconds)
     * @param channels interleaved channels, &gt; 0
     * @param encoding {@link #ENCODING_PCM_16BIT} or {@link #ENCODING_PCM_FLOAT}
     * @return samples of this buffer that fell into the window
     */
    public int write(ByteBuffer buf, int offset, int size, long ptsUs, int channels, int encoding) {
        if (channels <= 0) {
            throw new IllegalArgumentException("channels must be positive: " + channels);
        }
        int width;
        if (encoding == ENCODING_PCM_16BIT) {
            width = 2;
        } else if (encoding == ENCODING_PCM_FLOAT) {
            width = 4;
        } else {
            throw new IllegalArgumentException("unsupported PCM encoding " + encoding);
        }
        int frames = size / (width * channels);
        long first = sampleAt(ptsUs) - start;  // window index of the buffer's first frame
        if (first >= samples.length) {
            reachedEnd = true;
            return 0;
        }
        long lo = Math.max(0, first);
        long hi = Math.min(samples.length, first + frames);
        if (hi <= lo) {
            return 0;
        }
        ByteBuffer b = buf.duplicate().order(ByteOrder.nativeOrder());
        b.limit(offset + frames * width * channels);
        b.position(offset);
        int skip = (int) (lo - first);  // frames of the buffer before the window
        int count = (int) (hi - lo);
        int n = count * channels;
        if (scratch.length < n) {
            scratch = new float[n];
        }
        if (encoding == ENCODING_PCM_16BIT) {
            ShortBuffer s = b.asShortBuffer();
            s.position(skip * channels);
            for (int i = 0; i < n; i++) {
                scratch[i] = s.get() / 32768f;
            }
        } else {
            FloatBuffer f = b.asFloatBuffer();
            f.position(skip * channels);
            f.get(scratch, 0, n);
        }
        int at = (int) lo;
        if (channels == 1) {
            System.arraycopy(scratch, 0, samples, at, count);
        } else {
            float scale = 1f / channels;
            for (int i = 0; i < count; i++) {
                float sum = 0f;
                int base = i * channels;
                for (int c = 0; c < channels; c++) {
                    sum += scratch[base + c];
                }
                samples[at + i] = sum * scale;
            }
        }
        end = Math.max(end, (int) hi);
        if (hi >= samples.length) {
            reachedEnd = true;
        }
        return count;
    }

    /** True once a sample at or after the window's end has arrived (nothing more is needed). */
    public boolean isFull() {
        return reachedEnd;
    }

    /** Samples from the window's start to the last one written (gaps inside read as zeros). */
    public int count() {
        return end;
    }

    /** The window's length in samples. */
    public int length() {
        return samples.length;
    }

    /** First stream sample of the window. */
    public long start() {
        return start;
    }

    /** Samples {@code [0, count())} of the window as little-endian float32, in one array. */
    public byte[] toBytes() {
        ByteBuffer out = ByteBuffer.allocate(4 * end).order(ByteOrder.LITTLE_ENDIAN);
        out.asFloatBuffer().put(samples, 0, end);
        return out.array();
    }
}
