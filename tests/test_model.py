"""The shipped msd-musicnn (v1, log-mel in, fp32) model, its card, and the TFLite runtime wrapper
(real LiteRT). The v2 model (PCM in, int8) has its own tests in test_model_v2.py."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deejai.engine.errors import BackendUnavailableError, ModelError
from deejai.engine.model import (
    BACKENDS,
    AndroidBackend,
    IOSBackend,
    LiteRTBackend,
    Model,
    ModelCard,
    backend_order,
    current_platform,
    file_sha256,
    load_card,
    load_model,
)
from deejai.models import MODELS_DIR

V1 = "msd-musicnn"
MODEL_DIR = MODELS_DIR / V1
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(MODEL_DIR / "golden.npz") as g:
        return {k: g[k] for k in g.files}


@pytest.fixture(scope="module")
def model() -> Model:
    with Model(V1) as m:
        yield m


@pytest.fixture
def model_copy(tmp_path) -> Path:
    """A private copy of the shipped model folder, free to damage."""
    return Path(shutil.copytree(MODEL_DIR, tmp_path / "msd-musicnn"))


def _edit_card(folder: Path, **changes) -> None:
    path = folder / "card.json"
    card = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del card[key]
        else:
            card[key] = value
    path.write_text(json.dumps(card))


# ---------------------------------------------------------------------------- the shipped model


def test_golden_outputs_match_tensorflow_reference(model, golden):
    out = model.predict(golden["patches"])
    n = golden["patches"].shape[0]
    assert out["embedding"].shape == (n, 200) and out["embedding"].dtype == np.float32
    assert out["tags"].shape == (n, 50) and out["tags"].dtype == np.float32
    for key in ("embedding", "tags"):
        diff = np.abs(out[key] - golden[key]).max()
        assert diff <= TOLERANCE, f"{key}: max abs diff {diff:.3g}"
    # the reference itself is meaningful: probabilities, distinct embeddings per input
    assert np.all((golden["tags"] > 0) & (golden["tags"] < 1))
    assert np.isfinite(golden["embedding"]).all()
    assert np.abs(golden["embedding"][0] - golden["embedding"][2]).max() > 0.1


def test_golden_signal_patches_are_the_signal_log_mel(golden):
    logmel = golden["signal_log_mel"]
    assert logmel.shape[1] == 96 and np.isfinite(logmel).all()
    np.testing.assert_array_equal(golden["patches"][2], logmel[:187])
    np.testing.assert_array_equal(golden["patches"][3], logmel[-187:])


def test_card_matches_the_shipped_file():
    card = load_card(V1)
    assert file_sha256(card.model_file) == card.sha256
    assert (card.sample_rate_hz, card.n_fft, card.hop_length, card.n_mels) == (16000, 512, 256, 96)
    assert card.mel == "slaney" and card.power == 2
    assert card.compression == {"type": "log10", "scale": 10000, "offset": 1}
    assert card.patch_frames == 187 and card.outputs == {"embedding": 200, "tags": 50}
    assert len(card.tag_labels) == 50 and card.tag_labels[:3] == ("rock", "pop", "alternative")
    assert card.tag_labels[-1] == "happy"
    assert card.licence == "ISC" and "Pons" in card.citation
    assert card.input_name == "patches" and card.dynamic_batch
    assert card.get("pad_short") == "repeat"
    assert card.get("reference_frontend")["code"] == "musicnn.extractor.batch_data"
    assert (MODEL_DIR / "LICENSE").read_text().startswith("Copyright (c) Music Technology Group")


def test_load_by_folder_path_and_card_path(model_copy):
    assert load_card(model_copy).folder == model_copy
    assert load_card(model_copy / "card.json").folder == model_copy
    assert load_card(str(model_copy)).name == "msd-musicnn"


@pytest.mark.parametrize("batch_size", [1, 3, 17])
def test_batch_size_does_not_change_results(golden, rng, batch_size):
    x = np.concatenate(
        [golden["patches"], rng.uniform(0, 3, size=(15, 187, 96)).astype(np.float32)]
    )  # 19 patches: every batch size leaves a short last batch
    reference = _reference_outputs(x)
    with Model(V1, batch_size=batch_size) as m:
        assert m.batch_size == batch_size
        out = m.predict(x)
    for key in ("embedding", "tags"):
        np.testing.assert_array_equal(out[key], reference[key])


_REFERENCE: dict[bytes, dict[str, np.ndarray]] = {}


def _reference_outputs(x: np.ndarray) -> dict[str, np.ndarray]:
    """Outputs one patch at a time straight from LiteRT (computed once per input)."""
    key = x.tobytes()
    if key not in _REFERENCE:
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=str(MODEL_DIR / "model.tflite"), num_threads=1)
        interp.allocate_tensors()
        idx = interp.get_input_details()[0]["index"]
        outs = {d["name"]: d["index"] for d in interp.get_output_details()}
        rows = {name: [] for name in outs}
        for patch in x:
            interp.set_tensor(idx, patch[None])
            interp.invoke()
            for name, i in outs.items():
                rows[name].append(interp.get_tensor(i)[0].copy())
        _REFERENCE[key] = {name: np.stack(r) for name, r in rows.items()}
    return _REFERENCE[key]


def test_predict_empty_and_bad_input(model):
    out = model.predict(np.zeros((0, 187, 96), np.float32))
    assert out["embedding"].shape == (0, 200) and out["tags"].shape == (0, 50)
    with pytest.raises(ModelError, match=r"\(n, 187, 96\)"):
        model.predict(np.zeros((2, 100, 96), np.float32))
    with pytest.raises(ModelError, match=r"\(n, 187, 96\)"):
        model.predict(np.zeros((187, 96), np.float32))
    bad = np.zeros((1, 187, 96), np.float32)
    bad[0, 5, 5] = np.inf
    with pytest.raises(ModelError, match="infinite"):
        model.predict(bad)


def test_predict_accepts_float64_and_threads(golden):
    with Model(V1, threads=2, batch_size=4) as m:
        out = m.predict(golden["patches"].astype(np.float64))
    np.testing.assert_allclose(out["tags"], golden["tags"], atol=TOLERANCE)
    np.testing.assert_allclose(out["embedding"], golden["embedding"], atol=TOLERANCE)


# ---------------------------------------------------------------------------- damaged models


def test_missing_model_folder():
    with pytest.raises(ModelError, match="no model folder"):
        Model("no-such-model")
    with pytest.raises(ModelError, match="no model folder"):
        load_card("./no/such/folder")


def test_missing_model_file(model_copy):
    (model_copy / "model.tflite").unlink()
    with pytest.raises(ModelError, match="model file missing"):
        Model(model_copy)


def test_sha_mismatch(model_copy):
    path = model_copy / "model.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte inside the weights
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="does not match the card") as info:
        Model(model_copy)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_corrupt_file_with_matching_sha(model_copy):
    """A truncated file whose digest was copied into the card still fails, as a ModelError."""
    path = model_copy / "model.tflite"
    path.write_bytes(path.read_bytes()[:1000])
    _edit_card(model_copy, sha256=file_sha256(path))
    with pytest.raises(ModelError, match="cannot load the model") as info:
        Model(model_copy)
    assert "\n" not in str(info.value)


def test_card_missing_field(model_copy):
    _edit_card(model_copy, n_mels=None)
    with pytest.raises(ModelError, match="missing field 'n_mels'"):
        Model(model_copy)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"n_fft": "512"}, "wrong type"),
        ({"hop_length": 0}, "must be positive"),
        ({"tag_labels": ["rock"]}, "1 tag labels"),
        ({"outputs": {"tags": 50}}, "no 'embedding'"),
        ({"sha256": "xyz"}, "not a hex"),
        ({"compression": {"scale": 1}}, "no 'type'"),
    ],
)
def test_card_invalid_values(model_copy, changes, message):
    _edit_card(model_copy, **changes)
    with pytest.raises(ModelError, match=message):
        load_card(model_copy)


def test_card_not_json(model_copy):
    (model_copy / "card.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_card(model_copy)


def test_card_disagreeing_with_the_file(model_copy):
    _edit_card(model_copy, patch_frames=200)
    with pytest.raises(ModelError, match="input shape"):
        Model(model_copy)
    _edit_card(model_copy, patch_frames=187, output_tensors={"embedding": "emb", "tags": "tags"})
    with pytest.raises(ModelError, match="no output tensor 'emb'"):
        Model(model_copy)


def test_card_from_dict_keeps_unknown_fields(model_copy):
    data = json.loads((model_copy / "card.json").read_text())
    data["future_field"] = [1, 2]
    card = ModelCard.from_dict(data, model_copy)
    assert card.get("future_field") == [1, 2] and card.get("absent", 7) == 7


# ---------------------------------------------------------------------------- backends


def test_backend_order_on_desktop_and_mobile():
    desktop = backend_order("linux")
    assert [b.name for b in desktop] == ["litert", "tflite_runtime", "tensorflow"]
    assert AndroidBackend not in desktop and IOSBackend not in desktop
    assert backend_order("win32") == desktop
    assert backend_order("android") == [AndroidBackend]
    assert backend_order("ios") == [IOSBackend]


def test_current_platform(monkeypatch):
    monkeypatch.delenv("ANDROID_ARGUMENT", raising=False)
    assert current_platform() == sys.platform
    monkeypatch.setenv("ANDROID_ARGUMENT", "/data/user/0/org.deejai/files/app")
    assert current_platform() == "android"
    assert backend_order() == [AndroidBackend]


def test_default_backend_is_litert(model):
    assert isinstance(model.backend, LiteRTBackend) and model.backend.name == "litert"
    assert load_model(V1, backend="litert").backend.name == "litert"


def test_unknown_backend_name():
    with pytest.raises(ModelError, match="unknown TFLite backend 'nope'"):
        Model(V1, backend="nope")


def test_platform_backend_forced_on_desktop(monkeypatch):
    """Without pyjnius / pyobjus, forcing their backends names the package to install."""
    monkeypatch.setitem(sys.modules, "jnius", None)  # the tests of the Android decoder
    monkeypatch.setitem(sys.modules, "pyobjus", None)  # install pyjnius: hide it here
    with pytest.raises(BackendUnavailableError, match="pip install pyjnius"):
        Model(V1, backend="android")
    with pytest.raises(BackendUnavailableError, match="pip install pyobjus"):
        Model(V1, backend="ios")


def test_no_runtime_importable(monkeypatch):
    # A None entry in sys.modules makes the import statement raise ImportError.
    for backend in ("litert", "tflite_runtime", "tensorflow"):
        monkeypatch.setitem(sys.modules, BACKENDS[backend].module, None)
    with pytest.raises(BackendUnavailableError, match="pip install ai-edge-litert") as info:
        Model(V1)
    assert "\n" not in str(info.value)
    assert "tflite_runtime.interpreter" in str(info.value)


def test_falls_back_to_the_next_importable_runtime(monkeypatch):
    monkeypatch.setitem(sys.modules, "ai_edge_litert.interpreter", None)
    available = []
    for backend in ("tflite_runtime", "tensorflow"):
        try:
            BACKENDS[backend].import_runtime()
            available.append(backend)
        except Exception:
            pass
    if available:
        assert Model(V1).backend.name == available[0]
    else:
        with pytest.raises(BackendUnavailableError):
            Model(V1)


def test_bad_arguments():
    with pytest.raises(ModelError, match="batch_size"):
        Model(V1, batch_size=0)
    with pytest.raises(ModelError, match="threads"):
        Model(V1, threads=0)


def test_runtime_default_threads(golden):
    with Model(V1, threads=-1) as m:
        out = m.predict(golden["patches"][:1])
    np.testing.assert_allclose(out["tags"], golden["tags"][:1], atol=TOLERANCE)


def test_import_is_lazy():
    code = (
        "import sys, deejai.engine.model; "
        "bad = [m for m in ('ai_edge_litert', 'tflite_runtime', 'tensorflow', 'jnius', 'pyobjus')"
        " if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
