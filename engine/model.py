"""Model cards and the TFLite interpreter that runs them.

A model is a folder holding ``model.tflite`` and ``card.json`` (see ``docs/models.md``). The
card says how to turn audio into input patches (sample rate, STFT and mel settings, compression,
patch length) and what comes out (output names and sizes, tag labels); it also records the
sha256 of ``model.tflite``, checked on every load.

:class:`Model` runs the model through the first TFLite runtime that can be imported::

    desktop   ai_edge_litert  ->  tflite_runtime  ->  tensorflow.lite
    Android   org.tensorflow.lite.Interpreter (Java, through pyjnius)
    iOS       TFLInterpreter (TensorFlowLiteObjC, through pyobjus)

``ai-edge-litert`` (LiteRT, the current name of the standalone TFLite runtime) is the default:
``tflite-runtime`` stopped at 2.14, whose wheels are built against NumPy 1.x and fail to import
under NumPy 2. Runtime imports are lazy: importing this module imports only NumPy.

An interpreter is not thread-safe; use one :class:`Model` per thread or process.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import os
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Iterator, Mapping

import numpy as np

from deejai.engine.errors import BackendUnavailableError, ModelError
from deejai.engine.platforms import current_platform

__all__ = [
    "ModelCard",
    "Model",
    "load_card",
    "load_model",
    "resolve_model_dir",
    "file_sha256",
    "verified_file",
    "Backend",
    "LiteRTBackend",
    "TFLiteRuntimeBackend",
    "TensorFlowBackend",
    "AndroidBackend",
    "IOSBackend",
    "BACKENDS",
    "backend_order",
    "current_platform",
    "choose_variant",
    "time_variant",
    "has_int8_dot_product",
    "cpu_features",
    "AUTO_VARIANT",
]

CARD_FILE = "card.json"
MODEL_FILE = "model.tflite"


# --------------------------------------------------------------------------------------------
# the model card
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelCard:
    """What a model folder's ``card.json`` says about the model.

    Attributes
    ----------
    name, version : str
        Identity of the model; ``name`` is what the library records vectors under.
    sample_rate_hz : int
        Rate the audio is resampled to (Hz).
    n_fft, hop_length, n_mels : int
        STFT window length and hop (samples) and number of mel bands.
    mel : str
        Mel filterbank flavour, ``"slaney"`` (librosa's default: ``htk=False``,
        ``norm="slaney"``) or ``"htk"``.
    power : float
        Exponent of the STFT magnitude (2 = power spectrogram).
    compression : dict
        How mel power is compressed, e.g. ``{"type": "log10", "scale": 10000, "offset": 1}``
        for ``log10(10000 * x + 1)``.
    patch_frames : int
        Frames per input patch (the model's input is ``(batch, patch_frames, n_mels)``).
    outputs : dict of str to int
        Output name -> size, e.g. ``{"embedding": 200, "tags": 50}``.
    tag_labels : tuple of str
        Label of every tag probability, in output order (empty for a model without ``tags``).
    input_name : str
        Name of the input tensor in ``model.tflite``.
    output_tensors : dict of str to str
        Output name -> tensor name in ``model.tflite``.
    licence, citation : str
    source : dict
        Where the weights came from and how they were converted.
    sha256 : str
        Hex digest of ``model.tflite``.
    folder : Path
        The model folder the card was read from.
    fmin_hz, fmax_hz : float
        Mel filterbank edges (default 0 and Nyquist).
    patch_hop_frames : int
        Hop between consecutive patches (default ``patch_frames``: no overlap).
    pad_short : str
        How audio shorter than one patch is padded (``"repeat"`` or ``"zeros"``).
    dynamic_batch : bool
        Whether the batch dimension can be resized.
    input_kind : str
        ``"log_mel"``: the model reads compressed log-mel patches ``(batch, patch_frames,
        n_mels)`` made by :mod:`deejai.engine.audio`; ``"pcm"``: it reads mono samples
        ``(batch, patch_samples)`` at ``sample_rate_hz`` and computes the log-mel itself (the
        STFT/mel fields then describe the in-graph front end).
    patch_samples : int or None
        Samples per input patch of a ``"pcm"`` model (``(patch_frames + 1) * hop_length`` for
        musicnn's centred frames).
    patch_offset_samples : int
        Where a PCM patch starts relative to the centre of its first STFT frame (``-n_fft/2``).
    variants : dict of str to dict
        The model files, by variant name (e.g. ``"int8"``, ``"fp32"``): ``{"file": ...,
        "sha256": ...}``. A card without ``variants`` has one, ``"default"``: ``model.tflite``
        with the card's ``sha256``.
    default_variant : str
        The variant used when none is chosen.
    extra : dict
        Every other field of ``card.json``, kept as read.
    """

    name: str
    version: str
    sample_rate_hz: int
    n_fft: int
    hop_length: int
    n_mels: int
    mel: str
    power: float
    compression: dict
    patch_frames: int
    outputs: dict
    tag_labels: tuple
    input_name: str
    output_tensors: dict
    licence: str
    source: dict
    citation: str
    sha256: str
    folder: Path
    fmin_hz: float = 0.0
    fmax_hz: float | None = None
    patch_hop_frames: int | None = None
    pad_short: str = "repeat"
    dynamic_batch: bool = True
    input_kind: str = "log_mel"
    patch_samples: int | None = None
    patch_offset_samples: int = 0
    variants: dict = field(default_factory=dict)
    default_variant: str = "default"
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    #: Fields ``card.json`` must have, with the type each must have.
    REQUIRED: ClassVar[dict[str, type | tuple[type, ...]]] = {
        "name": str,
        "version": str,
        "sample_rate_hz": int,
        "n_fft": int,
        "hop_length": int,
        "n_mels": int,
        "mel": str,
        "power": (int, float),
        "compression": dict,
        "patch_frames": int,
        "outputs": dict,
        "tag_labels": list,
        "input": dict,
        "output_tensors": dict,
        "licence": str,
        "source": dict,
        "citation": str,
        "sha256": str,
    }

    def __hash__(self) -> int:
        return hash((self.name, self.sha256, str(self.folder)))

    @property
    def model_file(self) -> Path:
        """Path of the default variant's file (``model.tflite``) in the model folder."""
        return self.variant_file(self.default_variant)

    def variant_file(self, variant: str) -> Path:
        """Path of a variant's ``.tflite`` file.

        Raises
        ------
        ModelError
            The card has no such variant.
        """
        if variant not in self.variants:
            raise ModelError(f"{self.name} has no variant {variant!r} "
                             f"(it has {', '.join(self.variants)})")
        return self.folder / self.variants[variant]["file"]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input patch: ``(patch_frames, n_mels)`` or ``(patch_samples,)``."""
        if self.input_kind == "pcm":
            return (int(self.patch_samples),)
        return (self.patch_frames, self.n_mels)

    @property
    def embedding_dim(self) -> int:
        """Size of the ``embedding`` output."""
        return int(self.outputs["embedding"])

    @property
    def n_tags(self) -> int:
        """Number of tag probabilities (0 when the model has no ``tags`` output)."""
        return int(self.outputs.get("tags", 0))

    @property
    def patch_seconds(self) -> float:
        """Approximate duration of one patch in seconds (``patch_frames * hop / rate``)."""
        return self.patch_frames * self.hop_length / self.sample_rate_hz

    def get(self, key: str, default: Any = None) -> Any:
        """Mapping-style access to any card field, typed ones first then :attr:`extra`."""
        if key != "extra" and key in {f.name for f in fields(self)}:
            return getattr(self, key)
        return self.extra.get(key, default)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], folder: Path) -> "ModelCard":
        """Validate ``data`` (a parsed ``card.json``) and build the card.

        Raises
        ------
        ModelError
            A required field is missing or has the wrong type, the sizes disagree (e.g. the
            number of tag labels and the ``tags`` output size), or a value is out of range.
        """
        where = Path(folder) / CARD_FILE
        if not isinstance(data, Mapping):
            raise ModelError(f"{where}: expected a JSON object")
        for key, typ in cls.REQUIRED.items():
            if key not in data:
                raise ModelError(f"{where}: missing field {key!r}")
            value = data[key]
            if not isinstance(value, typ) or (typ is int and isinstance(value, bool)):
                raise ModelError(f"{where}: field {key!r} has the wrong type ({type(value).__name__})")
        for key in ("sample_rate_hz", "n_fft", "hop_length", "n_mels", "patch_frames"):
            if data[key] <= 0:
                raise ModelError(f"{where}: field {key!r} must be positive, got {data[key]}")
        outputs = dict(data["outputs"])
        if "embedding" not in outputs:
            raise ModelError(f"{where}: 'outputs' has no 'embedding'")
        if any(not isinstance(v, int) or isinstance(v, bool) or v <= 0 for v in outputs.values()):
            raise ModelError(f"{where}: 'outputs' sizes must be positive integers")
        missing = set(outputs) - set(data["output_tensors"])
        if missing:
            raise ModelError(f"{where}: 'output_tensors' names no tensor for {sorted(missing)}")
        labels = tuple(str(t) for t in data["tag_labels"])
        if len(labels) != outputs.get("tags", 0):
            raise ModelError(
                f"{where}: {len(labels)} tag labels for a 'tags' output of size "
                f"{outputs.get('tags', 0)}"
            )
        if "type" not in data["compression"]:
            raise ModelError(f"{where}: 'compression' has no 'type'")
        inp = data["input"]
        if not isinstance(inp.get("name"), str):
            raise ModelError(f"{where}: 'input' has no tensor 'name'")
        sha = data["sha256"].lower()
        if not _is_sha256(sha):
            raise ModelError(f"{where}: 'sha256' is not a hex SHA-256 digest")
        input_kind = str(inp.get("kind", "log_mel"))
        if input_kind not in ("log_mel", "pcm"):
            raise ModelError(f"{where}: 'input.kind' must be 'log_mel' or 'pcm', got {input_kind!r}")
        patch_samples = data.get("patch_samples")
        if input_kind == "pcm" and (not isinstance(patch_samples, int) or patch_samples <= 0):
            raise ModelError(f"{where}: a 'pcm' model needs a positive integer 'patch_samples'")
        variants = data.get("variants") or {"default": {"file": MODEL_FILE, "sha256": sha}}
        if not isinstance(variants, Mapping) or not variants:
            raise ModelError(f"{where}: 'variants' must be an object of variant -> file")
        for vname, spec in variants.items():
            if (not isinstance(spec, Mapping) or not isinstance(spec.get("file"), str)
                    or not _is_sha256(str(spec.get("sha256", "")).lower())
                    or os.path.basename(spec["file"]) != spec["file"]):
                raise ModelError(f"{where}: variant {vname!r} needs a plain 'file' name and a "
                                 "hex 'sha256'")
        default_variant = str(data.get("default_variant") or next(iter(variants)))
        if default_variant not in variants:
            raise ModelError(f"{where}: 'default_variant' {default_variant!r} is not a variant")
        known = set(cls.REQUIRED) | {
            "fmin_hz", "fmax_hz", "patch_hop_frames", "pad_short", "dynamic_batch",
            "patch_samples", "patch_offset_samples", "variants", "default_variant",
        }
        return cls(
            name=data["name"],
            version=data["version"],
            sample_rate_hz=data["sample_rate_hz"],
            n_fft=data["n_fft"],
            hop_length=data["hop_length"],
            n_mels=data["n_mels"],
            mel=data["mel"],
            power=float(data["power"]),
            compression=dict(data["compression"]),
            patch_frames=data["patch_frames"],
            outputs=outputs,
            tag_labels=labels,
            input_name=inp["name"],
            output_tensors={k: str(data["output_tensors"][k]) for k in outputs},
            licence=data["licence"],
            source=dict(data["source"]),
            citation=data["citation"],
            sha256=sha,
            folder=Path(folder),
            fmin_hz=float(data.get("fmin_hz", 0.0)),
            fmax_hz=None if data.get("fmax_hz") is None else float(data["fmax_hz"]),
            patch_hop_frames=int(data.get("patch_hop_frames") or data["patch_frames"]),
            pad_short=str(data.get("pad_short", "repeat")),
            dynamic_batch=bool(data.get("dynamic_batch", True)),
            input_kind=input_kind,
            patch_samples=int(patch_samples) if input_kind == "pcm" else None,
            patch_offset_samples=int(data.get("patch_offset_samples",
                                              -(data["n_fft"] // 2) if input_kind == "pcm" else 0)),
            variants={k: {"file": str(v["file"]), "sha256": str(v["sha256"]).lower()}
                      for k, v in variants.items()},
            default_variant=default_variant,
            extra={k: v for k, v in data.items() if k not in known},
        )


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(c in "0123456789abcdef" for c in text)


def resolve_model_dir(name_or_path: str | os.PathLike[str]) -> Path:
    """The folder of a model given by name (a folder in ``deejai.models.MODELS_DIR``) or path.

    A value that is a ``Path``, contains a path separator, or starts with ``~`` or ``.`` is a
    path (a model folder, or its ``card.json``/``model.tflite``); anything else is a name.

    Raises
    ------
    ModelError
        No such model folder.
    """
    from deejai.models import MODELS_DIR

    text = os.fspath(name_or_path)
    is_path = (
        isinstance(name_or_path, os.PathLike)
        or os.sep in text
        or (os.altsep is not None and os.altsep in text)
        or text.startswith(("~", "."))
    )
    if not text:
        raise ModelError("no model name given")
    if is_path:
        folder = Path(text).expanduser()
        if folder.is_file() and folder.name in (CARD_FILE, MODEL_FILE):
            folder = folder.parent
    else:
        folder = MODELS_DIR / text
    if not folder.is_dir():
        where = "" if is_path else f" in {MODELS_DIR}"
        raise ModelError(f"no model folder {folder}{where}")
    return folder


def load_card(name_or_path: str | os.PathLike[str]) -> ModelCard:
    """Read and validate the ``card.json`` of a model given by name or folder.

    Parameters
    ----------
    name_or_path : str or path
        A shipped model's name (e.g. ``"msd-musicnn"``) or a model folder.

    Returns
    -------
    ModelCard

    Raises
    ------
    ModelError
        Missing folder or card, invalid JSON, or an invalid card (see
        :meth:`ModelCard.from_dict`).
    """
    folder = resolve_model_dir(name_or_path)
    path = folder / CARD_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: model card missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: cannot read the model card ({exc})") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    return ModelCard.from_dict(data, folder)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 digest of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verified_file(card: "ModelCard", variant: str) -> tuple[Path, str]:
    """The ``.tflite`` file of ``card``'s ``variant``, checked against the card's sha256.

    Returns
    -------
    (Path, str)
        The file and its hex SHA-256 digest.

    Raises
    ------
    ModelError
        The card has no such variant, the file is missing or unreadable, or its digest is
        not the card's (a corrupt or replaced file).
    """
    path = card.variant_file(variant)
    if not path.is_file():
        raise ModelError(f"{path}: model file missing")
    try:
        digest = file_sha256(path)
    except OSError as exc:
        raise ModelError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None
    expected = card.variants[variant]["sha256"]
    if digest != expected:
        raise ModelError(
            f"{path}: sha256 {digest[:12]}… does not match the card's {expected[:12]}…"
            " (corrupt or replaced file)"
        )
    return path, digest


# --------------------------------------------------------------------------------------------
# runtime backends
# --------------------------------------------------------------------------------------------


class Backend(ABC):
    """One TFLite interpreter, loaded from a file, run on one batch at a time.

    Subclasses set :attr:`name` (what ``Model(backend=...)`` accepts), :attr:`module` (what is
    imported) and :attr:`pip_package` (what to install), and implement :meth:`_load` and
    :meth:`run`.

    Parameters
    ----------
    model_path : Path
        The ``.tflite`` file.
    threads : int
        Interpreter threads (``num_threads``); -1 lets the runtime choose.
    """

    name: ClassVar[str]
    module: ClassVar[str]
    pip_package: ClassVar[str]
    #: Platforms (``current_platform()`` values) this backend is chosen on automatically;
    #: ``None`` means every platform except Android and iOS.
    platforms: ClassVar[frozenset[str] | None] = None

    def __init__(self, model_path: Path, threads: int = 1):
        self.model_path = Path(model_path)
        self.threads = threads
        self._load()

    @classmethod
    def import_runtime(cls) -> Any:
        """Import and return the runtime module; raises ImportError (or what the import raises)."""
        return importlib.import_module(cls.module)

    @classmethod
    def selectable_on(cls, platform: str) -> bool:
        """Whether :func:`backend_order` tries this backend on ``platform``."""
        if cls.platforms is None:
            return platform not in ("android", "ios")
        return platform in cls.platforms

    @abstractmethod
    def _load(self) -> None:
        """Create the interpreter; raise anything on failure (the caller wraps it)."""

    @property
    @abstractmethod
    def input_shape(self) -> tuple[int, ...]:
        """Shape signature of the input, ``-1`` for a dynamic dimension."""

    @abstractmethod
    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Run one batch.

        Parameters
        ----------
        batch : ndarray, float32, C-contiguous, shape (b, *card.input_shape)
            ``b`` is ``input_shape[0]`` for a fixed-batch model, any ``b >= 1`` otherwise.

        Returns
        -------
        dict of str to ndarray
            Tensor name -> output array, first dimension ``b`` (copies, not views).
        """

    def close(self) -> None:
        """Release the interpreter."""


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C++ log lines of the TFLite runtime) while the block runs.

    Python exceptions still propagate; only text the native runtime writes to stderr is lost.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable fd 2 (embedded interpreters)
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


class _PythonInterpreterBackend(Backend):
    """The ``Interpreter`` class shared by LiteRT, tflite_runtime and ``tf.lite``."""

    def _interpreter_class(self) -> Any:
        return self.import_runtime().Interpreter

    def _load(self) -> None:
        cls = self._interpreter_class()
        threads = None if self.threads == -1 else self.threads  # None: the runtime default
        with _quiet_stderr():  # the runtime prints an INFO line about XNNPACK on every load
            self._interp = cls(model_path=str(self.model_path), num_threads=threads)
            self._interp.allocate_tensors()
        inp = self._interp.get_input_details()
        if len(inp) != 1:
            raise ValueError(f"expected one input tensor, found {len(inp)}")
        self._input = inp[0]
        sig = self._input.get("shape_signature")
        self._signature = tuple(int(d) for d in (sig if sig is not None and len(sig) else self._input["shape"]))
        self._batch = int(self._input["shape"][0])
        self._outputs = [(d["name"], d["index"]) for d in self._interp.get_output_details()]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._signature

    @property
    def output_names(self) -> list[str]:
        return [n for n, _ in self._outputs]

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch.shape[0] != self._batch:
            self._interp.resize_tensor_input(self._input["index"], list(batch.shape), strict=True)
            self._interp.allocate_tensors()
            self._batch = batch.shape[0]
        self._interp.set_tensor(self._input["index"], batch)
        self._interp.invoke()
        return {name: self._interp.get_tensor(idx).copy() for name, idx in self._outputs}

    def close(self) -> None:
        self.__dict__.pop("_interp", None)


class LiteRTBackend(_PythonInterpreterBackend):
    """LiteRT: ``from ai_edge_litert.interpreter import Interpreter`` (desktop default)."""

    name = "litert"
    module = "ai_edge_litert.interpreter"
    pip_package = "ai-edge-litert"


class TFLiteRuntimeBackend(_PythonInterpreterBackend):
    """``tflite_runtime.interpreter`` (tflite-runtime <= 2.14: needs NumPy 1.x)."""

    name = "tflite_runtime"
    module = "tflite_runtime.interpreter"
    pip_package = "tflite-runtime"


class TensorFlowBackend(_PythonInterpreterBackend):
    """``tensorflow.lite.Interpreter`` from full TensorFlow (e.g. on Windows)."""

    name = "tensorflow"
    module = "tensorflow"
    pip_package = "tensorflow"

    def _interpreter_class(self) -> Any:
        return self.import_runtime().lite.Interpreter


class AndroidBackend(Backend):
    """The Java ``org.tensorflow.lite.Interpreter`` through pyjnius (python-for-android).

    The APK needs the TFLite AAR (buildozer ``android.gradle_dependencies =
    org.tensorflow:tensorflow-lite:2.x``) and pyjnius in its requirements. Tensors are
    exchanged as native-order ``java.nio.ByteBuffer``\\ s, as in the Kivy TFLite examples.
    """

    name = "android"
    module = "jnius"
    pip_package = "pyjnius"
    platforms = frozenset({"android"})

    def _load(self) -> None:
        jnius = self.import_runtime()
        self._ByteBuffer = jnius.autoclass("java.nio.ByteBuffer")
        self._ByteOrder = jnius.autoclass("java.nio.ByteOrder")
        self._HashMap = jnius.autoclass("java.util.HashMap")
        self._Integer = jnius.autoclass("java.lang.Integer")
        File = jnius.autoclass("java.io.File")
        Interpreter = jnius.autoclass("org.tensorflow.lite.Interpreter")
        Options = jnius.autoclass("org.tensorflow.lite.Interpreter$Options")
        options = Options()
        options.setNumThreads(self.threads)
        self._interp = Interpreter(File(str(self.model_path)), options)
        self._shape = tuple(int(d) for d in self._interp.getInputTensor(0).shapeSignature())
        self._batch = int(self._interp.getInputTensor(0).shape()[0])
        self._n_out = int(self._interp.getOutputTensorCount())

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._shape

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch.shape[0] != self._batch:
            self._interp.resizeInput(0, list(batch.shape))
            self._interp.allocateTensors()
            self._batch = batch.shape[0]
        native = self._ByteOrder.nativeOrder()
        inp = self._ByteBuffer.wrap(batch.tobytes()).order(native)
        outputs, buffers = self._HashMap(), []
        for i in range(self._n_out):
            tensor = self._interp.getOutputTensor(i)
            buf = self._ByteBuffer.allocate(int(tensor.numBytes())).order(native)
            buffers.append((str(tensor.name()), tuple(tensor.shape()), buf))
            outputs.put(self._Integer(i), buf)
        self._interp.runForMultipleInputsOutputs([inp], outputs)
        result = {}
        for name, shape, buf in buffers:
            raw = buf.array()
            data = raw.tostring() if hasattr(raw, "tostring") else bytes(b & 0xFF for b in raw)
            result[name] = np.frombuffer(data, dtype="<f4").reshape(shape).copy()
        return result

    def close(self) -> None:
        interp = self.__dict__.pop("_interp", None)
        if interp is not None:
            interp.close()


class IOSBackend(Backend):
    """``TFLInterpreter`` from the TensorFlowLiteObjC pod through pyobjus (kivy-ios).

    The Xcode project needs the ``TensorFlowLiteObjC`` pod linked and pyobjus in the
    kivy-ios recipes. Errors come back as ``nil`` results (the ``NSError**`` arguments are
    passed as ``None``).
    """

    name = "ios"
    module = "pyobjus"
    pip_package = "pyobjus"
    platforms = frozenset({"ios"})

    def _load(self) -> None:
        pyobjus = self.import_runtime()
        self._pyobjus = pyobjus
        self._NSData = pyobjus.autoclass("NSData")
        Options = pyobjus.autoclass("TFLInterpreterOptions")
        Interpreter = pyobjus.autoclass("TFLInterpreter")
        options = Options.alloc().init()
        options.setNumberOfThreads_(max(self.threads, 1))
        self._interp = Interpreter.alloc().initWithModelPath_options_error_(
            str(self.model_path), options, None
        )
        if self._interp is None or not self._interp.allocateTensorsWithError_(None):
            raise RuntimeError("TFLInterpreter could not load the model")
        shape = self._shape_of(self._interp.inputTensorAtIndex_error_(0, None))
        self._shape = (-1, *shape[1:])
        self._batch = shape[0]
        self._n_out = int(_objc_value(self._interp, "outputTensorCount"))

    @staticmethod
    def _shape_of(tensor: Any) -> tuple[int, ...]:
        dims = tensor.shapeWithError_(None)
        return tuple(int(dims.objectAtIndex_(i).intValue()) for i in range(int(dims.count())))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._shape

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if batch.shape[0] != self._batch:
            NSNumber = self._pyobjus.autoclass("NSNumber")
            shape = self._pyobjus.autoclass("NSMutableArray").alloc().init()
            for d in batch.shape:
                shape.addObject_(NSNumber.numberWithInt_(int(d)))
            self._interp.resizeInputTensorAtIndex_toShape_error_(0, shape, None)
            self._interp.allocateTensorsWithError_(None)
            self._batch = batch.shape[0]
        raw = batch.tobytes()
        data = self._NSData.dataWithBytes_length_(raw, len(raw))
        self._interp.inputTensorAtIndex_error_(0, None).copyData_error_(data, None)
        if not self._interp.invokeWithError_(None):
            raise RuntimeError("TFLInterpreter invoke failed")
        result = {}
        for i in range(self._n_out):
            tensor = self._interp.outputTensorAtIndex_error_(i, None)
            shape = self._shape_of(tensor)
            out = tensor.dataWithError_(None)
            length = int(out.length())
            buf = self._pyobjus.dereference(out.bytes(), of_type=bytes, length=length)
            name = str(_objc_value(_objc_value(tensor, "name"), "UTF8String"))
            result[name] = np.frombuffer(buf, dtype="<f4", count=length // 4).reshape(shape).copy()
        return result


def _objc_value(obj: Any, attr: str) -> Any:
    """Read an Objective-C property through pyobjus (exposed as a method or as a value)."""
    value = getattr(obj, attr)
    return value() if callable(value) else value


#: Every backend, by name, in the order they are tried.
BACKENDS: dict[str, type[Backend]] = {
    cls.name: cls
    for cls in (LiteRTBackend, TFLiteRuntimeBackend, TensorFlowBackend, AndroidBackend, IOSBackend)
}


def backend_order(platform: str | None = None) -> list[type[Backend]]:
    """The backends tried automatically on ``platform`` (default: :func:`current_platform`)."""
    platform = platform or current_platform()
    return [cls for cls in BACKENDS.values() if cls.selectable_on(platform)]


def _open_backend(model_path: Path, threads: int, backend: str | None) -> Backend:
    """Open ``model_path`` with the named backend, or the first importable one."""
    if backend is not None:
        if backend not in BACKENDS:
            raise ModelError(
                f"unknown TFLite backend {backend!r} (choose from {', '.join(BACKENDS)})"
            )
        candidates = [BACKENDS[backend]]
    else:
        candidates = backend_order()
    failures = []
    for cls in candidates:
        try:
            cls.import_runtime()
        except Exception as exc:  # noqa: BLE001 - e.g. tflite_runtime vs NumPy 2 raises ImportError/AttributeError
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            failures.append((cls, reason))
            continue
        try:
            return cls(model_path, threads)
        except Exception as exc:  # noqa: BLE001 - runtimes raise ValueError/RuntimeError/Java errors
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise ModelError(f"{model_path}: {cls.name} cannot load the model ({msg})") from None
    tried = "; ".join(f"{cls.module}: {reason}" for cls, reason in failures)
    packages = " or ".join(dict.fromkeys(cls.pip_package for cls, _ in failures))
    raise BackendUnavailableError(
        f"no TFLite runtime can be imported ({tried}); install one: pip install {packages}"
    )


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


#: ``Model(variant=...)`` values besides a card's variant names.
AUTO_VARIANT = "auto"


class Model:
    """A model folder loaded into a TFLite interpreter.

    Parameters
    ----------
    name_or_path : str or path
        A shipped model's name (a folder of ``deejai.models.MODELS_DIR``) or a model folder.
    threads : int
        Interpreter threads (``num_threads``), >= 1; -1 lets the runtime choose.
    batch_size : int
        Patches per ``invoke``; a fixed-batch model runs in its own batch size instead and pads
        the last batch with zeros.
    backend : str, optional
        Force one backend (``"litert"``, ``"tflite_runtime"``, ``"tensorflow"``,
        ``"android"``, ``"ios"``); default: the first importable for this platform.
    variant : str, optional
        Which of the card's model files to run (``"int8"``, ``"fp32"``, ...). ``None`` or
        ``"auto"``: the faster one on this machine, see :func:`choose_variant` (for a card with
        one file, that file).

    Attributes
    ----------
    card : ModelCard
    backend : Backend
    batch_size : int
        The batch size actually used.
    variant : str
        The variant loaded.

    Raises
    ------
    ModelError
        Missing folder, invalid card, missing ``.tflite`` file, sha256 mismatch, a file the
        runtime cannot load, tensors that disagree with the card, an unknown backend or
        variant name.
    BackendUnavailableError
        No TFLite runtime can be imported (the message names the pip package to install).
    """

    def __init__(
        self,
        name_or_path: str | os.PathLike[str] | None = None,
        *,
        threads: int = 1,
        batch_size: int = 16,
        backend: str | None = None,
        variant: str | None = None,
    ):
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ModelError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(threads, int) or (threads < 1 and threads != -1):
            raise ModelError(f"threads must be >= 1 (or -1 for the runtime's choice), got {threads!r}")
        self.card = load_card(name_or_path if name_or_path is not None else _default_model())
        if variant in (None, AUTO_VARIANT):
            variant = choose_variant(self.card, threads=threads, backend=backend)
        path, _ = verified_file(self.card, variant)
        self.variant = variant
        self.backend = _open_backend(path, threads, backend)
        self._check_tensors(path)
        fixed = self.backend.input_shape[0]
        self.batch_size = batch_size if fixed == -1 else int(fixed)
        self._fixed_batch = fixed != -1

    def _check_tensors(self, path: Path) -> None:
        card, shape = self.card, self.backend.input_shape
        if tuple(shape[1:]) != card.input_shape:
            raise ModelError(
                f"{path}: input shape {list(shape)} does not match the card's "
                f"(batch, {', '.join(str(d) for d in card.input_shape)})"
            )
        names = getattr(self.backend, "output_names", None)
        if names is not None:
            absent = [t for t in card.output_tensors.values() if t not in names]
            if absent:
                raise ModelError(
                    f"{path}: no output tensor {absent[0]!r} (has {', '.join(names)})"
                )

    @property
    def name(self) -> str:
        """The card's model name."""
        return self.card.name

    @property
    def embedding_dim(self) -> int:
        """Size of the embedding output."""
        return self.card.embedding_dim

    def predict(self, patches: np.ndarray) -> dict[str, np.ndarray]:
        """Run the model on input patches.

        Parameters
        ----------
        patches : array_like, float32
            ``(n, *card.input_shape)``: compressed log-mel patches ``(n, patch_frames,
            n_mels)`` (e.g. ``(n, 187, 96)`` for msd-musicnn), or for a ``"pcm"`` model mono
            samples ``(n, patch_samples)`` at ``card.sample_rate_hz`` (``(n, 48128)`` for
            msd-musicnn-v2); ``n`` may be 0.

        Returns
        -------
        dict of str to ndarray
            For every card output, float32 ``(n, size)``: ``"embedding"`` ``(n, 200)`` and
            ``"tags"`` ``(n, 50)`` (sigmoid probabilities) for the musicnn models.

        Raises
        ------
        ModelError
            Wrong shape, or non-finite values in ``patches``.
        """
        card = self.card
        x = np.ascontiguousarray(patches, dtype=np.float32)
        if x.ndim != 1 + len(card.input_shape) or x.shape[1:] != card.input_shape:
            raise ModelError(
                f"{card.name} expects patches of shape (n, "
                f"{', '.join(str(d) for d in card.input_shape)}), got {tuple(np.shape(patches))}"
            )
        if not np.isfinite(x).all():
            raise ModelError(f"{card.name}: patches contain NaN or infinite values")
        n = x.shape[0]
        out = {k: np.empty((n, size), dtype=np.float32) for k, size in card.outputs.items()}
        for start in range(0, n, self.batch_size):
            chunk = x[start:start + self.batch_size]
            b = chunk.shape[0]
            if self._fixed_batch and b < self.batch_size:
                pad = np.zeros((self.batch_size - b, *chunk.shape[1:]), dtype=np.float32)
                chunk = np.concatenate([chunk, pad])
            got = self.backend.run(chunk)
            for key, tensor in card.output_tensors.items():
                out[key][start:start + b] = got[tensor][:b].reshape(b, -1)
        return out

    def warm_up(self) -> None:
        """Run one all-zero patch through the interpreter so the first real call does not pay
        for memory planning and kernel packing."""
        self.predict(np.zeros((1, *self.card.input_shape), dtype=np.float32))

    def close(self) -> None:
        """Release the interpreter."""
        self.backend.close()

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Model({self.card.name!r}, variant={self.variant!r}, "
            f"backend={self.backend.name!r}, batch_size={self.batch_size})"
        )


def _default_model() -> str:
    from deejai.models import DEFAULT_MODEL

    return DEFAULT_MODEL


# --------------------------------------------------------------------------------------------
# choosing a variant
# --------------------------------------------------------------------------------------------

#: CPU feature flags (``/proc/cpuinfo``) that give XNNPACK fast int8 dot-product kernels:
#: x86 AVX-VNNI / AVX512-VNNI / AMX, Arm's SDOT/UDOT (``asimddp``) and I8MM.
INT8_DOT_FLAGS = frozenset({"avx_vnni", "avx512_vnni", "amx_int8", "asimddp", "i8mm"})

_VARIANT_CACHE_FILE = "model-variants.json"


def cpu_features() -> frozenset[str]:
    """Feature flags of the first CPU in ``/proc/cpuinfo`` (``flags`` on x86, ``Features`` on
    Arm); empty where there is no such file (macOS, Windows, iOS)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def has_int8_dot_product() -> bool:
    """Whether this CPU has int8 dot-product instructions (see :data:`INT8_DOT_FLAGS`); Apple
    silicon (macOS/iOS on arm64) always has them."""
    import platform

    if sys.platform in ("darwin", "ios") and platform.machine().lower() in ("arm64", "aarch64"):
        return True
    return bool(INT8_DOT_FLAGS & cpu_features())


def time_variant(card: ModelCard, variant: str, *, threads: int = 1,
                 backend: str | None = None, repeats: int = 5) -> float:
    """Seconds per patch of one variant: the best of ``repeats`` single-patch invokes after a
    warm-up (batch 1, as the analysis runs)."""
    import time

    model = Model(card.folder, variant=variant, threads=threads, backend=backend)
    try:
        x = np.zeros((1, *card.input_shape), dtype=np.float32)
        model.predict(x)
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            model.predict(x)
            best = min(best, time.perf_counter() - t0)
        return best
    finally:
        model.close()


def choose_variant(card: ModelCard, *, threads: int = 1, backend: str | None = None,
                   cache: Path | None = None, measure: bool | None = None) -> str:
    """The variant of ``card`` to run on this machine.

    The rule: a card with one variant gets it. Otherwise, when the card's default is ``"int8"``
    and the CPU has int8 dot products (:func:`has_int8_dot_product`), the int8 variant, whose
    convolutions then run 3-5x faster than fp32 (``benchmarks/models.py``). On any other CPU
    both variants are timed once (:func:`time_variant`) and the faster wins; the verdict is
    kept in ``<state dir>/model-variants.json`` per CPU, runtime, thread count and model file,
    so it is measured once per machine, not once per worker.

    Parameters
    ----------
    measure : bool, optional
        Force (True) or skip (False) the timing; default: time only without int8 dot products.
    """
    names = list(card.variants)
    if len(names) == 1:
        return names[0]
    if measure is None:
        measure = not (card.default_variant == "int8" and has_int8_dot_product())
    if not measure:
        return card.default_variant
    key = "|".join([card.name, card.sha256, str(threads), backend or "auto", _cpu_name()])
    path = cache if cache is not None else _variant_cache_path()
    known = _read_json(path)
    if key in known and known[key].get("variant") in card.variants:
        return str(known[key]["variant"])
    timings = {v: time_variant(card, v, threads=threads, backend=backend) for v in names}
    best = min(timings, key=timings.get)
    known[key] = {"variant": best, "seconds_per_patch": {k: round(v, 6) for k, v in timings.items()}}
    if path is not None:
        _write_json(path, known)
    return best


def _cpu_name() -> str:
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("model name", "hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _variant_cache_path() -> Path | None:
    try:
        from deejai.engine.config import paths

        return paths().state_dir / _VARIANT_CACHE_FILE
    except Exception:  # noqa: BLE001 - no usable state folder: measure again next time
        return None


def _read_json(path: Path | None) -> dict:
    if path is None:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_json(path: Path, data: dict) -> None:
    from deejai.engine._fs import atomic_write

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"))
    except OSError:  # a read-only state folder: the choice is simply measured again
        pass


def load_model(name_or_path: str | os.PathLike[str] | None = None, **kwargs: Any) -> Model:
    """Load a model by name or folder (default: ``deejai.models.DEFAULT_MODEL``); ``kwargs`` go
    to :class:`Model`."""
    return Model(name_or_path, **kwargs)
