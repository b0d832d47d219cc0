"""musicnn's MSD_musicnn weights re-laid out so that every convolution reads many channels.

Build-time only (the ``convert`` extra); nothing in deejai imports this module at run time.
:mod:`convert_musicnn_v2` uses it to build ``msd-musicnn-v2``.

Why
---
musicnn's convolutions all read **one-channel** maps: the timbral 7x38 and 7x67 filters and the
temporal 128/64/32x1 filters run on the one-channel log-mel, and the mid-end 7x561 / 7x64
filters run on one-channel feature maps. XNNPACK's int8 convolution kernels pad the input
channels of every kernel tap, so a one-channel int8 convolution does several times the work
of its fp32 twin, and a plain int8 conversion of the original graph is slower than fp32.
Every rewrite below is exact in real arithmetic (the tool checks it against the original
TensorFlow graph); only the layout of the same numbers changes.

The rewrites
------------
* **Input batch norm** (one channel): a scalar affine map ``a * x + b`` applied to the log-mel
  before the time padding (musicnn pads the normalised input with zeros).
* **Timbral convolutions** (kernel ``(7, kw)``, ``kw`` = 38 and 67, on the ``(T + 6, 96, 1)``
  zero-padded input): an im2col *gather* along frequency makes a ``(T + 6, 96 - kw + 1, kw)``
  map, so the kernel becomes ``(7, 1)`` over ``kw`` input channels. The gather runs on the
  transposed ``(96, T + 6)`` map so that it copies whole time rows (TFLite's GATHER, which
  XNNPACK does not run, copies one slice per index), then a transpose restores
  ``(T + 6, positions, kw)``; this measured ~1.5 ms/patch faster than gathering single values.
* **Temporal convolutions** (kernel ``(k, 1)``, k = 128, 64, 32, ``same`` padding): time is
  folded into ``P = 32`` channels (``t = P q + r``): the padded signal becomes ``(T'/P, 96, P)``
  and the kernel ``(ceil((k + P - 1) / P), 1)`` over ``P`` input channels with ``P * filters``
  outputs (one per phase ``s`` and filter); the output is unfolded back to time by a reshape.
* **Batch norm after the frequency max-pool.** musicnn computes
  ``max_f BN(relu(conv))``. BN is a per-channel affine map ``a x + b``; for ``a > 0`` it
  commutes with ``max`` and for ``a < 0`` it turns ``max`` into ``min``; ``relu`` commutes with
  both. So the graph computes ``m = max_f (s * conv)`` with ``s = sign(a)`` folded into the
  filter (``min_f conv = -max_f(-conv)``) and then ``a * relu(s * m) + b``, the same value. The
  heavy part (convolution + max-pool) then needs no activation and no batch norm.
* **Mid-end convolutions** (kernel ``(7, W)`` on ``(T, W, 1)`` maps): a ``(7, 1)`` kernel over
  ``W`` channels of a ``(T, 1, W)`` map (a free reshape). The first one reads the five front-end
  branches: its kernel is split into one convolution per branch and the results summed, so the
  561-channel concatenation is never built.
* **Back end**: the global max and mean over time of the 753 features, the batch norm on the
  1,506 pooled values (folded into the dense layer) and the dense layer split into one matmul
  per branch (no concatenation), then ReLU, batch norm (``embedding``), the 50-way dense layer
  and a sigmoid (``tags``).

Source of the architecture: ``musicnn/models.py`` (``build_musicnn``, ``frontend``,
``timbral_block``, ``tempo_block``, ``midend``, ``backend``) in the musicnn 0.1.0 wheel
(J. Pons and X. Serra, ISMIR 2019 LBD; ISC licence). Batch norm epsilon: 0.001, the default
of ``tf.compat.v1.layers.batch_normalization``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: Batch-norm epsilon of ``tf.compat.v1.layers.batch_normalization`` (its default).
BN_EPSILON = 1e-3

N_FRAMES = 187
N_MELS = 96
#: Phases time is folded into for the temporal convolutions.
TIME_FOLD = 32

#: Branch names, in musicnn's concatenation order (``frontend`` returns [f74, f77, s1, s2, s3]).
TIMBRAL = ("timbral_38", "timbral_67")
TEMPORAL = ("temporal_128", "temporal_64", "temporal_32")
FRONTEND = TIMBRAL + TEMPORAL
MIDEND = ("midend_1", "midend_2", "midend_3")


def read_checkpoint(checkpoint_prefix: str) -> dict[str, np.ndarray]:
    """Every variable of a TF1 checkpoint as float32 NumPy arrays (optimiser slots left out).

    Parameters
    ----------
    checkpoint_prefix : str
        The checkpoint prefix (musicnn's ``MSD_musicnn/`` folder, with its trailing separator:
        the wheel stores the files under the empty prefix ``""``).
    """
    from tensorflow.python.training import py_checkpoint_reader

    reader = py_checkpoint_reader.NewCheckpointReader(checkpoint_prefix)
    return {
        name: np.asarray(reader.get_tensor(name), dtype=np.float32)
        for name in reader.get_variable_to_shape_map()
        if "Adam" not in name and not name.startswith("beta")
    }


def _bn(ckpt: dict[str, np.ndarray], index: int) -> tuple[np.ndarray, np.ndarray]:
    """Batch norm ``index`` (musicnn's creation order) as ``(scale, shift)``: ``y = scale*x + shift``."""
    name = "batch_normalization" + (f"_{index}" if index else "")
    gamma, beta = ckpt[f"{name}/gamma"], ckpt[f"{name}/beta"]
    mean, var = ckpt[f"{name}/moving_mean"], ckpt[f"{name}/moving_variance"]
    scale = gamma / np.sqrt(var + BN_EPSILON)
    return scale.astype(np.float64), (beta - mean * scale).astype(np.float64)


def _conv(ckpt: dict[str, np.ndarray], index: int) -> tuple[np.ndarray, np.ndarray]:
    name = "conv2d" + (f"_{index}" if index else "")
    return ckpt[f"{name}/kernel"].astype(np.float64), ckpt[f"{name}/bias"].astype(np.float64)


def _dense(ckpt: dict[str, np.ndarray], index: int) -> tuple[np.ndarray, np.ndarray]:
    name = "dense" + (f"_{index}" if index else "")
    return ckpt[f"{name}/kernel"].astype(np.float64), ckpt[f"{name}/bias"].astype(np.float64)


def same_padding(k: int) -> tuple[int, int]:
    """TensorFlow's ``padding="same"`` for stride 1 and kernel ``k``: ``(before, after)``."""
    total = k - 1
    return total // 2, total - total // 2


@dataclass
class Branch:
    """One front-end branch after re-layout.

    Attributes
    ----------
    kind : str
        ``"timbral"`` or ``"temporal"``.
    kernel : ndarray, float32
        Timbral: ``(7, 1, kw, F)``; temporal: ``(taps, 1, P, P * F)`` (HWIO).
    bias : ndarray, float32
        ``(F,)`` or ``(P * F,)``; sign-flipped like the kernel.
    sign : ndarray, float32, shape (F,)
        ``sign(a)`` of the branch's batch norm (``+1`` or ``-1``).
    scale, shift : ndarray, float32, shape (F,)
        The batch norm ``a``, ``b`` applied after the pool: ``a * relu(sign * m) + b``.
    width : int
        Timbral: the kernel's frequency width ``kw``; temporal: the kernel length ``k``.
    gather : ndarray, int32, optional
        Timbral: indices of the im2col gather along frequency, ``(96 - kw + 1) * kw``.
    pad : tuple of int
        Temporal: time padding ``(before, after)`` of the normalised input so that it folds
        into ``rows`` rows of ``P``.
    rows : int
        Temporal: rows of the folded input.
    """

    name: str
    kind: str
    kernel: np.ndarray
    bias: np.ndarray
    sign: np.ndarray
    scale: np.ndarray
    shift: np.ndarray
    width: int
    gather: np.ndarray | None = None
    pad: tuple[int, int] = (0, 0)
    rows: int = 0

    @property
    def filters(self) -> int:
        return int(self.scale.shape[0])


@dataclass
class Relayout:
    """All weights of the re-laid-out network (see the module docstring).

    ``dense_max[name]`` / ``dense_mean[name]`` are the rows of the (batch-norm-folded) 1,506 x 200
    dense layer that read the time-max and the time-mean of each feature group.
    """

    input_scale: float
    input_shift: float
    branches: list[Branch]
    midend_kernels: list[dict[str, np.ndarray]]  # per mid-end conv: input name -> (7, 1, C, 64)
    midend_bias: list[np.ndarray]
    midend_bn: list[tuple[np.ndarray, np.ndarray]]
    dense_max: dict[str, np.ndarray]
    dense_mean: dict[str, np.ndarray]
    dense_bias: np.ndarray
    embedding_bn: tuple[np.ndarray, np.ndarray]
    tags_kernel: np.ndarray
    tags_bias: np.ndarray
    time_fold: int = TIME_FOLD
    channels: dict[str, int] = field(default_factory=dict)


def relayout(ckpt: dict[str, np.ndarray], *, time_fold: int = TIME_FOLD) -> Relayout:
    """Re-lay out MSD_musicnn's checkpoint (see the module docstring).

    Variable order (musicnn's creation order): batch norms 0 (input), 1-2 (timbral), 3-5
    (temporal), 6-8 (mid-end), 9 (pooled features), 10 (penultimate); convolutions 0-1
    (timbral 7x38, 7x67), 2-4 (temporal 128, 64, 32), 5-7 (mid-end); dense 0 (penultimate)
    and 1 (logits).
    """
    f32 = np.float32
    a_in, b_in = _bn(ckpt, 0)
    branches: list[Branch] = []
    for i, name in enumerate(FRONTEND):
        w, bias = _conv(ckpt, i)  # HWIO
        a, b = _bn(ckpt, i + 1)
        sign = np.where(a < 0, -1.0, 1.0)
        if name in TIMBRAL:
            kw = w.shape[1]
            n_pos = N_MELS - kw + 1
            kernel = (w[:, :, 0, :] * sign)[:, None, :, :]  # (7, 1, kw, F)
            gather = (np.arange(n_pos)[:, None] + np.arange(kw)[None, :]).reshape(-1)
            branches.append(Branch(name, "timbral", kernel.astype(f32), (bias * sign).astype(f32),
                                   sign.astype(f32), a.astype(f32), b.astype(f32), kw,
                                   gather=gather.astype(np.int32)))
        else:
            k = w.shape[0]
            P = time_fold
            n_filt = w.shape[3]
            taps = -(-(k + P - 1) // P)
            before, after = same_padding(k)
            n_out_rows = -(-N_FRAMES // P)
            rows = n_out_rows + taps - 1
            pad = (before, rows * P - N_FRAMES - before)
            assert pad[1] >= after
            wk = w[:, 0, 0, :] * sign  # (k, F)
            kernel = np.zeros((taps, 1, P, P, n_filt))  # (tap m, 1, phase r, phase s, F)
            for m in range(taps):
                for r in range(P):
                    for s in range(P):
                        j = P * m + r - s
                        if 0 <= j < k:
                            kernel[m, 0, r, s, :] = wk[j]
            kernel = kernel.reshape(taps, 1, P, P * n_filt)
            branches.append(Branch(name, "temporal", kernel.astype(f32),
                                   np.tile(bias * sign, P).astype(f32), sign.astype(f32),
                                   a.astype(f32), b.astype(f32), k, pad=pad, rows=rows))
    channels = {b.name: b.filters for b in branches}
    # mid-end: conv 5 reads the 561 front-end channels in FRONTEND order; 6 and 7 read 64
    midend_kernels, midend_bias, midend_bn = [], [], []
    w5, b5 = _conv(ckpt, 5)
    split, at = {}, 0
    for name in FRONTEND:
        c = channels[name]
        split[name] = w5[:, at:at + c, 0, :][:, None, :, :].astype(f32)  # (7, 1, C, 64)
        at += c
    assert at == w5.shape[1]
    midend_kernels.append(split)
    midend_bias.append(b5.astype(f32))
    prev = "midend_1"
    for i, name in zip((6, 7), MIDEND[1:]):
        w, bias = _conv(ckpt, i)
        midend_kernels.append({prev: w[:, :, 0, :][:, None, :, :].astype(f32)})
        midend_bias.append(bias.astype(f32))
        prev = name
    for i in (6, 7, 8):
        a, b = _bn(ckpt, i)
        midend_bn.append((a.astype(f32), b.astype(f32)))
    for name in MIDEND:
        channels[name] = 64
    # back end: flat = [max_0, mean_0, max_1, mean_1, ...] over the 753 concatenated features
    # (tf.concat([max, mean], 2) on (B, 753, 1) tensors, then flatten), batch norm 9, dense 0
    s9, t9 = _bn(ckpt, 9)
    wd, bd = _dense(ckpt, 0)
    wd_folded = s9[:, None] * wd
    bias = bd + t9 @ wd
    dense_max, dense_mean, at = {}, {}, 0
    for name in FRONTEND + MIDEND:
        c = channels[name]
        rows = np.arange(at, at + c)
        dense_max[name] = wd_folded[2 * rows].astype(f32)
        dense_mean[name] = wd_folded[2 * rows + 1].astype(f32)
        at += c
    assert 2 * at == wd.shape[0]
    a10, b10 = _bn(ckpt, 10)
    w_tags, b_tags = _dense(ckpt, 1)
    return Relayout(
        input_scale=float(a_in[0]), input_shift=float(b_in[0]), branches=branches,
        midend_kernels=midend_kernels, midend_bias=midend_bias, midend_bn=midend_bn,
        dense_max=dense_max, dense_mean=dense_mean, dense_bias=bias.astype(f32),
        embedding_bn=(a10.astype(f32), b10.astype(f32)), tags_kernel=w_tags.astype(f32),
        tags_bias=b_tags.astype(f32), time_fold=time_fold, channels=channels,
    )


# --------------------------------------------------------------------------------------------
# the graph, in TensorFlow ops that convert to TFLite builtins
# --------------------------------------------------------------------------------------------


def frontend_heavy(tf, x, net: Relayout):
    """The convolutions and frequency max-pools (the ops that go int8).

    Parameters
    ----------
    x : tf.Tensor, float32, shape (B, 187, 96)
        The batch-normalised log-mel.

    Returns
    -------
    dict of str to tf.Tensor
        Per branch, the pooled map ``m``: timbral ``(B, 187, 1, F)``; temporal
        ``(B, rows - taps + 1, 1, P * F)``.
    """
    out = {}
    padded7 = tf.pad(x, [[0, 0], [3, 3], [0, 0]])  # (B, 193, 96)
    by_freq = tf.transpose(padded7, [0, 2, 1])  # (B, 96, 193)
    for br in net.branches:
        if br.kind == "timbral":
            n_pos = N_MELS - br.width + 1
            # gather whole time rows (one copy per index) rather than single elements
            cols = tf.gather(by_freq, br.gather, axis=1)  # (B, n_pos * kw, 193)
            cols = tf.reshape(cols, [-1, n_pos, br.width, N_FRAMES + 6])
            cols = tf.transpose(cols, [0, 3, 1, 2])  # (B, 193, n_pos, kw)
            conv = tf.nn.conv2d(cols, br.kernel, strides=1, padding="VALID")
            conv = tf.nn.bias_add(conv, br.bias)  # (B, 187, n_pos, F)
            m = tf.nn.max_pool2d(conv, ksize=[1, n_pos], strides=[1, n_pos], padding="VALID")
        else:
            P = net.time_fold
            u = tf.pad(x, [[0, 0], [br.pad[0], br.pad[1]], [0, 0]])  # (B, rows * P, 96)
            u = tf.reshape(u, [-1, br.rows, P, N_MELS])
            u = tf.transpose(u, [0, 1, 3, 2])  # (B, rows, 96, P)
            conv = tf.nn.conv2d(u, br.kernel, strides=1, padding="VALID")
            conv = tf.nn.bias_add(conv, br.bias)  # (B, rows', 96, P * F)
            m = tf.nn.max_pool2d(conv, ksize=[1, N_MELS], strides=[1, N_MELS], padding="VALID")
        out[br.name] = tf.identity(m, name=f"pool_{br.name}")
    return out


def backbone_tail(tf, pooled, net: Relayout):
    """Everything after the max-pools (fp32): batch norms, mid-end, back end.

    Returns
    -------
    embedding : tf.Tensor, float32, (B, 200)
    tags : tf.Tensor, float32, (B, 50)
    """
    feats = {}
    for br in net.branches:
        m = pooled[br.name]
        if br.kind == "timbral":
            m = tf.reshape(m, [-1, N_FRAMES, br.filters])
        else:
            P = net.time_fold
            rows_out = br.rows - (br.kernel.shape[0] - 1)
            m = tf.reshape(m, [-1, rows_out * P, br.filters])[:, :N_FRAMES, :]
        f = tf.nn.relu(m * br.sign) * br.scale + br.shift  # (B, 187, F)
        feats[br.name] = f
    prev = None
    for i, name in enumerate(MIDEND):
        acc = None
        for src, kernel in net.midend_kernels[i].items():
            src_t = tf.pad(feats[src], [[0, 0], [3, 3], [0, 0]])[:, :, None, :]  # (B,193,1,C)
            with tf.name_scope("midend"):  # the mid-end convolutions (a quantisation choice)
                y = tf.nn.conv2d(src_t, kernel, strides=1, padding="VALID")
            acc = y if acc is None else acc + y
        acc = tf.nn.bias_add(acc, net.midend_bias[i])[:, :, 0, :]  # (B, 187, 64)
        a, b = net.midend_bn[i]
        y = tf.nn.relu(acc) * a + b
        if prev is not None:
            y = y + feats[prev]
        feats[name] = y
        prev = name
    dense = None
    for name in FRONTEND + MIDEND:
        f = feats[name]
        term = tf.matmul(tf.reduce_max(f, axis=1), net.dense_max[name]) + tf.matmul(
            tf.reduce_mean(f, axis=1), net.dense_mean[name])
        dense = term if dense is None else dense + term
    dense = tf.nn.relu(dense + net.dense_bias)
    a, b = net.embedding_bn
    embedding = dense * a + b
    tags = tf.sigmoid(tf.matmul(embedding, net.tags_kernel) + net.tags_bias)
    return embedding, tags


def backbone(tf, log_mel, net: Relayout):
    """Log-mel patches ``(B, 187, 96)`` -> ``(embedding (B, 200), tags (B, 50))``."""
    x = log_mel * net.input_scale + net.input_shift
    return backbone_tail(tf, frontend_heavy(tf, x, net), net)


def checkpoint_prefix(pkg_dir: Path, model: str = "MSD_musicnn") -> str:
    """The TF1 checkpoint prefix inside the musicnn wheel (files named ``.index``, ``.data-*``)."""
    import os

    return str(Path(pkg_dir) / model) + os.sep


# --------------------------------------------------------------------------------------------
# the log-mel front end as graph ops (PCM in)
# --------------------------------------------------------------------------------------------


@dataclass
class PcmFrontEnd:
    """Matrices of the in-graph log-mel front end.

    The patch input is ``(frames + 1) * hop`` samples: frame ``i`` covers samples
    ``[i * hop, i * hop + n_fft)`` and, because ``n_fft == 2 * hop``, it is rows ``i`` and
    ``i + 1`` of the input reshaped to ``(frames + 1, hop)``. The periodic Hann window and the
    real DFT are one matrix ``dft`` ``(hop, 2 * n_out)``: ``y = rows @ dft`` and frame ``i``'s
    spectrum is ``y[i, :n_out] + y[i + 1, n_out:]`` (first and second half of the window). The
    ``n_out = n_fft`` spectrum columns are the cosine parts of bins ``0..n_fft/2`` and the sine
    parts of bins ``1..n_fft/2 - 1`` (the sine parts of bins 0 and ``n_fft/2`` are zero), so
    ``|X_k|^2`` summed through the mel filter bank is ``spectrum**2 @ mel2`` with ``mel2`` the
    filter bank's transpose stacked over both parts.
    """

    dft: np.ndarray  # (hop, 2 * n_fft) float32
    mel2: np.ndarray  # (n_fft, n_mels) float32
    hop: int
    n_fft: int
    frames: int
    log_scale: float  # 10000 in log10(10000 x + 1)
    log_offset: float

    @property
    def patch_samples(self) -> int:
        return (self.frames + 1) * self.hop


def pcm_frontend(mel_filters: np.ndarray, *, n_fft: int = 512, hop: int = 256,
                 frames: int = N_FRAMES, log_scale: float = 10000.0,
                 log_offset: float = 1.0) -> PcmFrontEnd:
    """The DFT and mel matrices for :func:`pcm_log_mel`.

    Parameters
    ----------
    mel_filters : ndarray, shape (n_mels, 1 + n_fft // 2)
        The Slaney mel filter bank (``deejai.engine.audio.mel_filters``, equal to
        ``librosa.filters.mel``).
    """
    if n_fft != 2 * hop:
        raise ValueError("the in-graph framing needs n_fft == 2 * hop")
    n = np.arange(n_fft)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / n_fft)  # periodic Hann
    k_cos = np.arange(n_fft // 2 + 1)
    k_sin = np.arange(1, n_fft // 2)
    basis = np.concatenate([np.cos(2 * np.pi * np.outer(n, k_cos) / n_fft),
                            np.sin(2 * np.pi * np.outer(n, k_sin) / n_fft)], axis=1)
    basis *= window[:, None]  # (n_fft, n_fft)
    dft = np.concatenate([basis[:hop], basis[hop:]], axis=1)  # (hop, 2 * n_fft)
    fb = np.asarray(mel_filters, dtype=np.float64).T  # (1 + n_fft/2, n_mels)
    mel2 = np.concatenate([fb, fb[1:n_fft // 2]], axis=0)
    return PcmFrontEnd(dft.astype(np.float32), mel2.astype(np.float32), hop, n_fft, frames,
                       float(log_scale), float(log_offset))


def pcm_log_mel(tf, pcm, fe: PcmFrontEnd):
    """``(B, patch_samples)`` float32 PCM -> ``(B, frames, n_mels)`` ``log10(s * mel + o)``."""
    rows = tf.reshape(pcm, [-1, fe.frames + 1, fe.hop])
    y = tf.matmul(rows, fe.dft)  # (B, frames + 1, 2 n_fft)
    spec = y[:, :-1, :fe.n_fft] + y[:, 1:, fe.n_fft:]
    mel = tf.matmul(tf.square(spec), fe.mel2)
    return tf.math.log(mel * fe.log_scale + fe.log_offset) * np.float32(1.0 / np.log(10.0))
