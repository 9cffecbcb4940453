"""Checkpoint -> ``onnx/``: the graphs the app serves without torch and transformers.js runs in a browser.

    parkclf export out/my-model --photos test-photos/          # a train.py output folder
    parkclf export user/model --output-dir out/model --photos test-photos/    # a Hub model, copied first

Writes, in the transformers.js layout beside config.json and preprocessor_config.json:
- ``model.onnx``: pixel_values -> logits, fp32 (``torch.onnx.export``, dynamic batch);
- ``model_quantized.onnx``: the same with int8 weights (ONNX Runtime dynamic quantisation, per channel);
- ``explain.onnx`` / ``explain_quantized.onnx``: pixel_values -> (logits, per-token relevance), the gradient x
  activation that :func:`parkclf.explain.relevance_map` computes with captum, traced forward and backward with
  ``make_fx`` so that ONNX Runtime explains a prediction without torch;
- ``activation_ranges.json``: a fixed scale for each int8 MatMul input, observed on calibration photos, with which
  OpenVINO serves ``model_quantized.onnx`` as a static int8 graph (:mod:`parkclf.static_int8`); kept only where that
  graph agrees as well;
- ``export.json``: how each graph agrees with the torch fp32 model on the given photos (largest logit and
  probability difference, top-1 and abstain agreement, the flips with fp32's margin, relevance correlation, and
  with labelled photos each graph's accuracy). The model card shows the table.

An int8 graph is kept where it loses a visitor (almost) nothing (:func:`shortfalls`): with labelled photos
(``--labelled`` class folders, or train.py's own test split), its accuracy is at most half a point below fp32's,
every top-1 flip is a close call (fp32's two best classes within 0.10 in probability) and abstain agreement is at
least 0.99; without labels, top-1 agreement is counted as before, close-call flips reported but not counted. This is
how quantisation tools judge a model (an accuracy criterion against the float one); a flip on a near-tie is as
likely to turn a wrong answer right as a right one wrong. An int8 explanation graph is kept where its relevance maps
follow captum's (median correlation 0.95, lowest 0.80, over 32 photos); otherwise the explanation graph stays in
floating point, its weights stored fp16.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from .calibration import in_scope_scores, real_indices, softmax
from .engine import EXPLAIN_FILES, MODEL_FILES, ONNX_DIR
from .errors import UsageError
from .images import ImageError, image_files, load_image
from .processing import Preprocessor, draft_size

logger = logging.getLogger("parkclf.export")

# An int8 graph is kept only where it loses a visitor (almost) nothing against torch fp32 on the check photos.
MAX_ACCURACY_DROP = 0.005  # labelled photos: the answer a visitor reads, fp32's accuracy minus the graph's
CLOSE_CALL = 0.10  # a top-1 flip where fp32's two best classes are within this in probability is rounding
MIN_TOP1_AGREEMENT = 0.995  # unlabelled photos: close-call flips count as agreeing
MIN_ABSTAIN_AGREEMENT = 0.99
MIN_RELEVANCE_MEDIAN = 0.95  # Pearson correlation with captum's map, per photo, over the photos checked
MIN_RELEVANCE_LOWEST = 0.80
RELEVANCE_PHOTOS = 32  # explanations cost a backward pass each: check this many where the graph picks fp32's class


class Relevance:
    """Builds the torch function that the explanation graph is traced from: (logits, per-token relevance) of the
    best real class, gradient x activation at the output of the last block's first layer norm (captum's
    LayerGradientXActivation on that module, as :mod:`parkclf.explain` uses it)."""

    def __init__(self, model, real_ids: list[int]):
        from .explain import last_block_input

        self.model, self.real_ids = model, real_ids
        self.layer = last_block_input(model)

    def __call__(self, pixel_values):
        import torch

        kept = {}
        handle = self.layer.register_forward_hook(lambda _m, _i, out: kept.__setitem__("act", out))
        try:
            logits = self.model(pixel_values=pixel_values).logits
        finally:
            handle.remove()
        best = logits[:, self.real_ids].max(dim=1).values.sum()
        (grad,) = torch.autograd.grad(best, kept["act"])
        return logits, (grad * kept["act"]).sum(-1)


class _Quiet:
    """The exporter and the quantiser log each rewrite and each tensor at INFO (the quantiser on the root logger):
    hundreds of lines that say nothing to the person training. Warnings and errors still show."""

    NAMES = ("", "onnx_ir", "onnxscript", "torch.onnx")

    def __enter__(self):
        self.levels = {n: logging.getLogger(n).level for n in self.NAMES}
        for n in self.NAMES:
            logging.getLogger(n).setLevel(logging.WARNING if n else logging.ERROR)
        return self

    def __exit__(self, *exc):
        for n, level in self.levels.items():
            logging.getLogger(n).setLevel(level)


def _export_forward(model, example, path: Path) -> None:
    import torch

    torch.onnx.export(model, (example,), str(path), input_names=["pixel_values"], output_names=["logits"],
                      dynamic_shapes={"pixel_values": {0: torch.export.Dim("batch_size")}}, dynamo=True,
                      external_data=False, verbose=False, report=False)


def _export_relevance(model, real_ids: list[int], example, path: Path) -> None:
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    traced = make_fx(Relevance(model, real_ids))(example).eval()  # the forward and the backward, one graph of aten ops
    torch.onnx.export(traced, (example,), str(path), input_names=["pixel_values"],
                      output_names=["logits", "relevance"], dynamo=True, external_data=False, verbose=False,
                      report=False)


def _quantize(src: Path, dst: Path) -> None:
    """int8 weights (per output channel), activations quantised on the fly: MatMuls only, where ViTs spend their
    time; the layer norms, softmax and GELU stay fp32, and so do the attention output projections (see
    :func:`_attention_outputs`)."""
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # torch.onnx (dynamo) writes value_info for every initializer; quantize_dynamic transposes the classifier's
    # Gemm weight in place without updating it, and its shape inference then fails. Drop those entries first.
    graph = onnx.load(str(src))
    weights = {i.name for i in graph.graph.initializer}
    keep = [v for v in graph.graph.value_info if v.name not in weights]
    del graph.graph.value_info[:]
    graph.graph.value_info.extend(keep)
    floats = _attention_outputs(graph.graph) + _backward(graph.graph)
    _gemms_as_matmuls(graph.graph, floats)  # quantize_dynamic renames Gemms as it splits them; keep our names
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / src.name
        onnx.save(graph, str(plain))
        quantize_dynamic(str(plain), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=floats)
    quantized = onnx.load(str(dst))
    _fp16_weights(quantized.graph, floats)
    onnx.save(quantized, str(dst))


_VIEWS = {"Reshape", "Transpose", "Identity", "Squeeze", "Unsqueeze", "Flatten"}


def _attention_outputs(graph) -> list[str]:
    """The linears whose input is attention's weighted sum of values (a MatMul of two activations, through
    reshapes). Per-tensor dynamic int8 rounds that input badly: on the parks model of 2026-12-04 it flipped 6 of 569
    closest-park answers against fp32, and 2 with these 12 projections (a twelfth of the linear work) left in
    floating point (docs/results.md)."""
    producers = {o: n for n in graph.node for o in n.output}
    weights = {i.name for i in graph.initializer}

    def from_attention(name: str) -> bool:
        for _ in range(8):
            node = producers.get(name)
            if node is None or (node.op_type != "MatMul" and node.op_type not in _VIEWS):
                return False
            if node.op_type == "MatMul":
                return not any(i in weights for i in node.input)
            name = node.input[0]
        return False

    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1
            and n.input[1] in weights and from_attention(n.input[0])]


def _backward(graph) -> list[str]:
    """The explanation graph's backward linears: those downstream of its logits output. Their inputs are gradients,
    which per-tensor dynamic int8 rounds to nothing where they are small (relevance correlation 0.36 on a parks
    photo with them in int8); they span the last block only."""
    downstream = {o.name for o in graph.output if o.name == "logits"}
    names = []
    for node in graph.node:  # ONNX graphs are in topological order
        if downstream.intersection(node.input):
            downstream.update(node.output)
            if node.op_type in ("MatMul", "Gemm"):
                names.append(node.name)
    return names


def _gemms_as_matmuls(graph, names: list[str]) -> None:
    """Gemm(x, W, b) -> MatMul(x, W) + b, in place, for the named nodes (the traced explanation graph's linears)."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    for node in list(graph.node):
        if node.name not in names or node.op_type != "Gemm":
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert not attrs.get("transA") and attrs.get("alpha", 1.0) == 1.0 and attrs.get("beta", 1.0) == 1.0, attrs
        if attrs.get("transB"):
            w = inits[node.input[1]]
            w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w).T.copy(), w.name))
        pos = list(graph.node).index(node)
        graph.node.remove(node)
        if len(node.input) < 3 or not node.input[2]:  # no bias (a backward product in the explanation graph)
            graph.node.insert(pos, helper.make_node("MatMul", list(node.input[:2]), list(node.output), name=node.name))
            continue
        product = node.output[0] + "_matmul"
        graph.node.insert(pos, helper.make_node("Add", [product, node.input[2]], list(node.output),
                                                name=node.name + "_bias"))
        graph.node.insert(pos, helper.make_node("MatMul", list(node.input[:2]), [product], name=node.name))


