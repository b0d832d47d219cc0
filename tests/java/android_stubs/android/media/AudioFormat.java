package android.media;

/** Signature stub (see ../../README.md): the constants of android.media.AudioFormat used. */
public final class AudioFormat {
    public static final int ENCODING_PCM_16BIT = 2;
    public static final int ENCODING_PCM_FLOAT = 4;
}
