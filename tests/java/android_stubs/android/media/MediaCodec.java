package android.media;

import android.view.Surface;

import java.io.IOException;
import java.nio.ByteBuffer;

/** Signature stub (see ../../README.md). */
public final class MediaCodec {
    public static final int BUFFER_FLAG_END_OF_STREAM = 4;
    public static final int INFO_TRY_AGAIN_LATER = -1;
    public static final int INFO_OUTPUT_FORMAT_CHANGED = -2;
    public static final int INFO_OUTPUT_BUFFERS_CHANGED = -3;

    public static final class BufferInfo {
        public int flags;
        public int offset;
        public long presentationTimeUs;
        public int size;

        public BufferInfo() { }
    }

    private MediaCodec() { }

    public static MediaCodec createDecoderByType(String type) throws IOException { throw new RuntimeException("stub"); }
    public void configure(MediaFormat format, Surface surface, MediaCrypto crypto, int flags) { throw new RuntimeException("stub"); }
    public void configure(MediaFormat format, Surface surface, int flags, MediaDescrambler descrambler) { throw new RuntimeException("stub"); }
    public void start() { throw new RuntimeException("stub"); }
    public void stop() { throw new RuntimeException("stub"); }
    public void flush() { throw new RuntimeException("stub"); }
    public void reset() { throw new RuntimeException("stub"); }
    public void release() { throw new RuntimeException("stub"); }
    public String getName() { throw new RuntimeException("stub"); }
    public int dequeueInputBuffer(long timeoutUs) { throw new RuntimeException("stub"); }
    public ByteBuffer getInputBuffer(int index) { throw new RuntimeException("stub"); }
    public void queueInputBuffer(int index, int offset, int size, long presentationTimeUs, int flags) { throw new RuntimeException("stub"); }
    public int dequeueOutputBuffer(BufferInfo info, long timeoutUs) { throw new RuntimeException("stub"); }
    public ByteBuffer getOutputBuffer(int index) { throw new RuntimeException("stub"); }
    public void releaseOutputBuffer(int index, boolean render) { throw new RuntimeException("stub"); }
    public MediaFormat getOutputFormat() { throw new RuntimeException("stub"); }
}
