"""The int8 graph with fixed activation scales, for OpenVINO: a few numbers beside the export, no new weights.

``model_quantized.onnx`` quantises each MatMul's input on the fly (``DynamicQuantizeLinear``): every photo pays for
a min/max pass, and OpenVINO runs that pattern in fp32. Observing those inputs' ranges once, on calibration photos,
gives a fixed scale per input (``onnx/activation_ranges.json``, a few KB). :func:`static_graph` rewrites the shipped
graph in memory with them: ``QuantizeLinear`` / ``DequantizeLinear`` pairs around the same int8 weights, which
OpenVINO fuses into int8 matrix kernels (AMX or VNNI). The weights are the shipped ones; only the activation
scales are new. Export keeps the ranges only where the static graph agrees with the torch fp32 model.

Fixed scales also make a photo's answer independent of its batch-mates, so this graph runs batched.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .graphs import prune

RANGES_FILE = "activation_ranges.json"
SMALL = 1 << 16  # elements: initializers up to this size are read as constants by the rewrites (masks, shapes)


def _dynamic_inputs(graph) -> list[str]:
    return [n.input[0] for n in graph.node if n.op_type == "DynamicQuantizeLinear"]


def observed_ranges(model_path: str | Path, pixel_values: np.ndarray, threads: int = 1) -> dict[str, list[float]]:
    """Lowest and highest value of each dynamically quantised MatMul input over the photos (ONNX Runtime, one photo
    at a time, as the dynamic graph is served)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(model_path))
    names = _dynamic_inputs(model.graph)
    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    lo, hi = dict.fromkeys(names, np.inf), dict.fromkeys(names, -np.inf)
    for x in pixel_values:
        for name, value in zip(names, session.run(names, {"pixel_values": x[None]}), strict=True):
            lo[name], hi[name] = min(lo[name], float(value.min())), max(hi[name], float(value.max()))
    return {name: [lo[name], hi[name]] for name in names}


def save_ranges(onnx_dir: Path, ranges: dict[str, list[float]], n_photos: int) -> None:
    (onnx_dir / RANGES_FILE).write_text(json.dumps({"n_photos": n_photos, "ranges": ranges}, indent=1))


def load_ranges(onnx_dir: Path) -> dict[str, list[float]]:
    return json.loads((onnx_dir / RANGES_FILE).read_text())["ranges"]


