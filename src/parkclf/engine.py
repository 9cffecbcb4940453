"""The engine runs the model: OpenVINO on the static int8 graph where export calibrated one, else ONNX Runtime when
the checkpoint has ``onnx/``, else torch. Nothing else knows which.

Both take the same ``pixel_values`` (NumPy, from :mod:`parkclf.processing`) and return NumPy logits, and both
explain a prediction by gradient x activation on the input of the last block's attention (see
:mod:`parkclf.explain`): torch with captum, ONNX Runtime with the relevance graph that :mod:`parkclf.export` traced
from the same computation. The ONNX path imports no torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from .errors import UsageError
from .hardware import cpu_threads

ONNX_DIR = "onnx"
# transformers.js names: model.onnx is fp32, model_quantized.onnx is int8 (dtype "q8"). The explanation graphs
# (logits plus per-token relevance) sit beside them.
MODEL_FILES = {"int8": "model_quantized.onnx", "fp32": "model.onnx"}
EXPLAIN_FILES = {"int8": "explain_quantized.onnx", "fp32": "explain.onnx"}


class Engine(Protocol):
    name: str

    def logits(self, pixel_values: np.ndarray) -> np.ndarray:
        """(N, num_labels) float32 logits."""

    def relevance(self, pixel_values: np.ndarray, real_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """(per-patch relevance of the best real class, (gh, gw) in [0, 1]; logits (1, num_labels)) for one image."""

    def features(self, pixel_values: np.ndarray) -> np.ndarray:
        """(N, hidden) float32: the classifier's input (the class token after the final norm), what teaching fits
        on. The ONNX engines only."""


def has_onnx(folder: str | Path) -> bool:
    return any((Path(folder) / ONNX_DIR / f).exists() for f in MODEL_FILES.values())


def ort_session(graph: Path | bytes, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(graph if isinstance(graph, bytes) else str(graph), opts,
                                providers=["CPUExecutionProvider"])


def explain_graph(onnx_dir: Path, precision: str) -> Path:
    """The relevance graph of ``precision`` in ``onnx_dir``, else its fp32 one (export keeps the int8 one only where
    it agrees with the model)."""
    for path in (onnx_dir / EXPLAIN_FILES[precision], onnx_dir / EXPLAIN_FILES["fp32"]):
        if path.exists():
            return path
    raise UsageError(f"{onnx_dir} has no explanation graph ({EXPLAIN_FILES[precision]}); rerun `parkclf export` on "
                     "the model to write it.")


def relevance(session, pixel_values: np.ndarray, patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(per-patch relevance map, logits) of the first image from a relevance graph's session."""
    from .explain import heat_from_tokens

    # the graph picks the best of the real classes itself: export baked in the checkpoint's out-of-scope label
    logits, tokens = session.run(["logits", "relevance"],
                                 {"pixel_values": np.ascontiguousarray(pixel_values[:1], np.float32)})
    return heat_from_tokens(tokens[0], pixel_values.shape[-2:], patch_size), logits


