package android.media;

import java.nio.ByteBuffer;

/** Signature stub (see ../../README.md). */
public final class MediaFormat {
    public static final String KEY_MIME = "mime";
    public static final String KEY_SAMPLE_RATE = "sample-rate";
    public static final String KEY_CHANNEL_COUNT = "channel-count";
    public static final String KEY_DURATION = "durationUs";
    public static final String KEY_PCM_ENCODING = "pcm-encoding";

    public MediaFormat() { throw new RuntimeException("stub"); }
    public boolean containsKey(String name) { throw new RuntimeException("stub"); }
    public int getInteger(String name) { throw new RuntimeException("stub"); }
    public long getLong(String name) { throw new RuntimeException("stub"); }
    public String getString(String name) { throw new RuntimeException("stub"); }
    public ByteBuffer getByteBuffer(String name) { throw new RuntimeException("stub"); }
    public void setInteger(String name, int value) { throw new RuntimeException("stub"); }
    public void setString(String name, String value) { throw new RuntimeException("stub"); }
}
