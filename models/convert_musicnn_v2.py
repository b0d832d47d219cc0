"""Build ``msd-musicnn-v2``: musicnn MSD_musicnn with PCM in, re-laid out, mostly int8.

A build-time tool (the ``convert`` extra, plus the ``musicnn`` wheel installed ``--no-deps``;
see ``convert_musicnn.py``); nothing in deejai imports it. It writes a model folder with

``model.tflite``
    The default variant. Input ``pcm`` float32 ``(batch, 48128)``: one patch of 16 kHz mono
    samples. The log-mel front end (framing, periodic Hann window, a real DFT as a matmul,
    |X|^2, the 96 Slaney mel filters, ``log10(10000 x + 1)``) and the input batch norm run in
    fp32 inside the graph, with builtin ops only; the convolutions and frequency max-pools of
    the re-laid-out front end (:mod:`musicnn_relayout`, ~93 % of the multiply-adds) run in
    int8 (per-channel weights, per-tensor activations) calibrated on real music; everything
    after the max-pools runs in fp32. Float input and outputs.
``model-fp32.tflite``
    The same graph without quantisation: exact in real arithmetic to musicnn (the tool checks
    it against the original TensorFlow graph). deejai runs it where it measures faster than the
    int8 variant (CPUs without int8 dot products) and as the reference for fidelity figures.
``card.json``, ``golden.npz``, ``LICENSE``, ``README.md``
    The card (input = samples, patch length, outputs, precision per op group, fidelity figures,
    licence, sha256 of both files); reference outputs of musicnn's own TensorFlow graph on fixed
    PCM inputs; the ISC licence with the citation.

Usage::

    pip install -e '.[convert]' && pip install --no-deps musicnn==0.1.0
    python models/convert_musicnn_v2.py --calibration ~/Music          # real music (shipped)
    python models/convert_musicnn_v2.py                                 # synthetic calibration
    python models/convert_musicnn_v2.py --calibration ~/Music --check   # rebuild and compare

Calibration: with ``--calibration DIR`` the audio files under DIR, sorted by path, are split
deterministically: every ``--every``-th file (offset 0) is decoded with deejai's own decoder
and gives up to 28 patches at positions drawn from a fixed seed; the other files are held out
for the fidelity figures in the card (16 evenly spread patches each, deejai's analysis
positions). Without a folder, synthetic music (chords, drums, bass lines, noise, made here
from a fixed seed) is used and the card says so. The tool never uses the network.

Reference: J. Pons and X. Serra, "musicnn: pre-trained convolutional neural networks for music
audio tagging", ISMIR 2019 LBD, arXiv:1909.06654 (ISC licence).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import convert_musicnn as v1  # noqa: E402
import musicnn_relayout as rl  # noqa: E402

MODEL_NAME = "msd-musicnn-v2"
SAMPLE_RATE = v1.SAMPLE_RATE
HOP = v1.HOP
N_FFT = v1.N_FFT
PATCH_SAMPLES = (rl.N_FRAMES + 1) * HOP  # 48128: frames 0..186 of a centred STFT
#: Where a patch's samples start relative to the centre of its first frame.
PATCH_OFFSET_SAMPLES = -(N_FFT // 2)
INPUT_NAME = "pcm"
FILES = {"int8": "model.tflite", "fp32": "model-fp32.tflite"}
#: Name scopes of the graph; only ``heavy/`` ops are quantised.
SCOPES = ("logmel", "heavy", "tail")
CALIBRATION_PATCHES_PER_FILE = 28
EVAL_PATCHES_PER_FILE = 16
CALIBRATION_SEED = 20261201
AUDIO_EXTENSIONS = (".mp3", ".flac", ".ogg", ".oga", ".wav", ".m4a")


# --------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------


def patch_windows(y: np.ndarray, start_frames) -> np.ndarray:
    """PCM patches of ``y`` (16 kHz) whose first frames are ``start_frames``: samples
    ``[s * hop - n_fft / 2, ... + 48128)`` with zeros outside the track, float32 ``(k, 48128)``."""
    pad = np.concatenate([np.zeros(N_FFT // 2, np.float32), np.asarray(y, np.float32),
                          np.zeros(PATCH_SAMPLES, np.float32)])
    return np.stack([pad[HOP * int(s):HOP * int(s) + PATCH_SAMPLES] for s in start_frames])


def audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*")
                  if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def folder_sets(folder: Path, every: int) -> tuple[np.ndarray, list[np.ndarray], dict]:
    """Calibration patches and held-out per-file patches from a music folder."""
    from deejai.engine import audio

    files = audio_files(folder)
    if len(files) < 2:
        sys.exit(f"{folder}: needs at least two audio files (found {len(files)})")
    rng = np.random.default_rng(CALIBRATION_SEED)
    calib, held_out, digests = [], [], hashlib.sha256()
    n_calib_files = 0
    for i, path in enumerate(files):
        try:
            y, _ = audio.decode(path, SAMPLE_RATE)
        except Exception as exc:  # noqa: BLE001 - a bad file in the folder is skipped
            print(f"skipping {path.name}: {exc}", file=sys.stderr)
            continue
        n_frames = 1 + len(y) // HOP
        if n_frames < rl.N_FRAMES:
            continue
        if i % every == 0:
            k = min(CALIBRATION_PATCHES_PER_FILE, n_frames // rl.N_FRAMES)
            starts = np.sort(rng.integers(0, n_frames - rl.N_FRAMES + 1, size=k))
            calib.append(patch_windows(y, starts))
            digests.update(hashlib.sha256(Path(path).read_bytes()).digest())
            n_calib_files += 1
        else:
            held_out.append(patch_windows(y, audio.patch_starts(n_frames, rl.N_FRAMES,
                                                                 EVAL_PATCHES_PER_FILE)))
    x = np.concatenate(calib).astype(np.float32)
    info = {"source": "folder of real music given at build time", "files": n_calib_files,
            "patches": int(x.shape[0]),
            "selection": f"files sorted by path, every {every}th (offset 0); up to "
                         f"{CALIBRATION_PATCHES_PER_FILE} patches per file at positions from "
                         f"numpy default_rng({CALIBRATION_SEED})",
            "files_sha256": digests.hexdigest(),
            "held_out_files": len(held_out)}
    return x, held_out, info


def synthetic_music(seed: int, seconds: float = 30.0) -> np.ndarray:
    """A synthetic 16 kHz 'song': a chord progression, a bass line, kick, snare and hi-hats at a
    random tempo, key and mix, so calibration sees music-like level and spectral ranges."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    bpm = rng.uniform(70, 170)
    beat = 60.0 / bpm
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    y = np.zeros(n)
    progression = [0, 5, 7, 3, 8, 10]
    for b in range(int(seconds / beat)):
        s = int(b * beat * SAMPLE_RATE)
        seg = t[: n - s]
        env = np.exp(-seg * rng.uniform(1.5, 6))
        chord_root = root * 2 ** (progression[(b // 4) % len(progression)] / 12)
        gate = seg < beat
        for ratio in (1.0, 1.26, 1.5, 2.0):
            y[s:] += 0.08 * env * np.sin(2 * np.pi * chord_root * ratio * seg) * gate
        y[s:] += 0.2 * env * np.sign(np.sin(2 * np.pi * chord_root / 2 * seg)) * gate
        if b % 2 == 0:
            kick = np.exp(-seg * 30) * np.sin(2 * np.pi * (45 + 90 * np.exp(-seg * 40)) * seg)
            y[s:] += 0.6 * kick * (seg < 0.3)
        else:
            m = min(n - s, 3000)
            y[s:s + m] += 0.3 * rng.standard_normal(m) * np.exp(-np.arange(m) / 600)
        h = s + int(beat / 2 * SAMPLE_RATE)
        if h < n:
            m = min(n - h, 700)
            y[h:h + m] += 0.1 * np.diff(rng.standard_normal(m + 1)) * np.exp(-np.arange(m) / 120)
    y *= rng.uniform(0.2, 1.0) / max(1e-9, np.abs(y).max())
    return y.astype(np.float32)


def synthetic_sets(n_songs: int = 24) -> tuple[np.ndarray, list[np.ndarray], dict]:
    rng = np.random.default_rng(CALIBRATION_SEED)
    calib, held_out = [], []
    for i in range(n_songs):
        y = synthetic_music(CALIBRATION_SEED + i)
        n_frames = 1 + len(y) // HOP
        starts = np.sort(rng.integers(0, n_frames - rl.N_FRAMES + 1, size=8))
        (calib if i % 4 else held_out).append(patch_windows(y, starts))
    info = {"source": "synthetic music made by the tool (no folder given)",
            "files": n_songs - len(held_out), "patches": int(sum(len(c) for c in calib)),
            "selection": f"synthetic_music(seed) for seeds {CALIBRATION_SEED}+i, 8 patches each",
            "held_out_files": len(held_out)}
    return np.concatenate(calib).astype(np.float32), held_out, info


def golden_pcm() -> np.ndarray:
    """Fixed PCM inputs for ``golden.npz``: the first and last patch of the synthesised signal
    of ``convert_musicnn.synth_signal``, a patch of coloured noise, a very quiet chord and a
    patch of silence; float32 ``(5, 48128)``."""
    sig = v1.synth_signal(v1.GOLDEN_SEED, v1.SIGNAL_SECONDS)
    n_frames = 1 + len(sig) // HOP
    rng = np.random.default_rng(v1.GOLDEN_SEED)
    noise = np.cumsum(rng.standard_normal(PATCH_SAMPLES)) * 0.002
    noise = (noise - noise.mean()).astype(np.float32)
    t = np.arange(PATCH_SAMPLES) / SAMPLE_RATE
    quiet = (1e-3 * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 660 * t))).astype(np.float32)
    return np.concatenate([patch_windows(sig, [0, n_frames - rl.N_FRAMES]), noise[None],
                           quiet[None], np.zeros((1, PATCH_SAMPLES), np.float32)])


# --------------------------------------------------------------------------------------------
# graphs
# --------------------------------------------------------------------------------------------


def load_network():
    models, configuration, pkg_dir, musicnn_version = v1._musicnn()
    ckpt = rl.read_checkpoint(rl.checkpoint_prefix(pkg_dir))
    return models, configuration, pkg_dir, musicnn_version, rl.relayout(ckpt)


def reference_outputs(models, pkg_dir, log_mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """musicnn's own TF1 graph (``define_model``) on log-mel patches: ``(embedding, tags)``."""
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        x, emb, tags = v1.build_graph(models, 50)
        with tf.compat.v1.Session(graph=graph) as sess:
            tf.compat.v1.train.Saver().restore(sess, str(Path(pkg_dir) / v1.MUSICNN_MODEL) + os.sep)
            out = [], []
            for i in range(0, len(log_mel), 64):
                e, t = sess.run([emb, tags], {x: log_mel[i:i + 64]})
                out[0].append(e)
                out[1].append(t)
    return np.concatenate(out[0]), np.concatenate(out[1])


def make_function(net, fe):
    """The v2 graph as a ``tf.function``: ``pcm (B, 48128)`` -> ``embedding``, ``tags``."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, fe.patch_samples], tf.float32,
                                                name=INPUT_NAME)])
    def musicnn_v2(pcm):
        with tf.name_scope("logmel"):
            log_mel = rl.pcm_log_mel(tf, pcm, fe)
            x = log_mel * np.float32(net.input_scale) + np.float32(net.input_shift)
        with tf.name_scope("heavy"):
            pooled = rl.frontend_heavy(tf, x, net)
        with tf.name_scope("tail"):
            embedding, tags = rl.backbone_tail(tf, pooled, net)
        return {"embedding": embedding, "tags": tags}

    return musicnn_v2


def _tensor_names(tflite_bytes: bytes) -> list[str]:
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_content=tflite_bytes)
    return [interp._get_tensor_details(i, 0)["name"]
            for op in interp._get_ops_details() for i in op["outputs"]]


#: Which ops go int8, by name scope: the shipped choice and the alternatives the tool measured
#: against it (``--compare-precision``).
PRECISION_CHOICES = {
    "front-end convolutions int8 (shipped)": ("heavy/",),
    "+ mid-end convolutions int8": ("heavy/", "tail/midend/"),
    "everything after the log-mel int8": ("heavy/", "tail/"),
}
SHIPPED_PRECISION = ("heavy/",)


def convert_variants(fn, calibration: np.ndarray,
                     int8_scopes: tuple[str, ...] = SHIPPED_PRECISION) -> dict[str, bytes]:
    """``{"fp32": bytes, "int8": bytes}``: the float model, and the model with every op under
    the ``int8_scopes`` name scopes (default: ``heavy/``) quantised to int8 (the others
    denylisted, so they stay fp32), calibrated on ``calibration`` one patch at a time."""
    import tensorflow as tf

    concrete = fn.get_concrete_function()
    fp32 = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn).convert()
    deny = [name for name in _tensor_names(fp32) if not name.startswith(int8_scopes)]

    def representative():
        for i in range(len(calibration)):
            yield [calibration[i:i + 1]]

    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], fn)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=representative,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=deny))
    return {"fp32": name_outputs(fp32),
            "int8": name_outputs(debugger.get_nondebug_quantized_model())}


def name_outputs(tflite_bytes: bytes) -> bytes:
    """Name the graph's output tensors ``embedding`` and ``tags`` (by their sizes, 200 and 50;
    the converter calls them ``Identity``/``Identity_1``) and the input ``pcm``."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(tflite_bytes))
    graph = model.subgraphs[0]
    for i in graph.outputs:
        size = int(graph.tensors[i].shapeSignature[-1])
        graph.tensors[i].name = {200: b"embedding", 50: b"tags"}[size]
    graph.tensors[graph.inputs[0]].name = INPUT_NAME.encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def op_precision(tflite_bytes: bytes) -> dict[str, dict[str, int]]:
    """Per name scope, how many ops compute in int8 and in float32 (quantize/dequantize apart)."""
    import tensorflow as tf

    interp = tf.lite.Interpreter(model_content=tflite_bytes)
    counts: dict[str, dict[str, int]] = {}
    for op in interp._get_ops_details():
        out = interp._get_tensor_details(op["outputs"][0], 0)
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            group, kind = "boundaries", op["op_name"].lower()
        else:
            group = out["name"].split("/")[0] if "/" in out["name"] else "outputs"
            kind = "int8" if out["dtype"] == np.int8 else "float32"
        counts.setdefault(group, {}).setdefault(kind, 0)
        counts[group][kind] += 1
    return counts


#: ``run_tflite(..., tensor=LOG_MEL)`` reads the in-graph log-mel (see :func:`log_mel_tensor`).
LOG_MEL = "log_mel"


def log_mel_tensor(interp) -> int:
    """Index of the in-graph log-mel tensor: the output of the MUL (by 1 / ln 10) that reads the
    graph's only LOG op, i.e. ``log10(10000 x + 1)`` before the input batch norm."""
    ops = interp._get_ops_details()
    log_out = next(op["outputs"][0] for op in ops if op["op_name"] == "LOG")
    return next(op["outputs"][0] for op in ops
                if op["op_name"] == "MUL" and log_out in list(op["inputs"]))


def run_tflite(tflite_bytes: bytes, x: np.ndarray, *, batch: int = 16,
               tensor: str | None = None) -> dict[str, np.ndarray]:
    """Outputs of a model on ``x`` (TensorFlow's TFLite interpreter, XNNPACK as at run time).
    With ``tensor``, also that intermediate tensor (the default delegate is then off)."""
    import tensorflow as tf

    kwargs = {}
    if tensor is not None:
        kwargs = {"experimental_preserve_all_tensors": True,
                  "experimental_op_resolver_type":
                  tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}
    interp = tf.lite.Interpreter(model_content=tflite_bytes, num_threads=2, **kwargs)
    inp = interp.get_input_details()[0]
    outs = {d["name"]: d["index"] for d in interp.get_output_details()}
    idx = None
    if tensor == LOG_MEL:
        idx = log_mel_tensor(interp)
    elif tensor is not None:
        idx = next(d["index"] for d in interp.get_tensor_details() if d["name"] == tensor)
    got: dict[str, list] = {}
    size = None
    for i in range(0, len(x), batch):
        chunk = np.ascontiguousarray(x[i:i + batch])
        if chunk.shape[0] != size:
            interp.resize_tensor_input(inp["index"], list(chunk.shape))
            interp.allocate_tensors()
            size = chunk.shape[0]
        interp.set_tensor(inp["index"], chunk)
        interp.invoke()
        for name, j in outs.items():
            got.setdefault(name, []).append(interp.get_tensor(j).copy())
        if idx is not None:
            got.setdefault(tensor, []).append(interp.get_tensor(idx).copy())
    return {k: np.concatenate(v) for k, v in got.items()}


# --------------------------------------------------------------------------------------------
# checks and figures
# --------------------------------------------------------------------------------------------


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1),
                                        1e-12)