def _uint8_scale(lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Scale and zero point of asymmetric uint8 over [lo, hi] widened to hold 0, as DynamicQuantizeLinear does."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 or 1.0
    return np.array(scale, np.float32), np.array(int(round(-lo / scale)), np.uint8)


def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            out.setdefault(name, []).append(node)
    return out


def _rewrite(graph, ranges: dict[str, list[float]]) -> tuple[dict[str, list], set[str], list]:
    """For each DynamicQuantizeLinear(x) feeding MatMulInteger(x_q, W_q) -> Cast -> Mul(x_scale * W_scale): the
    nodes MatMul(DQ(Q(x)), DQ(W_q)) that replace it, the nodes they make dead, and the new scales. Nodes are named
    by their first output (unique in an ONNX graph; protobuf wrappers have no stable identity)."""
    from onnx import helper, numpy_helper

    made = {o: n for n in graph.node for o in n.output}
    users = _consumers(graph)
    replace, dead, scales = {}, set(), []
    for dyn in [n for n in graph.node if n.op_type == "DynamicQuantizeLinear"]:
        x = dyn.input[0]
        scale, zero = _uint8_scale(*ranges[x])
        scales += [numpy_helper.from_array(scale, f"{x}_scale"), numpy_helper.from_array(zero, f"{x}_zero")]
        nodes = [helper.make_node("QuantizeLinear", [x, f"{x}_scale", f"{x}_zero"], [f"{x}_q"]),
                 helper.make_node("DequantizeLinear", [f"{x}_q", f"{x}_scale", f"{x}_zero"], [f"{x}_qdq"])]
        for mm in [n for n in users[dyn.output[0]] if n.op_type == "MatMulInteger"]:
            cast = users[mm.output[0]][0]
            mul = users[cast.output[0]][0]
            scales_mul = made[mul.input[1]]  # Mul(x_scale, W_scale)
            w, w_scale, w_zero = mm.input[1], scales_mul.input[1], mm.input[3]
            nodes += [helper.make_node("DequantizeLinear", [w, w_scale, w_zero], [f"{w}_dq"], axis=1),
                      helper.make_node("MatMul", [f"{x}_qdq", f"{w}_dq"], [mul.output[0]])]
            dead |= {mm.output[0], cast.output[0], mul.output[0], scales_mul.output[0]}
        replace[dyn.output[0]] = nodes
    return replace, dead, scales


def _zero_tensors(graph) -> set[str]:
    """Tensors that are zero everywhere whatever the photo: a small all-zero constant, its Expand, and
    Where(all true, zero, _) (the additive attention mask torch.onnx writes for a ViT that masks nothing)."""
    from onnx import numpy_helper

    small = {i.name: numpy_helper.to_array(i) for i in graph.initializer if np.prod(i.dims) <= SMALL}
    true = {n for n, a in small.items() if a.dtype == bool and a.all()}
    zero = {n for n, a in small.items() if a.dtype != bool and a.size and not a.any()}
    for node in graph.node:
        if node.op_type == "Expand" and node.input[0] in true:
            true.add(node.output[0])
        elif (node.op_type == "Expand" and node.input[0] in zero) or (
                node.op_type == "Where" and node.input[0] in true and node.input[1] in zero):
            zero.add(node.output[0])
    return zero


def _drop_zero_adds(model) -> None:
    """Add(x, 0) becomes Identity(x) where shape inference shows the sum has x's shape: an exact rewrite that spares
    each attention layer a pass over its (heads, tokens, tokens) scores."""
    import onnx
    from onnx import helper

    zero = _zero_tensors(model.graph)
    if not zero:
        return
    # inferred on the graph with its large initializers declared as inputs, not copied: inference on the whole
    # model would serialise its 22 MB of weights at every start (0.08-0.16 s)
    graph = model.graph
    large = [i for i in graph.initializer if np.prod(i.dims) > SMALL]
    names = {i.name for i in large}
    declared = [helper.make_tensor_value_info(i.name, i.data_type, i.dims) for i in large]
    light = helper.make_graph(graph.node, graph.name, [*graph.input, *declared], graph.output,
                              [i for i in graph.initializer if i.name not in names], value_info=graph.value_info)
    light = helper.make_model(light, opset_imports=model.opset_import, ir_version=model.ir_version)
    inferred = onnx.shape_inference.infer_shapes(light).graph
    shapes = {v.name: [d.dim_value or d.dim_param for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.value_info, *inferred.input, *inferred.output]}
    nodes = []
    for node in model.graph.node:
        kept = [x for x in node.input if x not in zero]
        if node.op_type == "Add" and len(kept) == 1 and shapes.get(kept[0]) \
                and all(shapes[kept[0]]) and shapes[kept[0]] == shapes.get(node.output[0]):
            node = helper.make_node("Identity", kept, list(node.output))
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def static_graph(model_path: str | Path, ranges: dict[str, list[float]], *, features: bool = False) -> bytes:
    """The dynamic int8 graph at ``model_path`` with each activation quantised at its fixed scale (serialised).
    ``features``: the classifier's input becomes a second output (:func:`parkclf.graphs.head`), after ``logits``."""
    import onnx

    model = onnx.load(str(model_path))
    graph = model.graph
    if features:
        from .graphs import head

        graph.output.append(onnx.helper.make_tensor_value_info(head(graph).features, onnx.TensorProto.FLOAT, None))
    missing = set(_dynamic_inputs(graph)) - set(ranges)
    if missing:
        raise ValueError(f"{RANGES_FILE} does not match {Path(model_path).name} ({len(missing)} inputs unknown); "
                         "rerun `parkclf export` on the model.")
    replace, dead, scales = _rewrite(graph, ranges)
    nodes = []
    for node in graph.node:
        if node.output[0] in replace:
            nodes += replace[node.output[0]]
        elif node.output[0] not in dead:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(scales)
    _drop_zero_adds(model)
    prune(graph)
    return model.SerializeToString()


def transpose_keys_in_matmul(model) -> int:
    """OpenVINO model: each ``MatMul(q, Transpose(k, (0, 2, 3, 1)))`` (attention scores, as torch.onnx writes them)
    becomes ``MatMul(q, Transpose(k, (0, 2, 1, 3)), transpose_b=True)``: the same numbers, and a transpose that moves
    whole rows instead of single values (about 1 ms of 30 per photo on 2 cores). Returns how many were rewritten."""
    import openvino.opset13 as ops

    done = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "MatMul" or any(op.get_attributes().values()):  # transpose_a / transpose_b
            continue
        kt = op.input_value(1).get_node()
        perm = kt.input_value(1).get_node() if kt.get_type_name() == "Transpose" else None
        if perm is None or perm.get_type_name() != "Constant" or list(perm.get_data()) != [0, 2, 3, 1]:
            continue
        k = ops.transpose(kt.input_value(0), ops.constant(np.array([0, 2, 1, 3], np.int64)))
        op.output(0).replace(ops.matmul(op.input_value(0), k, transpose_a=False, transpose_b=True).output(0))
        done += 1
    return done


# What the class token's rows pass through between the last residual sum and the classifier's Gather: each works row
# by row (a token at a time), so computing one row gives that row's numbers. MatMul only with a 2-D (weight) input.
_ROW_WISE = {"Add", "Subtract", "Multiply", "Divide", "Convert", "FakeQuantize", "Gelu", "MVN", "MatMul", "Identity",
             "Sqrt", "Power", "Relu", "Tanh", "Erf"}


def _constant(output) -> np.ndarray | None:
    node = output.get_node()
    if node.get_type_name() == "Constant":
        return node.get_data()
    if node.get_type_name() == "Range" and all(i.get_node().get_type_name() == "Constant" for i in node.input_values()):
        return np.arange(*(int(i.get_node().get_data()) for i in node.input_values()))
    return None


def _row_wise(node) -> bool:
    kind = node.get_type_name()
    if kind not in _ROW_WISE:
        return False
    if kind == "MatMul":
        return len(node.get_input_partial_shape(1)) == 2 and not any(node.get_attributes().values())
    if kind == "MVN":  # normalised over the last axis only
        axes, rank = _constant(node.input_value(1)), len(node.get_input_partial_shape(0))
        return axes is not None and sorted(int(a) % rank for a in np.ravel(axes)) == [rank - 1]
    return True


def _only_feeds(start, end) -> bool:
    """Every path from ``start``'s output runs through row-wise nodes to ``end`` (and nowhere else)."""
    seen, todo = set(), [t.get_node() for t in start.output(0).get_target_inputs()]
    while todo:
        node = todo.pop()
        if node is end or node.get_friendly_name() in seen:
            continue
        if not _row_wise(node) or node.get_output_size() != 1:
            return False
        seen.add(node.get_friendly_name())
        todo += [t.get_node() for t in node.output(0).get_target_inputs()]
    return True


def _side_inputs_small(node, main) -> bool:
    """Every input of ``node`` but the one from ``main`` has at most two dimensions (a bias, a scale, a weight, a
    shape): none holds a row per token, which the one row kept would meet broadcast."""
    return all(v.get_node() is main or len(v.get_partial_shape()) <= 2 for v in node.input_values())


def _class_token_gather(nodes):
    """The one ``Gather(hidden, 0, axis=1)`` of (batch, tokens, width) hidden states, or None."""
    gathers = [n for n in nodes if n.get_type_name() == "Gather" and len(n.get_input_partial_shape(0)) == 3
               and n.get_input_partial_shape(0)[1].is_static
               and (i := _constant(n.input_value(1))) is not None and i.size == 1 and int(np.ravel(i)[0]) == 0
               and (a := _constant(n.input_value(2))) is not None and int(np.ravel(a)[0]) == 1]
    return gathers[0] if len(gathers) == 1 else None


def _scores(softmax):
    """The MatMul of queries and keys under ``softmax``, where nothing but a scalar scale lies between; else None."""
    node = softmax.input_value(0).get_node()
    while node.get_type_name() == "Identity" or (node.get_type_name() in ("Multiply", "Divide") and (
            (scale := _constant(node.input_value(1))) is not None and scale.size == 1)):
        node = node.input_value(0).get_node()
    return node if node.get_type_name() == "MatMul" else None


def _down_to_residual(attend):
    """(the nodes, the residual Add) from the attention's output down to the residual sum, one consumer at a time
    through row-wise steps, transposes and reshapes; None where the path branches or mixes tokens."""
    chain, node = [], attend
    while True:
        following = [t.get_node() for t in node.output(0).get_target_inputs()]
        if len(following) != 1:
            return None
        previous, node = node, following[0]
        if node.get_type_name() == "Add" and all(_constant(v) is None for v in node.input_values()):
            return chain, node
        if node.get_type_name() not in _ROW_WISE | {"Transpose", "Reshape"} or not _side_inputs_small(node, previous):
            return None
        chain.append(node)


def class_token_only_in_last_layer(model) -> bool:
    """OpenVINO model of a ViT whose classifier reads the class token alone (``Gather(hidden, 0, axis=1)``): the
    last layer computes that token's row only. Its keys and values still come from every token; its query, attention
    row, output projection, MLP and the final norm run for one token instead of all of them (485 at 308 px), which
    spares most of a layer (one of twelve in a ViT-S). Each of those steps works token by token, so the class token's
    numbers are the same. Left alone (False) unless the graph has exactly that shape: one such Gather, reached from
    the last residual sum through row-wise steps only, and an attention whose scores are only scaled."""
    import openvino.opset13 as ops

    nodes = model.get_ordered_ops()
    gather, softmaxes = _class_token_gather(nodes), [n for n in nodes if n.get_type_name() == "Softmax"]
    if gather is None or not softmaxes:
        return False
    users = [t.get_node() for t in softmaxes[-1].output(0).get_target_inputs()]
    scores = _scores(softmaxes[-1])
    if scores is None or len(users) != 1 or users[0].get_type_name() != "MatMul" or \
            (down := _down_to_residual(users[0])) is None:
        return False
    attend, (chain, residual) = users[0], down
    reshapes = [n for n in chain if n.get_type_name() == "Reshape"]
    query = scores.input_value(0).get_node()  # up from the scores to the query's projection
    while query.get_type_name() in ("Transpose", "Reshape", "Add"):
        if not _side_inputs_small(query, query.input_value(0).get_node()):
            return False
        reshapes += [query] if query.get_type_name() == "Reshape" else []
        query = query.input_value(0).get_node()
    targets = [_constant(r.input_value(1)) for r in reshapes]
    tokens = gather.get_input_partial_shape(0)[1].get_length()
    if query.get_type_name() != "MatMul" or not _only_feeds(residual, gather) or \
            any(t is None or len(t) < 2 or t[1] != tokens for t in targets):
        return False

    def first_row(output):
        one = ops.constant(np.array([1], np.int64))
        return ops.slice(output, ops.constant(np.array([0], np.int64)), one, one, one).output(0)

    query.input(0).replace_source_output(first_row(query.input_value(0)))
    for r, t in zip(reshapes, targets, strict=True):
        t = t.copy()
        t[1] = 1
        r.input(1).replace_source_output(ops.constant(t).output(0))
    skip = 1 if residual.input_value(0).get_node() is (chain[-1] if chain else attend) else 0
    residual.input(skip).replace_source_output(first_row(residual.input_value(skip)))
    model.validate_nodes_and_infer_types()
    return True
