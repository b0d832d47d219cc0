package android.media;

import java.io.IOException;
import java.nio.ByteBuffer;

/** Signature stub (see ../../README.md). */
public final class MediaExtractor {
    public static final int SEEK_TO_PREVIOUS_SYNC = 0;
    public static final int SEEK_TO_NEXT_SYNC = 1;
    public static final int SEEK_TO_CLOSEST_SYNC = 2;

    public MediaExtractor() { throw new RuntimeException("stub"); }
    public void setDataSource(String path) throws IOException { throw new RuntimeException("stub"); }
    public int getTrackCount() { throw new RuntimeException("stub"); }
    public MediaFormat getTrackFormat(int index) { throw new RuntimeException("stub"); }
    public void selectTrack(int index) { throw new RuntimeException("stub"); }
    public void seekTo(long timeUs, int mode) { throw new RuntimeException("stub"); }
    public long getSampleTime() { throw new RuntimeException("stub"); }
    public int readSampleData(ByteBuffer byteBuf, int offset) { throw new RuntimeException("stub"); }
    public boolean advance() { throw new RuntimeException("stub"); }
    public void release() { throw new RuntimeException("stub"); }
}