def _fp16_weights(graph, names: list[str]) -> None:
    """Store the named MatMuls' fp32 weights as fp16, cast back at load: half the bytes, and rounding far below
    int8's."""
    from onnx import TensorProto, helper, numpy_helper

    inits = {i.name: i for i in graph.initializer}
    for node in [n for n in graph.node if n.name in names]:
        w = inits.get(node.input[1])
        if w is None or w.data_type != TensorProto.FLOAT:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(w).astype(np.float16), w.name + "_fp16")
        graph.initializer.remove(w)
        graph.initializer.append(half)
        graph.node.insert(0, helper.make_node("Cast", [half.name], [w.name], to=TensorProto.FLOAT,
                                              name=w.name + "_cast"))


def _answers(probs: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """The answer a visitor reads for each photo: the best real class, or -1 (none of these) below the threshold."""
    return np.where(scores < threshold, -1, probs.argmax(-1))


def _block_linears(graph, classes: int) -> list[str]:
    """The linears of the blocks: not the classifier nor its transpose in the backward pass (weights with a
    dimension of ``classes``), which are small and which ``parkclf teach`` finds as plain initializers to swap."""
    dims = {i.name: list(i.dims) for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and len(n.input) > 1
            and n.input[1] in dims and classes not in dims[n.input[1]]]


def _agreement(ref: np.ndarray, got: np.ndarray, config: dict, truth: np.ndarray | None = None,
               names: list[str] | None = None) -> dict:
    """How ``got`` (a graph's logits) agrees with ``ref`` (torch fp32's) on the same photos. ``truth``: each photo's
    true answer as :func:`_answers` gives it (a real class's position among the real classes, -1 for out of scope);
    with it, the row also holds both accuracies."""
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    ood, t, thr = config.get("out_of_scope_label"), config.get("calibration_temperature", 1.0), config.get(
        "abstain_threshold", 0.0)
    (pr, sr), (pg, sg) = in_scope_scores(ref, labels, t, ood), in_scope_scores(got, labels, t, ood)
    real = [labels[i] for i in real_indices(labels, ood)]
    top2 = np.sort(pr, axis=-1)[:, -2:] if pr.shape[1] > 1 else np.pad(pr, ((0, 0), (1, 0)))
    margin = top2[:, 1] - top2[:, 0]
    flipped = np.flatnonzero(pr.argmax(-1) != pg.argmax(-1))
    flips = [{"photo": names[i] if names else i, "fp32": real[pr[i].argmax()], "int8": real[pg[i].argmax()],
              "fp32_margin": round(float(margin[i]), 4)} for i in flipped]
    row = {"n_photos": len(ref), "top1_agreement": float(1 - len(flipped) / len(ref)),
           "abstain_agreement": float(((sr < thr) == (sg < thr)).mean()),
           "max_prob_diff": float(np.abs(softmax(ref, t) - softmax(got, t)).max()),
           "max_logit_diff": float(np.abs(ref - got).max()),
           "close_call_flips": sum(f["fp32_margin"] <= CLOSE_CALL for f in flips),
           "confident_flips": sum(f["fp32_margin"] > CLOSE_CALL for f in flips),
           "flips": flips}
    if truth is not None:
        row["fp32_accuracy"] = float((_answers(pr, sr, thr) == truth).mean())
        row["accuracy"] = float((_answers(pg, sg, thr) == truth).mean())
        row["n_labelled"] = len(truth)
    return row


def shortfalls(row: dict) -> list[str]:
    """Why a graph's row fails the gate (empty: it is kept). With labels: accuracy lost, confident flips, abstain
    agreement; without: top-1 agreement with close-call flips not counted, abstain agreement; an explanation
    graph's relevance median and lowest correlation on top."""
    short = []
    if "accuracy" in row:
        if row["fp32_accuracy"] - row["accuracy"] > MAX_ACCURACY_DROP + 1e-9:
            short.append(f"accuracy {row['accuracy']:.4f} is more than {MAX_ACCURACY_DROP:.1%} below fp32's "
                         f"{row['fp32_accuracy']:.4f}")
        if row["confident_flips"]:
            short.append(f"{row['confident_flips']} top-1 flip(s) where fp32's two best classes were more than "
                         f"{CLOSE_CALL} apart")
    else:
        counted = 1 - row["confident_flips"] / row["n_photos"]
        if counted < MIN_TOP1_AGREEMENT:
            short.append(f"top1_agreement {counted:.4f} (close-call flips not counted) < {MIN_TOP1_AGREEMENT}")
    if row["abstain_agreement"] < MIN_ABSTAIN_AGREEMENT:
        short.append(f"abstain_agreement {row['abstain_agreement']:.4f} < {MIN_ABSTAIN_AGREEMENT}")
    if "relevance_median" in row and row["relevance_median"] < MIN_RELEVANCE_MEDIAN:
        short.append(f"relevance_median {row['relevance_median']:.4f} < {MIN_RELEVANCE_MEDIAN}")
    if "relevance_lowest" in row and row["relevance_lowest"] < MIN_RELEVANCE_LOWEST:
        short.append(f"relevance_lowest {row['relevance_lowest']:.4f} < {MIN_RELEVANCE_LOWEST}")
    return short


def _photos(sources: list, pre: Preprocessor) -> tuple[np.ndarray, list[int]]:
    """pixel_values of the readable photos, and their positions in ``sources``."""
    arrays, kept = [], []
    for i, s in enumerate(sources):
        try:
            arrays.append(pre([load_image(s, draft_size=draft_size(pre))]))
        except ImageError:
            continue
        kept.append(i)
    if not arrays:
        raise UsageError("None of the --photos could be read; export validates each graph on real photos.")
    return np.concatenate(arrays), kept


def _name(source, i: int) -> str:
    return Path(source).name if isinstance(source, str | Path) else f"photo {i}"


def _run(session, pixel_values: np.ndarray, outputs: list[str], batch: int = 1) -> list[np.ndarray]:
    # one photo at a time, as the engine runs the int8 graph (its activation scales span the batch)
    parts = [session.run(outputs, {"pixel_values": pixel_values[i:i + batch]})
             for i in range(0, len(pixel_values), batch)]
    return [np.concatenate([p[k] for p in parts]) for k in range(len(outputs))]


def _session(path: Path):
    import onnxruntime as ort

    from .hardware import cpu_threads

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = cpu_threads()
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


class _Relevances:
    """captum's relevance maps from the torch model, each computed once, for the photos the graphs are checked on."""

    def __init__(self, model, real_ids: list[int]):
        self.model, self.real_ids, self.maps = model, real_ids, {}

    def __call__(self, i: int, x: np.ndarray) -> np.ndarray:
        if i not in self.maps:
            import torch

            from .explain import relevance_map

            self.maps[i] = relevance_map(self.model, torch.from_numpy(x[None]), self.real_ids)[0]
        return self.maps[i]


def _relevance_check(relevances: _Relevances, pixel_values, ref_logits, session, patch: int) -> tuple[dict, np.ndarray]:
    """The graph's logits on every photo (one at a time, as the app explains), and the median and lowest per-photo
    Pearson correlation of its relevance map with captum's over the first ``RELEVANCE_PHOTOS`` photos where the graph
    and torch pick the same class: where they differ they explain different classes, which the top-1 row counts."""
    from .explain import heat_from_tokens

    real_ids = relevances.real_ids
    corr, logits = [], []
    for i, (x, want) in enumerate(zip(pixel_values, ref_logits, strict=True)):
        lg, tokens = session.run(["logits", "relevance"], {"pixel_values": x[None]})
        logits.append(lg)
        if len(corr) == RELEVANCE_PHOTOS or lg[0, real_ids].argmax() != want[real_ids].argmax():
            continue
        ref = relevances(i, x)
        got = heat_from_tokens(tokens[0], x.shape[-2:], patch)
        corr.append(float(np.corrcoef(ref.ravel(), got.ravel())[0, 1]) if ref.std() and got.std() else 1.0)
    stats = {"relevance_photos": len(corr), "relevance_median": float(np.median(corr)) if corr else 0.0,
             "relevance_lowest": min(corr, default=0.0)}
    return stats, np.concatenate(logits)


def _reference(model, pixel_values: np.ndarray, batch: int = 8) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([model(pixel_values=torch.from_numpy(pixel_values[i:i + batch])).logits.numpy()
                               for i in range(0, len(pixel_values), batch)])


def _fp32_model(folder: Path, model=None):
    import copy

    from transformers import AutoModelForImageClassification

    if model is None:
        model = AutoModelForImageClassification.from_pretrained(folder, use_safetensors=True)
    else:
        model = copy.deepcopy(model)
    # eager attention: one plain graph of MatMul and Softmax that every runtime (and quantiser) handles
    model.config._attn_implementation = "eager"
    return model.float().cpu().eval()


def _static_int8(onnx_dir: Path, calibration: np.ndarray, pv: np.ndarray, ref: np.ndarray, config: dict,
                 patch: int, check: dict | None = None) -> tuple[dict, list[str]]:
    """Observe the int8 graph's activation ranges on the calibration photos, then check the static graph on
    OpenVINO against torch fp32 on the validation photos. The ranges are kept only where it passes the gate.
    ``check``: the photos' true answers and names for :func:`_agreement`."""
    from .engine import OpenVinoEngine
    from .hardware import cpu_threads
    from .static_int8 import RANGES_FILE, observed_ranges, save_ranges

    ranges = observed_ranges(onnx_dir / MODEL_FILES["int8"], calibration, cpu_threads())
    save_ranges(onnx_dir, ranges, len(calibration))
    engine = OpenVinoEngine(onnx_dir.parent, patch_size=patch)
    logits = engine.logits(pv)  # batches of 16 as the batch command runs them, the rest one at a time
    row = {**_agreement(ref, logits, config, **(check or {})), "calibration_photos": len(calibration)}
    short = shortfalls(row)
    if short:
        (onnx_dir / RANGES_FILE).unlink()
        return {**row, "kept": False}, [f"`{RANGES_FILE}` (static int8 on OpenVINO) was not kept: {'; '.join(short)}."]
    return row, []


def _validate(onnx_dir: Path, relevances: _Relevances, pv, ref, config, patch: int, check: dict,
              int8_only: bool) -> tuple[dict, list[str], dict]:
    """Each graph against torch fp32: agreement rows, the notes on what was dropped, and the dropped graphs' rows.
    With ``int8_only`` an fp32 graph goes where its int8 twin passes; an explanation graph kept in floating point
    has its weights stored fp16 (then checked again)."""
    graphs, notes, dropped = {}, [], {}

    def forward(name):
        graphs[name] = _agreement(ref, _run(_session(onnx_dir / name), pv, ["logits"])[0], config, **check)

    def explain(name):
        stats, logits = _relevance_check(relevances, pv, ref, _session(onnx_dir / name), patch)
        graphs[name] = {**_agreement(ref, logits, config, **check), **stats}

    for files, check_graph in ((MODEL_FILES, forward), (EXPLAIN_FILES, explain)):
        for precision in ("fp32", "int8"):
            check_graph(files[precision])
        short = shortfalls(graphs[files["int8"]])
        if short:  # an int8 graph is kept only where it passes; its row moves to the report's not_kept
            (onnx_dir / files["int8"]).unlink()
            notes.append(f"`{files['int8']}` was not kept: {'; '.join(short)}.")
            dropped[files["int8"]] = graphs.pop(files["int8"])
        if not int8_only:
            continue
        if not short:
            (onnx_dir / files["fp32"]).unlink()
        elif files is EXPLAIN_FILES:  # explanations are asked for one photo at a time: float is affordable
            import onnx

            graph = onnx.load(str(onnx_dir / files["fp32"]))
            _fp16_weights(graph.graph, _block_linears(graph.graph, len(config["id2label"])))
            onnx.save(graph, str(onnx_dir / files["fp32"]))
            explain(files["fp32"])
            graphs[files["fp32"]]["weights"] = "fp16"
            notes.append(f"`{files['fp32']}` is kept in floating point, its weights stored fp16.")
    if int8_only and not all((onnx_dir / f).exists() for f in graphs):
        notes.append("Each fp32 graph whose int8 twin passed was validated (its row above) and then left out, to "
                     "ship a quarter of the size (`--int8-only`); `parkclf export` writes them again.")
    return graphs, notes, dropped


def _graphs(folder: Path, model, real_ids: list[int], pv: np.ndarray, ref: np.ndarray, config: dict,
            int8_only: bool, check: dict) -> dict:
    """Export, quantise and validate the graphs; returns the report's files, graphs and notes."""
    import torch

    onnx_dir = folder / ONNX_DIR
    example = torch.from_numpy(np.repeat(pv[:1], 2, axis=0))  # batch 2: torch.export specialises a size-1 dimension
    logger.info("exporting %s to %s (validated on %d photos)", folder, onnx_dir, len(pv))
    with _Quiet():
        _export_forward(model, example, onnx_dir / MODEL_FILES["fp32"])
        _export_relevance(model, real_ids, example[:1], onnx_dir / EXPLAIN_FILES["fp32"])  # one photo at a time
        _quantize(onnx_dir / MODEL_FILES["fp32"], onnx_dir / MODEL_FILES["int8"])
        _quantize(onnx_dir / EXPLAIN_FILES["fp32"], onnx_dir / EXPLAIN_FILES["int8"])
    graphs, notes, not_kept = _validate(onnx_dir, _Relevances(model, real_ids), pv, ref, config, config["patch_size"],
                                        check, int8_only)
    return {"n_photos": len(pv), "files": sorted(f for f in graphs if (onnx_dir / f).exists()), "graphs": graphs,
            "notes": notes, **({"not_kept": not_kept} if not_kept else {})}


def _existing(onnx_dir: Path) -> dict:
    """The report of an earlier export, for ``static_only``, without its static int8 row."""
    from .static_int8 import RANGES_FILE

    path = onnx_dir / "export.json"
    if not (path.exists() and (onnx_dir / MODEL_FILES["int8"]).exists()):
        raise UsageError(f"{onnx_dir} has no {MODEL_FILES['int8']} and export.json to calibrate; run `parkclf "
                         "export` without --static-int8-only first.")
    report = json.loads(path.read_text())
    report["graphs"].pop(STATIC_ROW, None)
    report.get("not_kept", {}).pop(STATIC_ROW, None)
    report["files"] = [f for f in report["files"] if f != RANGES_FILE]
    report["notes"] = [n for n in report["notes"] if RANGES_FILE not in n]
    return report


STATIC_ROW = "model_quantized.onnx, static scales (OpenVINO)"


def export(folder: str | Path, *, photos: list, labels: list[str] | None = None, model=None, int8_only: bool = False,
           calibration_photos: list | None = None, static_only: bool = False) -> dict:
    """Write ``folder/onnx/`` from the checkpoint in ``folder`` (or ``model``, its weights in memory), validated
    on ``photos`` (paths or bytes). ``labels``: each photo's true class name (a name that is not one of the
    model's real classes is out of scope); with them the int8 graphs are judged by the accuracy they lose, see
    :func:`shortfalls`. ``int8_only``: remove each fp32 graph whose int8 twin passes (a quarter of the size to ship;
    transformers.js and the app use the int8 ones anyway). The static int8 scales are observed on
    ``calibration_photos`` (default: ``photos``). ``static_only``: keep an earlier export's graphs as they are and
    only calibrate and check the static scales. Returns what export.json holds."""
    import torch

    folder = Path(folder)
    onnx_dir = folder / ONNX_DIR
    onnx_dir.mkdir(exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    names = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    real = [names[i] for i in real_indices(names, config.get("out_of_scope_label"))]
    model = _fp32_model(folder, model)
    pre = Preprocessor.from_pretrained(folder)
    pv, kept = _photos(photos, pre)
    check = {"names": [_name(photos[i], i) for i in kept]}
    if labels is not None:
        check["truth"] = np.array([real.index(labels[i]) if labels[i] in real else -1 for i in kept])
    ref = _reference(model, pv)
    if static_only:
        report = _existing(onnx_dir)
    else:
        report = _graphs(folder, model, real_indices(names, config.get("out_of_scope_label")), pv, ref, config,
                         int8_only, check)
    if MODEL_FILES["int8"] in report["files"] or static_only:
        calibration = _photos(calibration_photos, pre)[0] if calibration_photos else pv
        row, notes = _static_int8(onnx_dir, calibration, pv, ref, config, config["patch_size"], check)
        report["notes"] += notes
        if row.get("kept", True):
            from .static_int8 import RANGES_FILE

            report["graphs"][STATIC_ROW] = row
            report["files"] = sorted({*report["files"], RANGES_FILE})
        else:  # its figures, for the record: the card shows what is served
            report.setdefault("not_kept", {})[STATIC_ROW] = row
    report["torch"] = torch.__version__
    (onnx_dir / "export.json").write_text(json.dumps(report, indent=2))
    for name, row in report["graphs"].items():
        logger.info("%s: top-1 agreement %.4f (%d close-call and %d confident flips), abstain agreement %.4f%s", name,
                    row["top1_agreement"], row.get("close_call_flips", 0), row.get("confident_flips", 0),
                    row["abstain_agreement"],
                    f", accuracy {row['accuracy']:.4f} (fp32 {row['fp32_accuracy']:.4f})" if "accuracy" in row else "")
    return report


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="parkclf export", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a save_pretrained folder (train.py's --output-dir) or a Hub model id")
    p.add_argument("--photos", nargs="+", required=True,
                   help="photo files or folders to validate each graph on (the test split, or any real photos)")
    p.add_argument("--labelled", action="store_true",
                   help="the --photos are in class folders: a folder named as one of the model's classes holds that "
                        "class, any other folder photos that are none of them (judge the int8 graphs by accuracy)")
    p.add_argument("--output-dir", help="with a Hub id: where to copy the model first (default: its repo name)")
    p.add_argument("--calibration-photos", nargs="+",
                   help="photo files or folders to observe the static int8 scales on (default: --photos)")
    p.add_argument("--static-int8-only", action="store_true",
                   help="keep onnx/'s graphs as they are; only calibrate and check the static int8 scales")
    p.add_argument("--int8-only", action="store_true",
                   help="keep only the int8 graphs where they pass (the fp32 ones are validated, then removed)")
    p.add_argument("--push-to-hub", metavar="REPO_ID",
                   help="then upload the folder, onnx/ included, to this model repo")
    a = p.parse_args(argv)
    folder = _local_copy(a.model, a.output_dir)
    photos = _files(a.photos)
    report = export(folder, photos=photos, labels=[Path(f).parent.name for f in photos] if a.labelled else None,
                    int8_only=a.int8_only,
                    calibration_photos=_files(a.calibration_photos) if a.calibration_photos else None,
                    static_only=a.static_int8_only)
    from .publish import card

    card.rerender(folder)  # a train.py folder's card shows the new graphs; others are left as they are
    if a.push_to_hub:
        from .publish import hub

        hub.push_model(folder, a.push_to_hub)
    print(json.dumps(report, indent=1))
    return report


def _files(sources: list[str]) -> list[str]:
    return [f for src in sources for f in (image_files(src) if Path(src).is_dir() else [src])]


def _local_copy(model: str, output_dir: str | None) -> Path:
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    from .classifier import hub_message

    target = Path(output_dir or model.split("/")[-1])
    try:
        snapshot_download(model, local_dir=target, allow_patterns=["*.json", "*.safetensors", "README.md", "*.png"])
    except Exception as e:
        raise UsageError(hub_message(model, e)) from None
    return target