def fidelity(int8: bytes, fp32: bytes, held_out: list[np.ndarray]) -> dict[str, float]:
    """int8 vs fp32 variant on held-out files: per-patch and per-track (mean of the patch
    embeddings) cosine, and the share of each track's top-5 tags (mean probability) kept."""
    per_patch, per_track, top5 = [], [], []
    for x in held_out:
        a, b = run_tflite(fp32, x), run_tflite(int8, x)
        per_patch.append(_cos(a["embedding"], b["embedding"]))
        per_track.append(float(_cos(a["embedding"].mean(0), b["embedding"].mean(0))))
        ta = set(np.argsort(-a["tags"].mean(0))[:5])
        tb = set(np.argsort(-b["tags"].mean(0))[:5])
        top5.append(len(ta & tb) / 5)
    pp = np.concatenate(per_patch)
    return {"tracks": len(held_out), "patches": int(pp.size),
            "patch_cosine_mean": round(float(pp.mean()), 5),
            "patch_cosine_min": round(float(pp.min()), 5),
            "track_cosine_mean": round(float(np.mean(per_track)), 5),
            "track_cosine_min": round(float(np.min(per_track)), 5),
            "top5_tag_agreement": round(float(np.mean(top5)), 4)}


def seconds_per_patch(tflite_bytes: bytes, rounds: int = 5, n: int = 20) -> float:
    """Best-of-``rounds`` seconds per single-patch invoke, one thread (TensorFlow's interpreter
    with XNNPACK, as LiteRT runs it)."""
    import time

    import tensorflow as tf

    interp = tf.lite.Interpreter(model_content=tflite_bytes, num_threads=1)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], [1, PATCH_SAMPLES])
    interp.allocate_tensors()
    x = (0.1 * np.random.default_rng(0).standard_normal((1, PATCH_SAMPLES))).astype(np.float32)
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            interp.set_tensor(inp["index"], x)
            interp.invoke()
        best = min(best, (time.perf_counter() - t0) / n)
    return best


