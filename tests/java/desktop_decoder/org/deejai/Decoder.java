package org.deejai;

import java.io.File;
import java.io.IOException;
import java.nio.ByteBuffer;

import javax.sound.sampled.AudioFormat;
import javax.sound.sampled.AudioInputStream;
import javax.sound.sampled.AudioSystem;
import javax.sound.sampled.UnsupportedAudioFileException;

/**
 * A desktop stand-in for {@code ui_kivy/java/org/deejai/Decoder.java} with the same public
 * methods (the test compares both classes' signatures with javap), for 16-bit PCM WAV files
 * read by javax.sound. It lets the engine's pyjnius seam ({@code JavaDecoder}) and the real
 * {@link PcmWindow} run on a desktop JVM. Like MediaCodec it hands out output buffers of
 * {@code BUFFER_FRAMES} frames stamped with presentation times, and like
 * {@code MediaExtractor.seekTo(SEEK_TO_PREVIOUS_SYNC)} it seeks to the "sync sample" at or
 * before the target (every {@code SYNC_FRAMES} frames), so a window needs a pre-roll.
 */
public final class Decoder {
    static final int BUFFER_FRAMES = 1000;
    static final int SYNC_FRAMES = 4096;

    private final byte[] pcm;
    private final int sampleRate;
    private final int channels;
    private final long frames;
    private PcmWindow window;

    public Decoder(String path) throws IOException {
        try (AudioInputStream in = AudioSystem.getAudioInputStream(new File(path))) {
            AudioFormat f = in.getFormat();
            if (f.getEncoding() != AudioFormat.Encoding.PCM_SIGNED || f.getSampleSizeInBits() != 16
                    || f.isBigEndian()) {
                throw new IOException("only 16-bit little-endian PCM WAV: " + f);
            }
            sampleRate = (int) f.getSampleRate();
            channels = f.getChannels();
            pcm = in.readAllBytes();
            frames = pcm.length / (2L * channels);
        } catch (UnsupportedAudioFileException e) {
            throw new IOException("not a WAV file: " + path, e);
        }
    }

    public String mime() {
        return "audio/raw";
    }

    public int sampleRate() {
        return sampleRate;
    }

    public int channels() {
        return channels;
    }

    public long durationUs() {
        return frames * 1_000_000L / sampleRate;
    }

    public int encoderDelay() {
        return 0;
    }

    public int encoderPadding() {
        return 0;
    }

    public String codecName() {
        return "desktop.wav.decoder";
    }

    public int decodeRange(long startSample, long stopSample, long prerollUs) {
        window = new PcmWindow(sampleRate, startSample, (int) (stopSample - startSample));
        long target = Math.max(0L, startSample - prerollUs * sampleRate / 1_000_000L);
        long at = (target / SYNC_FRAMES) * SYNC_FRAMES;  // the sync sample before the target
        int frameBytes = 2 * channels;
        while (at < frames && !window.isFull()) {
            int n = (int) Math.min(BUFFER_FRAMES, frames - at);
            ByteBuffer buf = ByteBuffer.wrap(pcm, (int) (at * frameBytes), n * frameBytes).slice();
            window.write(buf, 0, n * frameBytes, PcmWindow.timeOf(at, sampleRate), channels,
                         PcmWindow.ENCODING_PCM_16BIT);
            at += n;
        }
        return window.count();
    }

    public int decodePackets(byte[] data, int[] sizes, long[] ptsUs, long startSample,
                             long stopSample) {
        if (sizes.length != ptsUs.length) {
            throw new IllegalArgumentException("sizes and ptsUs differ in length");
        }
        window = new PcmWindow(sampleRate, startSample, (int) (stopSample - startSample));
        int at = 0;
        for (int i = 0; i < sizes.length && !window.isFull(); i++) {  // a packet decodes to itself
            window.write(ByteBuffer.wrap(data, at, sizes[i]).slice(), 0, sizes[i], ptsUs[i],
                         channels, PcmWindow.ENCODING_PCM_16BIT);
            at += sizes[i];
        }
        return window.count();
    }

    public byte[] samples() {
        return window == null ? new byte[0] : window.toBytes();
    }

    public void close() {
    }
}
