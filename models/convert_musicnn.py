"""Convert musicnn ``MSD_musicnn`` (TensorFlow 1 checkpoint) to the TFLite model deejai ships.

This is a build-time tool; nothing in deejai imports it. It needs the ``convert`` extra
(``pip install -e '.[convert]'``: tensorflow, tf-keras, librosa) plus the ``musicnn`` wheel from
PyPI installed **without its dependencies** (its pins, e.g. ``numpy<1.17``, are obsolete)::

    pip install -e '.[convert]'
    pip install --no-deps musicnn==0.1.0
    python models/convert_musicnn.py            # writes models/msd-musicnn/
    python models/convert_musicnn.py --out /some/folder --check

What it does
------------
1. Rebuilds the TF1 graph with musicnn's own ``musicnn.models.define_model(x, is_training,
   "MSD_musicnn", 50)`` (the wheel's ``models.py``; ``TF_USE_LEGACY_KERAS=1`` makes
   ``tf.compat.v1.layers`` resolve to tf-keras' legacy layers, which is all TF 2 removed), with
   ``is_training=False`` as a Python constant so batch normalisation uses its moving statistics
   and dropout is the identity.
2. Restores the checkpoint shipped inside the wheel (``musicnn/MSD_musicnn/``, prefix ``""``).
3. Names two outputs exactly as musicnn's ``extractor.extractor`` defines them:
   ``embedding`` = its ``penultimate`` feature (``bn_dense`` in ``models.backend``: the 200-unit
   ReLU dense layer after its batch normalisation) and ``tags`` = ``tf.nn.sigmoid(logits)``
   (the extractor's ``normalized_y``, the 50 MSD tag probabilities).
4. Freezes the variables and converts the session to a float32 TFLite flatbuffer (no
   quantisation, no optimisations) with input ``patches`` of shape ``(batch, 187, 96)``; the
   batch dimension is dynamic (shape signature ``-1``; resize the input tensor before
   ``allocate_tensors``).
5. Computes reference outputs with the TensorFlow session on fixed inputs and writes them to
   ``golden.npz``; checks the TFLite model against them; writes ``card.json`` and the sha256.

Reproducibility: with the same TensorFlow and musicnn versions a rerun writes a byte-identical
``model.tflite`` (``--check`` converts twice and compares the bytes and the outputs).

Reference
---------
J. Pons and X. Serra, "musicnn: pre-trained convolutional neural networks for music audio
tagging", Late-breaking/demo session, ISMIR 2019. https://github.com/jordipons/musicnn (ISC).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

# Must be set before TensorFlow is imported: tf.compat.v1.layers then maps to tf-keras' legacy
# layers (Keras 3 dropped them).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

MODEL_NAME = "msd-musicnn"
MUSICNN_MODEL = "MSD_musicnn"
N_FRAMES = 187
N_MELS = 96
SAMPLE_RATE = 16000
N_FFT = 512
HOP = 256
INPUT_NAME = "patches"
OUTPUT_NAMES = ("embedding", "tags")
#: Golden inputs: seeds of the pseudo-random patches and of the synthesised signal.
GOLDEN_SEED = 20190701
SIGNAL_SECONDS = 4.0

CITATION = (
    'Jordi Pons and Xavier Serra, "musicnn: pre-trained convolutional neural networks for music '
    'audio tagging", Late-breaking/demo session of the 20th International Society for Music '
    "Information Retrieval Conference (ISMIR), Delft, 2019. arXiv:1909.06654."
)


def _musicnn():
    """Import the musicnn wheel's modules (``models``, ``configuration``) and its folder."""
    try:
        from musicnn import configuration, models
    except ImportError as exc:  # pragma: no cover - tool usage error
        sys.exit(f"musicnn is not importable ({exc}); run: pip install --no-deps musicnn==0.1.0")
    import importlib.metadata as md

    return models, configuration, Path(models.__file__).resolve().parent, md.version("musicnn")