def compare_precision(calibration_dir: Path | None, every: int) -> list[dict]:
    """Build every :data:`PRECISION_CHOICES` variant and print speed and fidelity side by side
    (speed measured interleaved, so a change in machine load hits every variant alike)."""
    from deejai.engine import audio

    *_, net = load_network()
    fe = rl.pcm_frontend(audio.mel_filters(SAMPLE_RATE, N_FFT, rl.N_MELS, 0.0, SAMPLE_RATE / 2))
    if calibration_dir is not None:
        calibration, held_out, _ = folder_sets(calibration_dir, every)
    else:
        calibration, held_out, _ = synthetic_sets()
    fn = make_function(net, fe)
    built = {label: convert_variants(fn, calibration, scopes)
             for label, scopes in PRECISION_CHOICES.items()}
    fp32 = next(iter(built.values()))["fp32"]
    candidates = {"fp32 (no quantisation)": fp32, **{k: v["int8"] for k, v in built.items()}}
    speed = {k: float("inf") for k in candidates}
    for _ in range(3):
        for label, data in candidates.items():
            speed[label] = min(speed[label], seconds_per_patch(data, rounds=2))
    rows = []
    for label, data in candidates.items():
        fid = fidelity(data, fp32, held_out)
        rows.append({"ops_int8": label, "ms_per_patch": round(1000 * speed[label], 2), **fid})
    print(f"\n{'int8 ops':<40} {'ms/patch':>9} {'track cos mean':>15} {'track cos min':>14} "
          f"{'patch cos min':>14} {'top-5 tags':>11}")
    for r in rows:
        print(f"{r['ops_int8']:<40} {r['ms_per_patch']:9.2f} {r['track_cosine_mean']:15.5f} "
              f"{r['track_cosine_min']:14.5f} {r['patch_cosine_min']:14.5f} "
              f"{r['top5_tag_agreement']:11.3f}")
    return rows


