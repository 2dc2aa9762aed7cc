"""Small ONNX models and complete bundles for tests, built with the onnx helper API (no torch).

Every model here is a real ONNX graph that ONNX Runtime loads and runs; the bundle written
by :func:`write_bundle` satisfies every role interface of models/README.md at tiny sizes,
so tests can break one thing at a time and check the error that names it.
"""
from __future__ import annotations

import copy
import os

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

ONNX_TYPES = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE, "float16": TensorProto.FLOAT16,
              "int64": TensorProto.INT64, "int32": TensorProto.INT32, "uint8": TensorProto.UINT8,
              "bool": TensorProto.BOOL}
OPSET = 17
IR_VERSION = 9  # readable by every onnxruntime >= 1.15


def value_info(name: str, dtype: str, shape) -> onnx.ValueInfoProto:
    """Tensor declaration; string dims become named dynamic axes."""
    return helper.make_tensor_value_info(name, ONNX_TYPES[dtype], list(shape))


def save_model(graph: onnx.GraphProto, path: str) -> str:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="test")
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def make_affine_model(path: str, in_dim: int = 4, out_dim: int = 3, seed: int = 0, batch="B") -> tuple:
    """``y = x @ W + b`` with ``x`` float32 [batch, in_dim]; returns (path, W, b) for reference results."""
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((in_dim, out_dim)).astype(np.float32)
    bias = rng.standard_normal(out_dim).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "affine", [value_info("x", "float32", [batch, in_dim])], [value_info("y", "float32", [batch, out_dim])],
        initializer=[numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")])
    save_model(graph, path)
    return path, weight, bias


def affine_contract(in_dim: int = 4, out_dim: int = 3, batch="B") -> dict:
    return {"inputs": {"x": {"dtype": "float32", "shape": [batch, in_dim]}},
            "outputs": {"y": {"dtype": "float32", "shape": [batch, out_dim]}}}


def make_constant_model(path: str, inputs: dict, outputs: dict, seed: int = 0, values: dict | None = None,
                        passthrough: dict | None = None) -> str:
    """A model that takes ``inputs`` and returns a constant per output (dynamic output dims have size 1).

    ``inputs`` / ``outputs``: name -> (dtype, shape). ``values`` may give an output's array;
    ``passthrough`` maps an output to the input it copies (keeps its dynamic axes dynamic).
    """
    rng = np.random.default_rng(seed)
    nodes, initializers = [], []
    for name, source in (passthrough or {}).items():
        nodes.append(helper.make_node("Identity", [source], [name]))
    for name, (dtype, shape) in outputs.items():
        if passthrough and name in passthrough:
            continue
        concrete = [d if isinstance(d, int) else 1 for d in shape]
        if values and name in values:
            array = np.asarray(values[name]).astype(dtype)
        elif dtype.startswith("float"):
            array = rng.uniform(0.05, 0.95, concrete).astype(dtype)  # in [0, 1]: valid keypoints / probabilities
        else:
            array = np.zeros(concrete, dtype=dtype)
        initializers.append(numpy_helper.from_array(array, f"{name}__value"))
        nodes.append(helper.make_node("Identity", [f"{name}__value"], [name]))
    graph = helper.make_graph(nodes, os.path.splitext(os.path.basename(path))[0],
                              [value_info(n, d, s) for n, (d, s) in inputs.items()],
                              [value_info(n, d, s) for n, (d, s) in outputs.items()], initializer=initializers)
    return save_model(graph, path)


def make_mask_model(path: str, classes: int, height, width, batch="B", seed: int = 0) -> str:
    """1x1 convolution: image float32 [B, 3, H, W] -> mask_logits [B, C, H, W]."""
    weight = np.random.default_rng(seed).standard_normal((classes, 3, 1, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "mask_weight"], ["mask_logits"])], "mask",
        [value_info("image", "float32", [batch, 3, height, width])],
        [value_info("mask_logits", "float32", [batch, classes, height, width])],
        initializer=[numpy_helper.from_array(weight, "mask_weight")])
    return save_model(graph, path)


def make_text_encoder(path: str, vocab: int, length: int, dim: int, seed: int = 0) -> str:
    """Embedding lookup: input_ids int64 [1, L] (+ attention_mask) -> embedding float32 [1, L, E]."""
    table = np.random.default_rng(seed).standard_normal((vocab, dim)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["embedding"], axis=0)], "text_encoder",
        [value_info("input_ids", "int64", [1, length]), value_info("attention_mask", "int64", [1, length])],
        [value_info("embedding", "float32", [1, length, dim])],
        initializer=[numpy_helper.from_array(table, "table")])
    return save_model(graph, path)


# --------------------------------------------------------------------------------------------------------------------
# A complete tiny bundle
# --------------------------------------------------------------------------------------------------------------------

SIZES = dict(height=12, width=16, classes=3, points=2, chain=1, L=4, E=6, T=5, M=3, D=8)
INSTRUCTIONS = ("pick up the cup", "put the bottle in the basket")


def _spec(dtype, shape) -> dict:
    return {"dtype": dtype, "shape": list(shape)}


