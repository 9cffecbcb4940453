"""Where the classifier sits in an exported graph: its input (the class token, the features teaching fits on), and
the same graph with a new classifier in its place.

:mod:`parkclf.export` writes the classifier as ``torch.onnx`` traces ``nn.Linear``: ``Gemm``, or ``MatMul`` then
``Add(bias)`` (no ``Add`` where the bias was all zeros), and in the int8 graphs the dynamic pattern
``DynamicQuantizeLinear(x) -> MatMulInteger -> Cast -> Mul(x_scale * w_scale) [-> Add(bias)]``. :func:`swap` puts a
float ``MatMul`` + ``Add`` with the new weights in its place, in every graph alike. Everything before the classifier
is left as it was, so the activation ranges that :mod:`parkclf.static_int8` reads still hold.

The explanation graph (:data:`parkclf.engine.EXPLAIN_FILES`) also holds the classifier's transpose for the backward
pass and the positions of the real classes; :func:`swap_explain` swaps those too where the graph has the shape
export traces, and says so (False) where it does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LOGITS = "logits"
QMAX = 127  # symmetric int8 weights, as onnxruntime's quantize_dynamic(per_channel=True, QInt8) writes them


@dataclass(frozen=True)
class Head:
    """The classifier in one graph: its float input and its weight, (in, out) as the MatMul reads it (out, in for a
    Gemm with transB)."""

    features: str  # the class token after the final norm
    weight: str  # an initializer, int8 in the dynamic int8 pattern
    classes: int


def _producers(graph) -> dict:
    return {o: n for n in graph.node for o in n.output}


def _inits(graph) -> dict:
    return {i.name: i for i in graph.initializer}


def head(graph) -> Head:
    """The classifier that writes ``logits``; ValueError where the graph ends in something else."""
    made, inits = _producers(graph), _inits(graph)
    node = made.get(LOGITS)
    if node is not None and node.op_type == "Add":  # the bias: the other input is the product
        node = made.get(next((i for i in node.input if i not in inits), ""))
    if node is not None and node.op_type == "Mul":  # dynamic int8: Mul(Cast(MatMulInteger(...)), scales)
        cast = made.get(node.input[0])
        node = made.get(cast.input[0]) if cast is not None and cast.op_type == "Cast" else None
        dyn = made.get(node.input[0]) if node is not None and node.op_type == "MatMulInteger" else None
        if dyn is not None and dyn.op_type == "DynamicQuantizeLinear" and node.input[1] in inits:
            return Head(dyn.input[0], node.input[1], int(inits[node.input[1]].dims[1]))
        node = None
    if node is not None and node.op_type in ("MatMul", "Gemm") and node.input[1] in inits:
        attrs = {a.name: a.i for a in node.attribute}
        dims = list(inits[node.input[1]].dims)
        if len(dims) == 2 and not attrs.get("transA"):
            return Head(node.input[0], node.input[1], dims[0] if attrs.get("transB") else dims[1])
    raise ValueError("The graph's logits do not come from a linear classifier as torch.onnx exports nn.Linear; "
                     "rerun `parkclf export` on the model.")


def quantize_columns(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int8 weights, float32 scale, int8 zero point) per column of ``w``: symmetric, scale = max |w| / 127."""
    scale = (np.abs(w).max(axis=0) / QMAX).astype(np.float32)
    scale[scale == 0] = 1.0
    q = np.clip(np.round(w / scale), -QMAX, QMAX).astype(np.int8)
    return q, scale, np.zeros(w.shape[1], np.int8)


def _fresh(graph, name: str) -> str:
    taken = {i.name for i in graph.initializer} | {o for n in graph.node for o in n.output}
    while name in taken:
        name += "_"
    return name


def swap(graph, weight: np.ndarray, bias: np.ndarray) -> Head:
    """Replace the classifier that writes ``logits`` by ``MatMul(features, weight.T) + bias`` (in place; ``weight``
    is (out, in) as nn.Linear stores it). Returns the new head.

    The new classifier is a float MatMul even in the int8 graphs: int8 classifier weights cost a taught head's
    agreement with the fp32 model about as much as the whole int8 backbone does (docs/results.md), and a
    (width x classes) float MatMul costs nothing beside the backbone."""
    from onnx import helper, numpy_helper

    h = head(graph)
    w_name, b_name = _fresh(graph, "classifier.weight"), _fresh(graph, "classifier.bias")
    product = _fresh(graph, "logits_matmul")
    last = _producers(graph)[LOGITS]
    position = list(graph.node).index(last)
    graph.node.remove(last)
    graph.node.insert(position, helper.make_node("Add", [product, b_name], [LOGITS], name="classifier_bias"))
    graph.node.insert(position, helper.make_node("MatMul", [h.features, w_name], [product], name="classifier"))
    graph.initializer.extend([numpy_helper.from_array(np.ascontiguousarray(np.asarray(weight, np.float32).T), w_name),
                              numpy_helper.from_array(np.asarray(bias, np.float32), b_name)])
    prune(graph)  # the old classifier's nodes and weights
    for out in graph.output:  # the logits declare the new count; inferred shapes are dropped (some name the old)
        if out.name == LOGITS and len(out.type.tensor_type.shape.dim) == 2:
            out.type.tensor_type.shape.dim[1].dim_value = len(bias)
    del graph.value_info[:]
    return Head(h.features, w_name, len(bias))


