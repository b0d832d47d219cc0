package android.media;

/** Signature stub (see ../../README.md). */
public final class MediaCrypto {
}