def build(out_dir: Path, calibration_dir: Path | None, every: int) -> dict:
    """Build the model folder; returns the card."""
    import tensorflow as tf

    from deejai.engine import audio

    models, configuration, pkg_dir, musicnn_version, net = load_network()
    labels = list(configuration.MSD_LABELS)
    fe = rl.pcm_frontend(audio.mel_filters(SAMPLE_RATE, N_FFT, rl.N_MELS, 0.0, SAMPLE_RATE / 2))
    if calibration_dir is not None:
        calibration, held_out, calib_info = folder_sets(calibration_dir, every)
    else:
        calibration, held_out, calib_info = synthetic_sets()
    print(f"calibration: {calib_info['patches']} patches from {calib_info['files']} files; "
          f"{len(held_out)} held out", flush=True)
    variants = convert_variants(make_function(net, fe), calibration)

    # golden: musicnn's own TF graph on librosa's log-mel of fixed PCM windows
    pcm = golden_pcm()
    # frame i of a patch covers pcm[hop * i : hop * i + n_fft]: frame i + 1 of a centred STFT
    ref_log_mel = np.stack([v1.reference_log_mel(w)[1:1 + rl.N_FRAMES] for w in pcm])
    ref_emb, ref_tags = reference_outputs(models, pkg_dir, ref_log_mel)
    checks = check_against_reference(variants, pcm, ref_log_mel, ref_emb, ref_tags, fe)
    # exactness of the re-layout on real music: musicnn's graph vs the fp32 variant
    sample = np.concatenate([calibration[::7]] + [h[::4] for h in held_out[::3]])
    sample_log_mel = run_tflite(variants["fp32"], sample, tensor=LOG_MEL)[LOG_MEL]
    ref_e, _ = reference_outputs(models, pkg_dir, sample_log_mel)
    got_e = run_tflite(variants["fp32"], sample)["embedding"]
    checks["relayout_real_patches"] = int(len(sample))
    checks["relayout_max_abs_diff"] = float(np.abs(got_e - ref_e).max())
    checks["relayout_cosine_min"] = float(_cos(got_e, ref_e).min())
    print(f"fp32 re-layout vs musicnn on {len(sample)} real patches: max abs diff "
          f"{checks['relayout_max_abs_diff']:.3g}, cosine min {checks['relayout_cosine_min']:.6f}",
          flush=True)
    fid = fidelity(variants["int8"], variants["fp32"], held_out)
    print("int8 vs fp32 on held-out files: " + ", ".join(f"{k}={v}" for k, v in fid.items()),
          flush=True)

    out_dir.mkdir(parents=True, exist_ok=True)
    for kind, data in variants.items():
        (out_dir / FILES[kind]).write_bytes(data)
    np.savez_compressed(out_dir / "golden.npz", pcm=pcm, log_mel=ref_log_mel,
                        embedding=ref_emb.astype(np.float32), tags=ref_tags.astype(np.float32))
    card = make_card(labels, {k: hashlib.sha256(v).hexdigest() for k, v in variants.items()},
                     musicnn_version, tf.__version__, calib_info, fid, checks,
                     {k: op_precision(v) for k, v in variants.items()})
    (out_dir / "card.json").write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    licence = Path(__file__).resolve().parent / v1.MODEL_NAME / "LICENSE"
    if licence.is_file():
        (out_dir / "LICENSE").write_text(licence.read_text())
    return card


