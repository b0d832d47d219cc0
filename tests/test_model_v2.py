"""msd-musicnn-v2: PCM in, the log-mel inside the graph, int8 front end; its card and variants."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deejai.engine import audio
from deejai.engine.errors import ModelError
from deejai.engine.model import Model, choose_variant, file_sha256, load_card
from deejai.models import DEFAULT_MODEL, MODELS_DIR

V2 = "msd-musicnn-v2"
FOLDER = MODELS_DIR / V2


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(FOLDER / "golden.npz") as g:
        return {k: g[k] for k in g.files}


def _cos(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


def test_v2_is_the_default_and_its_card_says_what_it_takes():
    assert DEFAULT_MODEL == V2
    card = load_card(V2)
    assert card.input_kind == "pcm" and card.input_shape == (48128,)
    assert card.patch_samples == (card.patch_frames + 1) * card.hop_length
    assert card.patch_offset_samples == -card.n_fft // 2
    assert set(card.variants) == {"int8", "fp32"} and card.default_variant == "int8"
    for name, spec in card.variants.items():
        assert file_sha256(card.variant_file(name)) == spec["sha256"]
    assert card.sha256 == card.variants["int8"]["sha256"]
    ops = json.loads((FOLDER / "card.json").read_text())["variants"]["int8"]["ops"]
    assert ops["heavy"] == {"int8": ops["heavy"]["int8"]} and ops["heavy"]["int8"] > 10
    assert "int8" not in ops["tail"] and "int8" not in ops["logmel"]
    fid = card.get("fidelity")["int8_vs_fp32_held_out"]
    assert fid["track_cosine_mean"] >= 0.995 and fid["track_cosine_min"] >= 0.98
    assert card.licence == "ISC" and "Pons" in card.citation
    assert (FOLDER / "LICENSE").read_text().startswith("Copyright (c) Music Technology Group")


def test_fp32_variant_equals_musicnn_on_the_golden_pcm(golden):
    with Model(V2, variant="fp32") as m:
        out = m.predict(golden["pcm"])
    for key in ("embedding", "tags"):
        diff = np.abs(out[key] - golden[key]).max()
        assert diff <= 1e-4, f"{key}: {diff:.3g}"
    # the reference is musicnn's own TF graph on librosa's log-mel of the same samples
    assert golden["log_mel"].shape == (len(golden["pcm"]), 187, 96)


def test_int8_variant_is_close_to_musicnn_on_the_golden_pcm(golden):
    with Model(V2, variant="int8") as m:
        out = m.predict(golden["pcm"])
    assert _cos(out["embedding"], golden["embedding"]).min() > 0.99
    assert np.abs(out["tags"] - golden["tags"]).max() < 0.05


def test_the_in_graph_log_mel_equals_the_numpy_front_end(golden):
    """Read the log-mel tensor inside the shipped graph (the output of the MUL by 1/ln 10
    after the only LOG op) and compare it with deejai's NumPy log-mel of the same samples."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(
        model_path=str(FOLDER / "model.tflite"), experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    ops = interp._get_ops_details()
    log_out = next(op["outputs"][0] for op in ops if op["op_name"] == "LOG")
    mel_idx = next(op["outputs"][0] for op in ops
                   if op["op_name"] == "MUL" and log_out in list(op["inputs"]))
    inp = interp.get_input_details()[0]
    card = load_card(V2)
    pcm = golden["pcm"]
    interp.resize_tensor_input(inp["index"], list(pcm.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], pcm)
    interp.invoke()
    in_graph = interp.get_tensor(mel_idx)
    ours = np.stack([audio.log_mel(w, card)[1:1 + card.patch_frames] for w in pcm])
    assert in_graph.shape == ours.shape
    assert np.abs(in_graph - ours).max() <= 1e-4
    np.testing.assert_allclose(ours, golden["log_mel"], atol=1e-4)  # and librosa's


def test_pcm_patches_feed_the_model_like_log_mel_patches_feed_v1(tmp_path):
    """The same track through v1 (NumPy log-mel) and v2's fp32 variant (log-mel in the graph):
    the PCM windows sit where the log-mel patches do, so the embeddings agree."""
    from tests.audiogen import write_mp3

    path = write_mp3(tmp_path / "a.mp3", seconds=30.0, kind="chirp", seed=5)
    v1 = Model("msd-musicnn")
    v2 = Model(V2, variant="fp32")
    mel, starts1, _ = audio.load_patches(path, v1.card, 6)
    pcm, starts2, _ = audio.load_pcm_patches(path, v2.card, 6)
    np.testing.assert_array_equal(starts1, starts2)
    assert pcm.shape == (6, 48128)
    e1, e2 = v1.predict(mel)["embedding"], v2.predict(pcm)["embedding"]
    assert _cos(e1, e2).min() > 0.99999


def test_short_track_repeats_its_samples(tmp_path):
    from tests.audiogen import write_mp3

    path = write_mp3(tmp_path / "short.mp3", seconds=1.0, kind="chord", seed=1)
    card = load_card(V2)
    pcm, starts, dur = audio.load_pcm_patches(path, card, 4)
    assert pcm.shape == (1, 48128) and starts.tolist() == [0.0] and 0.9 < dur < 1.1
    lead = -card.patch_offset_samples
    assert np.all(pcm[0, :lead] == 0)
    n = int(round(dur * card.sample_rate_hz))
    np.testing.assert_array_equal(pcm[0, lead:lead + n], pcm[0, lead + n:lead + 2 * n])
    zeros, _, _ = audio.load_pcm_patches(path, {**card.__dict__, "pad_short": "zeros"}, 4)
    assert np.all(zeros[0, lead + n + 1:] == 0)


def test_predict_rejects_log_mel_patches_for_a_pcm_model():
    with Model(V2) as m:
        with pytest.raises(ModelError, match=r"\(n, 48128\)"):
            m.predict(np.zeros((2, 187, 96), np.float32))


def test_variant_choice_measures_where_the_cpu_has_no_int8_dot_product(tmp_path):
    card = load_card(V2)
    cache = tmp_path / "variants.json"
    chosen = choose_variant(card, cache=cache, measure=True)
    record = json.loads(cache.read_text())
    (entry,) = record.values()
    assert entry["variant"] == chosen
    times = entry["seconds_per_patch"]
    assert set(times) == {"int8", "fp32"} and chosen == min(times, key=times.get)
    # the verdict is reused, not measured again
    record[next(iter(record))]["variant"] = "fp32"
    cache.write_text(json.dumps(record))
    assert choose_variant(card, cache=cache, measure=True) == "fp32"
    assert choose_variant(card, measure=False) == "int8"


def test_a_damaged_variant_file_is_refused(tmp_path):
    folder = Path(shutil.copytree(FOLDER, tmp_path / V2))
    data = bytearray((folder / "model-fp32.tflite").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "model-fp32.tflite").write_bytes(bytes(data))
    with pytest.raises(ModelError, match="sha256"):
        Model(folder, variant="fp32")
    Model(folder, variant="int8").close()  # the other file is fine
    with pytest.raises(ModelError, match="no variant 'int4'"):
        Model(folder, variant="int4")