def build_graph(models, n_classes: int):
    """Build the MSD_musicnn inference graph in the current default graph.

    Returns
    -------
    x : tf.Tensor
        Placeholder ``patches`` float32 ``(None, 187, 96)``.
    embedding, tags : tf.Tensor
        ``(None, 200)`` penultimate features and ``(None, 50)`` sigmoid probabilities.
    """
    import tensorflow as tf

    x = tf.compat.v1.placeholder(tf.float32, [None, N_FRAMES, N_MELS], name=INPUT_NAME)
    outs = models.define_model(x, False, MUSICNN_MODEL, n_classes)
    logits, penultimate = outs[0], outs[-1]
    embedding = tf.identity(penultimate, name=OUTPUT_NAMES[0])
    tags = tf.identity(tf.nn.sigmoid(logits), name=OUTPUT_NAMES[1])
    return x, embedding, tags


def reference_log_mel(audio: np.ndarray) -> np.ndarray:
    """Log-mel as ``musicnn.extractor.batch_data`` computes it, but in float32.

    Parameters
    ----------
    audio : ndarray, float32, shape (n,)
        Mono signal at 16 kHz.

    Returns
    -------
    ndarray, float32, shape (frames, 96)
        ``log10(10000 * mel + 1)`` where ``mel`` is librosa's power mel spectrogram (n_fft 512,
        hop 256, 96 Slaney bands, Hann window, centred frames).

    Notes
    -----
    musicnn's extractor casts ``mel`` to float16 and then evaluates ``10000 * mel`` in float16,
    which overflows to ``inf`` wherever ``mel > 6.55`` (a full-scale sine reaches ~500) and the
    network then returns NaN. deejai keeps float32 throughout; below that level the two agree to
    float16 precision (~1e-3 in the log domain).
    """
    import librosa

    mel = librosa.feature.melspectrogram(
        y=audio, sr=SAMPLE_RATE, hop_length=HOP, n_fft=N_FFT, n_mels=N_MELS
    ).T
    return np.log10(10000 * mel.astype(np.float32) + 1).astype(np.float32)


