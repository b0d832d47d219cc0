package android.view;

/** Signature stub (see ../../README.md). */
public class Surface {
}