class OnnxEngine:
    """ONNX Runtime on the CPU. The int8 graph is used where export wrote one (it is only written where it agrees
    with the fp32 model), else the fp32 one. The relevance graph is loaded on the first explanation."""

    def __init__(self, folder: str | Path, *, precision: str = "auto", patch_size: int, threads: int | None = None):
        self.folder = Path(folder) / ONNX_DIR
        self.precision = self._pick(precision)
        self.name = f"onnxruntime-{self.precision}"
        self.patch_size = patch_size
        self._threads = threads or cpu_threads()
        self.session = self._forward()
        self._explain = None
        self._features = None

    def _forward(self):
        return self._session(self.folder / MODEL_FILES[self.precision])

    def _pick(self, precision: str) -> str:
        if precision != "auto":
            if not (self.folder / MODEL_FILES[precision]).exists():
                raise UsageError(f"{self.folder} has no {MODEL_FILES[precision]}; run `parkclf export` on the model.")
            return precision
        return "int8" if (self.folder / MODEL_FILES["int8"]).exists() else "fp32"

    def _session(self, graph: Path | bytes):
        return ort_session(graph, self._threads)

    def logits(self, pixel_values: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(pixel_values, np.float32)
        if self.precision == "int8":
            # Dynamic quantisation scales each activation by its range over the whole batch, so a photo's answer
            # would depend on its batch-mates (logits moved by up to 0.16 between batch 1 and 16). One at a time,
            # /predict, /predict_batch and `parkclf predict` give every photo the same answer.
            rows = [self.session.run(["logits"], {"pixel_values": x[i:i + 1]})[0] for i in range(len(x))]
            return np.concatenate(rows)
        return self.session.run(["logits"], {"pixel_values": x})[0]

    def features(self, pixel_values: np.ndarray) -> np.ndarray:
        if self._features is None:  # the served graph with the classifier's input as a second output, on first use
            import onnx

            from .graphs import head

            model = onnx.load(str(self.folder / MODEL_FILES[self.precision]))
            name = head(model.graph).features
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
            self._features = (self._session(model.SerializeToString()), name)
        session, name = self._features
        x = np.ascontiguousarray(pixel_values, np.float32)
        return np.concatenate([session.run([name], {"pixel_values": x[i:i + 1]})[0] for i in range(len(x))])

    def relevance(self, pixel_values: np.ndarray, real_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        if self._explain is None:
            self._explain = self._session(explain_graph(self.folder, self.precision))
        return relevance(self._explain, pixel_values, self.patch_size)


class OpenVinoEngine(OnnxEngine):
    """OpenVINO on the CPU, over the same int8 weights with the fixed activation scales that export calibrated
    (:mod:`parkclf.static_int8`): int8 matrix kernels and no per-photo quantisation pass. Explanations still run
    the relevance graph on ONNX Runtime (inherited).

    The graph is compiled for fixed shapes, once per batch size it meets (1, and :attr:`BATCH` for full batches):
    OpenVINO picks faster kernels for a fixed shape than for a dynamic batch, and its answers are the same, bit for
    bit, at every fixed batch size, so a photo's answer still does not depend on its batch-mates.

    The compiled graph has a second output, the classifier's input (:meth:`features`), which it computes anyway:
    teaching reads it from the graph that serves, with no second graph to compile or hold (docs/results.md)."""

    BATCH = 16  # full batches of 16 run as one (the batch command); the rest one photo at a time

    def __init__(self, folder: str | Path, *, patch_size: int, threads: int | None = None):
        import threading

        super().__init__(folder, precision="int8", patch_size=patch_size, threads=threads)
        self.name = "openvino-int8-static"
        self._lock = threading.Lock()  # one infer request per shape: Gradio runs two requests at once

    def _forward(self):
        import io

        import openvino as ov

        from .static_int8 import class_token_only_in_last_layer, load_ranges, static_graph, transpose_keys_in_matmul

        self._core = ov.Core()
        self._model = self._core.read_model(io.BytesIO(static_graph(self.folder / MODEL_FILES["int8"],
                                                                    load_ranges(self.folder), features=True)))
        transpose_keys_in_matmul(self._model)
        class_token_only_in_last_layer(self._model)
        self._requests = {}
        return self._request(1)

    def _request(self, batch: int):
        """The infer request of the graph compiled for ``batch`` photos (compiled on first use)."""
        if batch not in self._requests:
            model = self._model.clone()
            shape = model.input(0).get_partial_shape()
            shape[0] = batch
            model.reshape({0: shape})
            # f32 for the float ops: on a CPU with native bf16 OpenVINO would run them in bf16, a graph the export
            # never checked (its class-token rewrite alone then moved logits by 0.14; a taught model's answers
            # agreed with the browser's on 57 of 60 photos)
            compiled = self._core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": self._threads,
                                                               "PERFORMANCE_HINT": "LATENCY",
                                                               "INFERENCE_PRECISION_HINT": "f32"})
            self._requests[batch] = compiled.create_infer_request()
        return self._requests[batch]

    def _run(self, pixel_values: np.ndarray, output: int) -> np.ndarray:
        x = np.ascontiguousarray(pixel_values, np.float32)
        rows, i = [], 0
        with self._lock:
            while i < len(x):
                n = self.BATCH if len(x) - i >= self.BATCH else 1
                rows.append(self._request(n).infer({0: x[i:i + n]})[output].copy())
                i += n
        return np.concatenate(rows)

    def logits(self, pixel_values: np.ndarray) -> np.ndarray:
        return self._run(pixel_values, 0)

    def features(self, pixel_values: np.ndarray) -> np.ndarray:
        return self._run(pixel_values, 1)