def check_against_reference(variants, pcm, ref_log_mel, ref_emb, ref_tags, fe) -> dict:
    """Golden checks: in-graph log-mel vs deejai's NumPy log-mel and librosa's; both variants'
    outputs vs musicnn's TF graph. Exits non-zero when the fp32 variant is off by > 1e-4."""
    from deejai.engine import audio

    card = {"sample_rate_hz": SAMPLE_RATE, "n_fft": N_FFT, "hop_length": HOP,
            "n_mels": rl.N_MELS, "patch_frames": rl.N_FRAMES}
    in_graph = run_tflite(variants["fp32"], pcm, tensor=LOG_MEL)[LOG_MEL]
    numpy_mel = np.stack([audio.log_mel(w, card)[1:1 + rl.N_FRAMES] for w in pcm])
    out = {"log_mel_vs_numpy_max_abs": float(np.abs(in_graph - numpy_mel).max()),
           "log_mel_vs_librosa_max_abs": float(np.abs(in_graph - ref_log_mel).max())}
    for kind in ("fp32", "int8"):
        got = run_tflite(variants[kind], pcm)
        out[f"{kind}_embedding_max_abs"] = float(np.abs(got["embedding"] - ref_emb).max())
        out[f"{kind}_tags_max_abs"] = float(np.abs(got["tags"] - ref_tags).max())
        out[f"{kind}_embedding_cosine_min"] = float(_cos(got["embedding"], ref_emb).min())
    print("golden: " + ", ".join(f"{k}={v:.3g}" for k, v in out.items()), flush=True)
    if max(out["log_mel_vs_numpy_max_abs"], out["log_mel_vs_librosa_max_abs"],
           out["fp32_embedding_max_abs"], out["fp32_tags_max_abs"]) > 1e-4:
        sys.exit("ERROR: the fp32 variant differs from the reference by more than 1e-4")
    return out