def _replace(graph, arrays: dict[str, np.ndarray]) -> None:
    from onnx import numpy_helper

    for i, init in enumerate(graph.initializer):
        if init.name in arrays:
            graph.initializer[i].CopyFrom(numpy_helper.from_array(arrays[init.name], init.name))


def _users(graph, name: str) -> list:
    return [n for n in graph.node if name in n.input]


def _weight_scale(graph, mm) -> str | None:
    """The weight scale of a MatMulInteger from the dynamic pattern: Mul(Cast(mm), Mul(x_scale, w_scale))."""
    users = _users(graph, mm.output[0])
    if len(users) != 1 or users[0].op_type != "Cast":
        return None
    muls = _users(graph, users[0].output[0])
    scales = _producers(graph).get(muls[0].input[1]) if len(muls) == 1 and muls[0].op_type == "Mul" else None
    return scales.input[1] if scales is not None and scales.op_type == "Mul" else None


def swap_explain(graph, weight: np.ndarray, bias: np.ndarray) -> bool:
    """The explanation graph with the new classifier: its forward head (:func:`swap`), the head's transpose in the
    backward pass (the one product of a (1, classes) gradient with a (classes, width) weight), the positions of
    the real classes (all of them: a taught model has no out-of-scope class), and the (1, classes) zero tensors the
    one-hot gradient is built in. False, with the graph left as it was, where it does not have that shape."""
    from onnx import numpy_helper

    inits = _inits(graph)
    try:
        h = head(graph)
    except ValueError:
        return False
    width = int(numpy_helper.to_array(inits[h.weight]).size // h.classes)
    made = _producers(graph)

    def stored_weight(m) -> str | None:
        """The initializer a MatMul's weight comes from: its own, or an fp16 one cast up (the export keeps the
        backward pass's linears in floating point that way)."""
        source = made.get(m.input[1])
        if m.input[1] not in inits and source is not None and source.op_type == "Cast":
            return source.input[0] if source.input[0] in inits else None
        return m.input[1] if m.input[1] in inits else None

    backward = [m for m in graph.node if m.op_type in ("MatMul", "MatMulInteger") and stored_weight(m)
                and list(inits[stored_weight(m)].dims) == [h.classes, width]]
    gathers = [m for m in graph.node if m.op_type == "GatherND" and m.input[1] in inits]
    real = numpy_helper.to_array(inits[gathers[0].input[1]]).size if len(gathers) == 1 else -1
    shapes = [m for m in graph.node if m.op_type == "ConstantOfShape" and m.input[0] in inits
              and numpy_helper.to_array(inits[m.input[0]]).tolist() in ([1, h.classes], [1, real])]
    scale = _weight_scale(graph, backward[0]) if len(backward) == 1 and backward[0].op_type != "MatMul" else None
    if len(backward) != 1 or real < 1 or not shapes or (backward[0].op_type != "MatMul" and scale is None):
        return False
    mm, n = backward[0], len(bias)
    w = np.asarray(weight, np.float32)  # (classes, width): the backward reads it as it is
    arrays = {gathers[0].input[1]: np.arange(n, dtype=np.int64)[:, None],
              **{m.input[0]: np.array([1, n], np.int64) for m in shapes}}
    if mm.op_type == "MatMul":  # in the stored precision (fp16 behind a Cast, or fp32)
        stored = stored_weight(mm)
        arrays[stored] = np.ascontiguousarray(w).astype(numpy_helper.to_array(inits[stored]).dtype)
    else:
        arrays[mm.input[1]], arrays[scale], arrays[mm.input[3]] = quantize_columns(w)
    _replace(graph, arrays)
    swap(graph, weight, bias)
    return True


def prune(graph) -> None:
    """Drop the nodes and initializers that no graph output depends on any more."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(list(graph.node)):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed |= set(node.input)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    inits = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