def synth_signal(seed: int, seconds: float) -> np.ndarray:
    """A deterministic 16 kHz test signal: a decaying chord progression, a kick and hi-hat noise."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    out = np.zeros(n, dtype=np.float64)
    chords = [(220.0, 277.18, 329.63), (196.0, 246.94, 293.66)]
    beat = 0.5  # 120 bpm
    for i in range(int(seconds / beat)):
        start = int(i * beat * SAMPLE_RATE)
        seg = t[: n - start]
        env = np.exp(-seg * 3.0)
        for f in chords[(i // 4) % 2]:
            out[start:] += 0.12 * env * np.sin(2 * np.pi * f * seg) * (seg < beat * 2)
        kick = np.exp(-seg * 30.0) * np.sin(2 * np.pi * (50 + 80 * np.exp(-seg * 40)) * seg)
        out[start:] += 0.5 * kick * (seg < 0.25)
        hat_start = start + int(beat / 2 * SAMPLE_RATE)
        if hat_start < n:
            m = min(n - hat_start, 800)
            out[hat_start : hat_start + m] += 0.08 * rng.standard_normal(m) * np.exp(-np.arange(m) / 150)
    return (out / max(1.0, np.abs(out).max())).astype(np.float32)


def golden_inputs(seed: int = GOLDEN_SEED) -> dict[str, np.ndarray]:
    """The fixed inputs ``golden.npz`` stores.

    Returns
    -------
    dict
        ``patches`` float32 ``(4, 187, 96)``: two pseudo-random log-mel-like patches (power
        spectra with a spectral tilt drawn from an exponential distribution, compressed with
        ``log10(10000 x + 1)``), then the first and the last full patch of the synthesised signal
        computed by :func:`reference_log_mel` (float32); ``signal`` float32 ``(64000,)`` that signal at
        16 kHz; ``signal_log_mel`` float32 ``(frames, 96)`` its reference log-mel.
    """
    rng = np.random.default_rng(seed)
    tilt = np.logspace(0, -3, N_MELS)[None, None, :]
    power = rng.exponential(1.0, size=(2, N_FRAMES, N_MELS)) * tilt * 10 ** rng.uniform(-4, -1, (2, 1, 1))
    random_patches = np.log10(10000 * power + 1).astype(np.float32)
    signal = synth_signal(seed, SIGNAL_SECONDS)
    logmel = reference_log_mel(signal)
    sig_patches = np.stack([logmel[:N_FRAMES], logmel[-N_FRAMES:]])
    patches = np.concatenate([random_patches, sig_patches]).astype(np.float32)
    return {"patches": patches, "signal": signal, "signal_log_mel": logmel}


def convert(out_dir: Path) -> dict:
    """Convert the checkpoint into ``out_dir`` (model.tflite, card.json, golden.npz, LICENSE).

    Returns
    -------
    dict
        The card written.
    """
    import tensorflow as tf

    models, configuration, pkg_dir, musicnn_version = _musicnn()
    labels = list(configuration.MSD_LABELS)
    assert (configuration.SR, configuration.FFT_SIZE, configuration.FFT_HOP, configuration.N_MELS) == (
        SAMPLE_RATE, N_FFT, HOP, N_MELS,
    ), "musicnn's configuration.py changed"
    ckpt_prefix = str(pkg_dir / MUSICNN_MODEL) + os.sep
    train_config = json.loads((pkg_dir / MUSICNN_MODEL / "config.json").read_text())

    golden = golden_inputs()
    graph = tf.Graph()
    with graph.as_default():
        x, embedding, tags = build_graph(models, len(labels))
        sess = tf.compat.v1.Session(graph=graph)
        saver = tf.compat.v1.train.Saver()
        saver.restore(sess, ckpt_prefix)
        ref_emb, ref_tags = sess.run([embedding, tags], feed_dict={x: golden["patches"]})
        converter = tf.compat.v1.lite.TFLiteConverter.from_session(sess, [x], [embedding, tags])
        converter.optimizations = []
        tflite_bytes = converter.convert()
        sess.close()

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "model.tflite").write_bytes(tflite_bytes)
    np.savez_compressed(
        out_dir / "golden.npz",
        patches=golden["patches"],
        embedding=ref_emb.astype(np.float32),
        tags=ref_tags.astype(np.float32),
        signal=golden["signal"],
        signal_log_mel=golden["signal_log_mel"],
    )
    licence = (pkg_dir.parent / f"musicnn-{musicnn_version}.dist-info" / "LICENSE.md")
    card = make_card(
        labels, hashlib.sha256(tflite_bytes).hexdigest(), musicnn_version, train_config,
        tf.__version__,
    )
    (out_dir / "card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    if licence.is_file():
        (out_dir / "LICENSE").write_text(
            licence.read_text().rstrip() + "\n\n"
            "The model weights in model.tflite are converted from the MSD_musicnn checkpoint\n"
            f"distributed in the musicnn {musicnn_version} wheel under the licence above.\n"
            "Please cite:\n\n" + CITATION + "\n"
        )
    return card


def frontend_fields() -> dict:
    """The card fields of musicnn's log-mel front end (shared by both models' cards)."""
    return {
        "sample_rate_hz": SAMPLE_RATE,
        "n_fft": N_FFT,
        "hop_length": HOP,
        "n_mels": N_MELS,
        "mel": "slaney",
        "fmin_hz": 0.0,
        "fmax_hz": SAMPLE_RATE / 2,
        "window": "hann",
        "center": True,
        "power": 2,
        "compression": {"type": "log10", "scale": 10000, "offset": 1},
        "patch_frames": N_FRAMES,
        "patch_hop_frames": N_FRAMES,
    }


def make_card(labels, sha256, musicnn_version, train_config, tf_version) -> dict:
    """The ``card.json`` contents (see docs/models.md for each field)."""
    return {
        "name": MODEL_NAME,
        "version": f"musicnn-{musicnn_version}",
        "description": "musicnn MSD_musicnn: musically motivated CNN trained on the Million Song "
        "Dataset (top-50 last.fm tags); embedding = penultimate dense layer",
        **frontend_fields(),
        "pad_short": "repeat",
        "reference_frontend": {
            "code": "musicnn.extractor.batch_data",
            "load": "librosa.load(path, sr=16000) (mono, librosa default resampler)",
            "melspectrogram": "librosa.feature.melspectrogram(y=audio, sr=16000, hop_length=256, "
            "n_fft=512, n_mels=96) (power=2, htk=False, norm='slaney', window='hann', "
            "center=True; pad_mode 'constant' in librosa>=0.10, 'reflect' before)",
            "dtype_cast": "the extractor casts the mel power spectrogram to float16 and computes "
            "10000*x in float16, which overflows to inf (NaN outputs) where x > 6.55; deejai "
            "computes in float32 (golden.npz signal_log_mel is float32)",
            "patches": "non-overlapping 187-frame patches from frame 0 (input_length=3 s, "
            "input_overlap=False); a trailing partial patch is dropped",
            "short_audio": "the extractor fails on audio shorter than 187 frames (~2.99 s); "
            f"training used pad_short={train_config.get('pad_short')!r}: repeat the spectrogram "
            "along time until it fills one patch",
        },
        "input": {"name": INPUT_NAME, "shape": [-1, N_FRAMES, N_MELS], "dtype": "float32"},
        "outputs": {"embedding": 200, "tags": 50},
        "output_tensors": {"embedding": OUTPUT_NAMES[0], "tags": OUTPUT_NAMES[1]},
        "dynamic_batch": True,
        "tag_labels": labels,
        "licence": "ISC",
        "source": {
            "package": f"musicnn=={musicnn_version} (PyPI wheel)",
            "checkpoint": f"musicnn/{MUSICNN_MODEL}/ (TF1 checkpoint, prefix '')",
            "url": "https://github.com/jordipons/musicnn",
            "converter": "models/convert_musicnn.py",
            "tensorflow": tf_version,
        },
        "citation": CITATION,
        "sha256": sha256,
    }


def tflite_outputs(model_path: Path, patches: np.ndarray) -> dict[str, np.ndarray]:
    """Run ``model_path`` with ``tf.lite.Interpreter`` on ``patches`` (dynamic batch)."""
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_path=str(model_path))
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], list(patches.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], patches)
    interp.invoke()
    return {d["name"]: interp.get_tensor(d["index"]) for d in interp.get_output_details()}


def verify(out_dir: Path) -> dict[str, float]:
    """Max abs difference between the TFLite model and the TensorFlow reference in golden.npz."""
    golden = np.load(out_dir / "golden.npz")
    got = tflite_outputs(out_dir / "model.tflite", golden["patches"])
    return {k: float(np.abs(got[k] - golden[k]).max()) for k in OUTPUT_NAMES}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / MODEL_NAME,
        help="output folder (default: models/msd-musicnn next to this script)",
    )
    parser.add_argument(
        "--check", action="store_true",
        help="convert a second time into a temporary folder and compare bytes and outputs",
    )
    args = parser.parse_args(argv)
    card = convert(args.out)
    diffs = verify(args.out)
    print(f"wrote {args.out}/model.tflite sha256={card['sha256']}")
    print("max abs diff TFLite vs TensorFlow: " + ", ".join(f"{k}={v:.3g}" for k, v in diffs.items()))
    if max(diffs.values()) > 1e-4:
        print("ERROR: TFLite outputs differ from the TensorFlow reference", file=sys.stderr)
        return 1
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            card2 = convert(Path(tmp))
            same = (Path(tmp) / "model.tflite").read_bytes() == (args.out / "model.tflite").read_bytes()
            g1, g2 = np.load(args.out / "golden.npz"), np.load(Path(tmp) / "golden.npz")
            out_same = all(np.array_equal(g1[k], g2[k]) for k in g1.files)
            print(f"rerun: model bytes identical={same} (sha256 {card2['sha256']}); "
                  f"golden identical={out_same}")
            if not (same and out_same):
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