def make_card(labels, sha256, musicnn_version, tf_version, calib, fid, checks, precision) -> dict:
    """``card.json`` (see docs/models.md)."""
    return {
        "name": MODEL_NAME,
        "version": f"musicnn-{musicnn_version}-v2",
        "description": "musicnn MSD_musicnn with the log-mel front end inside the graph (PCM in), "
        "re-laid out so every convolution reads many channels, front-end convolutions in int8; "
        "embedding = penultimate dense layer",
        **v1.frontend_fields(),
        "patch_samples": PATCH_SAMPLES,
        "patch_offset_samples": PATCH_OFFSET_SAMPLES,
        "pad_short": "repeat",
        "input": {"name": INPUT_NAME, "kind": "pcm", "shape": [-1, PATCH_SAMPLES],
                  "dtype": "float32",
                  "description": "one patch of mono samples at sample_rate_hz in [-1, 1]: "
                  "samples [s*hop_length - n_fft/2, ... + patch_samples) for a patch whose "
                  "first STFT frame is centred on sample s*hop_length, zeros outside the track"},
        "outputs": {"embedding": 200, "tags": 50},
        "output_tensors": {"embedding": "embedding", "tags": "tags"},
        "dynamic_batch": True,
        "tag_labels": labels,
        "variants": {
            "int8": {"file": FILES["int8"], "sha256": sha256["int8"],
                     "precision": "log-mel front end fp32; front-end convolutions and max-pools "
                     "int8 (per-channel weights, per-tensor activations); mid-end and back end "
                     "fp32; float input and outputs",
                     "ops": precision["int8"]},
            "fp32": {"file": FILES["fp32"], "sha256": sha256["fp32"],
                     "precision": "fp32 throughout; exact in real arithmetic to musicnn",
                     "ops": precision["fp32"]},
        },
        "default_variant": "int8",
        "calibration": calib,
        "fidelity": {"int8_vs_fp32_held_out": fid, "golden": checks},
        "graph": "models/musicnn_relayout.py (re-layout), models/convert_musicnn_v2.py (build)",
        "reference_model": v1.MODEL_NAME,
        "licence": "ISC",
        "source": {
            "package": f"musicnn=={musicnn_version} (PyPI wheel)",
            "checkpoint": f"musicnn/{v1.MUSICNN_MODEL}/ (TF1 checkpoint, prefix '')",
            "url": "https://github.com/jordipons/musicnn",
            "converter": "models/convert_musicnn_v2.py",
            "tensorflow": tf_version,
        },
        "citation": v1.CITATION,
        "sha256": sha256["int8"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=Path(__file__).resolve().parent / MODEL_NAME,
                        help="output folder (default: models/msd-musicnn-v2)")
    parser.add_argument("--calibration", type=Path, default=None, metavar="DIR",
                        help="a folder of real music to calibrate on (default: synthetic music)")
    parser.add_argument("--every", type=int, default=4,
                        help="calibrate on every Nth file of --calibration, hold out the rest "
                        "for the fidelity figures (default 4)")
    parser.add_argument("--check", action="store_true",
                        help="build a second time into a temporary folder and compare the bytes")
    parser.add_argument("--compare-precision", action="store_true",
                        help="build the int8 choices of PRECISION_CHOICES, print their speed and "
                        "fidelity to fp32 side by side, and write nothing")
    args = parser.parse_args(argv)
    if args.compare_precision:
        compare_precision(args.calibration, args.every)
        return 0
    card = build(args.out, args.calibration, args.every)
    print(f"wrote {args.out}: {FILES['int8']} sha256={card['variants']['int8']['sha256']}, "
          f"{FILES['fp32']} sha256={card['variants']['fp32']['sha256']}")
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            card2 = build(Path(tmp), args.calibration, args.every)
            same = {k: card2["variants"][k]["sha256"] == card["variants"][k]["sha256"]
                    for k in FILES}
            print(f"rerun: bytes identical {same}")
            if not all(same.values()):
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