class HeadEngine:
    """A linear classifier (NumPy) over another engine's features: a taught checkpoint served on the compiled
    backbone of the model it was taught from, with no engine of its own to compile and hold (about 190 MB each).
    Its logits are what its own graphs compute, ``features @ weight.T + bias`` (:func:`parkclf.graphs.swap` writes
    that float product into them), up to float rounding. Explanations run the checkpoint's relevance graph, loaded
    for each one (a quarter of a second) and not kept."""

    def __init__(self, base: Engine, weight: np.ndarray, bias: np.ndarray, folder: str | Path, *, patch_size: int):
        if not hasattr(base, "features"):
            raise UsageError(f"The {base.name} engine gives no features to run a taught head on; serve a model "
                             "with onnx/.")
        self.base, self.weight, self.bias = base, np.asarray(weight, np.float32), np.asarray(bias, np.float32)
        self.folder, self.patch_size = Path(folder) / ONNX_DIR, patch_size
        self.name = f"{base.name}+head"

    def features(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.base.features(pixel_values)

    def logits(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.features(pixel_values) @ self.weight.T + self.bias

    def relevance(self, pixel_values: np.ndarray, real_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        graph = explain_graph(self.folder, "int8")
        return relevance(ort_session(graph, cpu_threads()), pixel_values, self.patch_size)


def has_static_int8(folder: str | Path) -> bool:
    from .static_int8 import RANGES_FILE

    onnx_dir = Path(folder) / ONNX_DIR
    if not ((onnx_dir / RANGES_FILE).exists() and (onnx_dir / MODEL_FILES["int8"]).exists()):
        return False
    try:
        import onnx  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


class TorchEngine:
    """The checkpoint's transformers model in torch: bf16 weights where the CPU or GPU has native bf16, else fp32."""

    def __init__(self, model, *, dtype=None):
        import torch

        from .hardware import bf16_supported

        self.torch = torch
        self.dtype = dtype or (torch.bfloat16 if bf16_supported() else torch.float32)
        # Weights cast once instead of autocast on every call (faster per forward on AMX in our profiling).
        self.model = model.eval().to(self.dtype)
        self.name = f"torch-{str(self.dtype).removeprefix('torch.')}"
        self.patch_size = model.config.patch_size

    @classmethod
    def from_pretrained(cls, folder: str | Path, **kw) -> TorchEngine:
        try:
            from transformers import AutoModelForImageClassification
        except ImportError:
            raise UsageError(f"{folder} has no onnx/ export and torch is not installed here. Export it once on a "
                             f"machine with torch (`parkclf export {folder}`), or install the training stack "
                             "(pip install -r requirements-train.txt).") from None
        # safetensors only, and never code from the checkpoint: a Space loads whatever MODEL_ID names.
        model = AutoModelForImageClassification.from_pretrained(folder, use_safetensors=True, trust_remote_code=False)
        return cls(model, **kw)

    def logits(self, pixel_values: np.ndarray) -> np.ndarray:
        x = self.torch.from_numpy(np.ascontiguousarray(pixel_values, np.float32)).to(self.model.device, self.dtype)
        with self.torch.inference_mode():
            return self.model(pixel_values=x).logits.float().cpu().numpy()

    def relevance(self, pixel_values: np.ndarray, real_ids: list[int]) -> tuple[np.ndarray, np.ndarray]:
        from .explain import relevance_map

        x = self.torch.from_numpy(np.ascontiguousarray(pixel_values[:1], np.float32)).to(self.model.device, self.dtype)
        heat, logits = relevance_map(self.model, x, real_ids)
        return heat, logits.numpy()


ENGINES = ("auto", "openvino", "onnx", "onnx-int8", "onnx-fp32", "torch")
TIMED_RUNS = 2  # forwards of the probe each engine gets after its first (compile and warm-up); the best counts


def load_engine(folder: str | Path, *, engine: str = "auto", patch_size: int,
                probe: np.ndarray | None = None) -> Engine:
    """``engine``: "auto", "openvino", "onnx" (ONNX Runtime), "onnx-fp32", "onnx-int8" or "torch".

    "auto" serves from the export's graphs, never torch where they exist. Where both OpenVINO (the export's static
    int8, its activation ranges) and ONNX Runtime (its int8 graph, else fp32) can run them, and ``probe`` pixel values
    are given, both are timed on the probe and the faster one serves (:func:`fastest`): which one that is depends on
    the CPU (VNNI and AMX favour OpenVINO's static int8; on AVX2 alone ONNX Runtime's dynamic int8 is faster). Both
    int8 graphs passed the same export gate against fp32, so their answers differ only on close calls. Without a
    probe, OpenVINO where it can, else ONNX Runtime."""
    if engine == "torch" or (engine == "auto" and not has_onnx(folder)):
        return TorchEngine.from_pretrained(folder)
    static = engine in ("auto", "openvino") and has_static_int8(folder)
    if engine == "auto" and static and probe is not None:
        return fastest([lambda: OpenVinoEngine(folder, patch_size=patch_size),
                        lambda: OnnxEngine(folder, patch_size=patch_size)], probe)
    if engine == "openvino" or (engine == "auto" and static):
        if not static:
            raise UsageError(f"{folder} has no {ONNX_DIR}/activation_ranges.json, or openvino/onnx are not "
                             "installed: run `parkclf export` on the model, or pip install -r requirements.txt.")
        return OpenVinoEngine(folder, patch_size=patch_size)
    if engine in ("auto", "onnx"):
        return OnnxEngine(folder, patch_size=patch_size)
    if engine in ("onnx-fp32", "onnx-int8"):
        return OnnxEngine(folder, precision=engine.split("-")[1], patch_size=patch_size)
    raise UsageError(f"engine={engine!r}: use one of {', '.join(ENGINES)}.")


def fastest(makers, probe: np.ndarray) -> Engine:
    """Build each engine, run ``probe`` through it once (compiling, warming up), time TIMED_RUNS more and keep the
    fastest; the others are dropped as soon as they lose. Logs the choice and every time in one line."""
    import logging
    import time

    from .hardware import describe

    best, best_s, times = None, float("inf"), []
    for make in makers:
        engine = make()
        engine.logits(probe)
        seconds = float("inf")
        for _ in range(TIMED_RUNS):
            start = time.perf_counter()
            engine.logits(probe)
            seconds = min(seconds, time.perf_counter() - start)
        times.append(f"{engine.name} {seconds * 1000:.0f} ms")
        if seconds < best_s:
            best, best_s = engine, seconds
    logging.getLogger(__name__).info("engine auto: %s a photo -> %s (%s)", ", ".join(times), best.name, describe())
    return best