def role_contracts(vocab_size: int, s: dict = SIZES) -> dict:
    """Manifest contracts of every role at the sizes ``s``."""
    image = _spec("float32", [1, 3, s["height"], s["width"]])
    instruction = _spec("float32", [1, s["L"], s["E"]])
    affordance = _spec("float32", [1, s["points"], 2])
    joints = _spec("float32", [1, 7])
    context = _spec("float32", [1, s["M"], s["D"]])
    return {
        "mask": {"inputs": {"image": _spec("float32", ["B", 3, s["height"], s["width"]])},
                 "outputs": {"mask_logits": _spec("float32", ["B", s["classes"], s["height"], s["width"]])}},
        "planner": {"inputs": {"top_image": image, "instruction": instruction,
                               "prev_affordance": _spec("float32", [1, s["chain"], 2, s["points"], 2]),
                               "prev_valid": _spec("float32", [1, s["chain"]])},
                    "outputs": {"keypoints": _spec("float32", [1, 2, s["points"], 2]),
                                "arm_active": _spec("float32", [1, 2]), "done": _spec("float32", [1])}},
        "validator": {"inputs": {"top_image": image, "wrist_image": image, "affordance": affordance,
                                 "joint_state": joints},
                      "outputs": {"achieved": _spec("float32", [1])}},
        "actor_encoder": {"inputs": {"wrist_image": image, "top_image": image, "affordance": affordance,
                                     "joint_state": joints, "instruction": instruction},
                          "outputs": {"context": context}},
        "actor_decoder": {"inputs": {"context": context, "tokens": _spec("int64", [1, "S"])},
                          "outputs": {"logits": _spec("float32", [1, vocab_size])}},
    }


def _as_pairs(section: dict) -> dict:
    return {name: (spec["dtype"], tuple(spec["shape"])) for name, spec in section.items()}


def write_model_for(path: str, role: str, contract: dict, seed: int = 0) -> str:
    """An ONNX file that declares exactly ``contract`` (mask: a real convolution; others: constants)."""
    if role == "mask":
        image = contract["inputs"]["image"]["shape"]
        classes = contract["outputs"]["mask_logits"]["shape"][1]
        return make_mask_model(path, classes, image[2], image[3], batch=image[0], seed=seed)
    cache = {out: inp for out, inp in (("present_key", "past_key"), ("present_value", "past_value"))
             if out in contract["outputs"] and inp in contract["inputs"]}
    return make_constant_model(path, _as_pairs(contract["inputs"]), _as_pairs(contract["outputs"]), seed=seed,
                               passthrough=cache)


def fit_fast_tokenizer(folder: str, chunk_length: int, seed: int = 0):
    """Fit and save a real FAST tokenizer on smooth random chunks (H3's codec)."""
    from sim2real_vla_ros.core.policy.fast import FastTokenizer

    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, chunk_length)[:, None]
    chunks = [np.clip(rng.uniform(-0.8, 0.8, 7) + rng.uniform(-0.3, 0.3, 7) * t, -1, 1) for _ in range(64)]
    tokenizer = FastTokenizer.fit(chunks, scale=10, vocab_size=256, time_horizon=chunk_length, action_dim=7)
    tokenizer.save(folder)
    return tokenizer


def base_manifest(vocab_size: int, s: dict = SIZES) -> dict:
    contracts = role_contracts(vocab_size, s)
    models = {role: {"file": f"{role}.onnx", **contract} for role, contract in contracts.items()}
    models["actor_decoder"].update(vocab_size=vocab_size, bos_id=vocab_size - 2, eos_id=vocab_size - 1,
                                   max_tokens=16, dynamic_axes={"S": [1, 8, 17]})
    q01 = [-2.0, -1.0, -1.5, -1.0, -1.2, -2.5, 0.0]
    q99 = [2.0, 1.5, 1.0, 1.0, 1.2, 2.5, 0.08]
    return {
        "format_version": 1, "name": "test", "description": "tiny test bundle",
        "image": {"height": s["height"], "width": s["width"], "channel_order": "rgb", "layout": "nchw",
                  "scale": 255.0, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
        "cameras": {"top": "cam_high", "left_wrist": "cam_left_wrist", "right_wrist": "cam_right_wrist"},
        "mask_classes": ["background", "cup", "bottle"][: s["classes"]],
        "keypoints_per_arm": s["points"], "chain_length": s["chain"], "history": 1,
        "action": {"dim": 7, "chunk_length": s["T"], "control_rate_hz": 25.0,
                   "normalization": {"kind": "quantile", "left": {"q01": q01, "q99": q99},
                                     "right": {"q01": list(q01), "q99": list(q99)}}},
        "fast": {"tokenizer_dir": "fast_tokenizer"},
        "instructions": {"embeddings": "instructions.npz", "max_tokens": s["L"], "dim": s["E"], "text_encoder": None},
        "models": models,
        "actors": {"left": {"encoder": "actor_encoder", "decoder": "actor_decoder", "denoiser": None},
                   "right": {"encoder": "actor_encoder", "decoder": "actor_decoder", "denoiser": None}},
    }


def write_manifest(folder: str, manifest: dict) -> None:
    with open(os.path.join(folder, "bundle.yaml"), "w", encoding="utf-8") as handle:
        yaml.safe_dump(manifest, handle, sort_keys=False)


def write_bundle(folder: str, s: dict = SIZES) -> dict:
    """Write a complete valid bundle into ``folder``; return its manifest (a dict to edit and re-write)."""
    os.makedirs(folder, exist_ok=True)
    tokenizer = fit_fast_tokenizer(os.path.join(folder, "fast_tokenizer"), s["T"])
    vocab_size = tokenizer.bpe_vocab_size + 2
    manifest = base_manifest(vocab_size, s)
    for index, (role, entry) in enumerate(manifest["models"].items()):
        write_model_for(os.path.join(folder, entry["file"]), role, entry, seed=index)
    rng = np.random.default_rng(1)
    np.savez(os.path.join(folder, "instructions.npz"),
             **{text: rng.standard_normal((s["L"], s["E"])).astype(np.float32) for text in INSTRUCTIONS})
    write_manifest(folder, manifest)
    return copy.deepcopy(manifest)
