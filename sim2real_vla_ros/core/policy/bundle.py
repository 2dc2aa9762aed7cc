"""Model bundle: one folder, one manifest (``bundle.yaml``), validated completely at start-up.

A bundle names every model file with its tensor contract, the image preprocessing, the
action normalisation, the FAST tokenizer and the instruction embeddings (schema:
``models/README.md``). :func:`load_bundle` checks all of it before anything runs, so a
missing, truncated or corrupt file, a wrong dtype or shape, or a degenerate statistic
fails once at start-up with one :class:`BundleError` naming the file, the field or the
tensor, never later inside a ROS callback.

Nothing here imports rclpy.
"""
from __future__ import annotations

import math
import os
import threading
import zipfile
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Optional, Sequence

import numpy as np
import yaml

from sim2real_vla_ros.core.policy.normalization import KINDS as NORMALIZATION_KINDS
from sim2real_vla_ros.core.policy.normalization import ActionNormalizer
from sim2real_vla_ros.core.policy.runtime.base import (ContractError, InferenceBackend, ModelContract, RuntimeBackendError, TensorSpec,
                           format_shape)
from sim2real_vla_ros.core.policy.runtime.engine_metadata import resolve_profiles
from sim2real_vla_ros.core.policy.runtime.onnx_backend import DEFAULT_PROVIDERS, OnnxRuntimeBackend
from sim2real_vla_ros.core.policy.runtime.tensorrt_backend import TensorRTBackend
from sim2real_vla_ros.core.vocabulary import ARMS, BACKENDS

MANIFEST_NAME = "bundle.yaml"
FORMAT_VERSION = 1
CAMERA_KEYS = ("top", "left_wrist", "right_wrist")
ACTION_DIM = 7  # per arm: joints 1-6 (rad) + joint7 finger position (m)
FIXED_ROLES = ("mask", "planner", "validator")

_TOP_LEVEL_KEYS = ("format_version", "name", "description", "image", "cameras", "mask_classes", "keypoints_per_arm",
                   "chain_length", "history", "action", "fast", "instructions", "models", "actors")
_DECODER_KEYS = ("vocab_size", "bos_id", "eos_id", "max_tokens")
#: Role-specific settings kept in ModelEntry.options for the pipeline (checked for type here).
_DECODER_OPTIONS = ("mode", "max_expert_tokens")
_DENOISER_OPTIONS = ("schedule", "noise_seed")
_MODEL_KEYS = ("file", "inputs", "outputs", "engine", "dynamic_axes", "steps") + _DECODER_KEYS \
    + _DECODER_OPTIONS + _DENOISER_OPTIONS
DECODER_MODES = ("autoregressive", "one_shot")
_KV_CACHE_TENSORS = ("past_key", "past_value", "present_key", "present_value")


class BundleError(ValueError):
    """The bundle is unusable; the message names the file, field or tensor and what is wrong."""


class UnknownInstructionError(LookupError):
    """An instruction that has no precomputed embedding and no text encoder to compute one.

    Attributes
    ----------
    text : str
        The instruction asked for.
    known : tuple of str
        The instructions the bundle has embeddings for.
    """

    def __init__(self, text: str, known: Sequence[str]) -> None:
        self.text = text
        self.known = tuple(known)
        listing = "; ".join(repr(k) for k in self.known) or "none"
        super().__init__(f"instruction {text!r} has no precomputed embedding and the bundle has no text encoder; "
                         f"known instructions: {listing}")


class ImageFormatError(ValueError):
    """An image given to the preprocessor is not a uint8 (H, W, 3) array."""


# ----------------------------------------------------------------------------------------------------------------------
# Manifest dataclasses
# ----------------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImagePreprocessor:
    """uint8 RGB (H, W, 3) image -> float32 [1, 3, height, width] model input.

    Steps: resize with ``cv2.INTER_AREA`` (no-op when the size already matches), reorder
    channels if the model wants BGR, divide by ``scale``, subtract ``mean``, divide by
    ``std`` (per channel, in the model's channel order), HWC -> CHW, add the batch axis.
    """

    height: int
    width: int
    channel_order: str = "rgb"
    scale: float = 255.0
    mean: tuple = (0.0, 0.0, 0.0)
    std: tuple = (1.0, 1.0, 1.0)

    def __post_init__(self) -> None:
        if self.channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {self.channel_order!r}")
        mean = np.asarray(self.mean, dtype=np.float64)
        std = np.asarray(self.std, dtype=np.float64)
        if mean.shape != (3,) or std.shape != (3,) or np.any(std <= 0) or not self.scale > 0:
            raise ValueError("mean and std need 3 values each, std > 0 and scale > 0")
        # Fold scale/mean/std into one multiply-add per pixel: y = x * gain + bias.
        object.__setattr__(self, "_gain", (1.0 / (self.scale * std)).astype(np.float32))
        object.__setattr__(self, "_bias", (-mean / std).astype(np.float32))

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Preprocess one RGB image.

        Parameters
        ----------
        image : numpy.ndarray
            uint8, shape (H, W, 3), RGB channel order (what the camera nodes produce).

        Returns
        -------
        numpy.ndarray
            float32, shape (1, 3, height, width), C-contiguous.

        Raises
        ------
        ImageFormatError
            If ``image`` is not a non-empty uint8 (H, W, 3) array.
        """
        import cv2  # imported here so the bundle module imports without OpenCV's start-up cost

        if not isinstance(image, np.ndarray):
            raise ImageFormatError(f"image must be a numpy uint8 array of shape (H, W, 3), got {type(image).__name__}")
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] == 0 \
                or image.shape[1] == 0:
            raise ImageFormatError(f"image must be a uint8 array of shape (H, W, 3) in RGB order, "
                                   f"got {image.dtype} {image.shape}")
        if image.shape[:2] != (self.height, self.width):
            image = cv2.resize(image, (self.width, self.height), interpolation=cv2.INTER_AREA)
        if self.channel_order == "bgr":
            image = image[:, :, ::-1]
        # Transpose the uint8 view first and write the multiply-add straight into the output:
        # the same float32 arithmetic as (x * gain + bias), without two full-size temporaries.
        out = np.empty((1, 3, self.height, self.width), dtype=np.float32)
        np.multiply(image.transpose(2, 0, 1), self._gain[:, None, None], out=out[0])
        out[0] += self._bias[:, None, None]
        return out


@dataclass(frozen=True)
class ImageConfig:
    height: int
    width: int
    channel_order: str
    layout: str
    scale: float
    mean: tuple
    std: tuple

    def preprocessor(self) -> ImagePreprocessor:
        return ImagePreprocessor(self.height, self.width, self.channel_order, self.scale, self.mean, self.std)


@dataclass(frozen=True)
class CameraNames:
    """Camera names as the robot calls them (e.g. ``cam_high``)."""

    top: str
    left_wrist: str
    right_wrist: str


@dataclass(frozen=True)
class ActionConfig:
    dim: int
    chunk_length: int
    control_rate_hz: float
    normalization_kind: str
    normalizers: Mapping[str, ActionNormalizer]


@dataclass(frozen=True)
class InstructionConfig:
    embeddings_file: str        # absolute path of the npz
    max_tokens: int             # L
    dim: int                    # E
    text_encoder: Optional[str]  # role name, or None
    text_tokenizer: Optional[str]  # absolute path of a tokenizers tokenizer.json, with text_encoder


@dataclass(frozen=True)
class TokenSpec:
    """Token ids of an actor decoder: FAST ids ``0..vocab_size-3``, then BOS and EOS."""

    vocab_size: int
    bos_id: int
    eos_id: int
    max_tokens: int

    @property
    def fast_vocab_size(self) -> int:
        return self.vocab_size - 2


@dataclass(frozen=True)
class ModelEntry:
    """One ``models:`` entry of the manifest."""

    role: str
    kind: str                   # mask | planner | validator | actor_encoder | actor_decoder | denoiser | text_encoder | other
    file: str                   # absolute path of the ONNX file
    contract: ModelContract
    engine: Optional[str] = None
    dynamic_axes: Mapping[str, tuple] = field(default_factory=dict)
    tokens: Optional[TokenSpec] = None
    steps: Optional[int] = None
    options: Mapping[str, object] = field(default_factory=dict)

    @property
    def mode(self) -> Optional[str]:
        """Actor decoders: ``"autoregressive"`` (next-token logits, the default) or ``"one_shot"``."""
        return self.options.get("mode", "autoregressive") if self.kind == "actor_decoder" else None

    @property
    def uses_kv_cache(self) -> bool:
        return "past_key" in self.contract.inputs

    @property
    def uses_expert_tokens(self) -> bool:
        return "expert_tokens" in self.contract.inputs


@dataclass(frozen=True)
class ActorRoles:
    """Model roles one arm's actor uses."""

    encoder: str
    decoder: str
    denoiser: Optional[str] = None


@dataclass(frozen=True)
class BundleManifest:
    folder: str
    format_version: int
    name: str
    description: str
    image: ImageConfig
    cameras: CameraNames
    mask_classes: tuple
    keypoints_per_arm: int
    chain_length: int
    history: int
    action: ActionConfig
    fast_tokenizer_dir: str
    instructions: InstructionConfig
    models: Mapping[str, ModelEntry]
    actors: Mapping[str, ActorRoles]


# ----------------------------------------------------------------------------------------------------------------------
# Field readers: each failure is one BundleError naming the manifest field
# ----------------------------------------------------------------------------------------------------------------------

_PREDICATES = ("is ", "must ", "has ", "names ", "uses ", "holds ")


def _fail(path: str, problem: str) -> BundleError:
    # "image.height is missing" reads as a sentence; anything else gets a colon after the field.
    joiner = " " if problem.startswith(_PREDICATES) else ": "
    return BundleError(f"{MANIFEST_NAME}: {path}{joiner}{problem}")


def _mapping(value, path: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise _fail(path, f"must be a mapping, got {type(value).__name__}")
    return value


def _require(section: Mapping, key: str, path: str):
    if key not in section or section[key] is None:
        raise _fail(f"{path}.{key}" if path else key, "is missing")
    return section[key]


def _no_unknown(section: Mapping, allowed: Sequence[str], path: str) -> None:
    unknown = sorted(str(k) for k in section if k not in allowed)
    if unknown:
        where = f"{path}: " if path else ""
        raise BundleError(f"{MANIFEST_NAME}: {where}unknown field(s) {unknown}; allowed: {list(allowed)}")


def _int(value, path: str, minimum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(path, f"must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise _fail(path, f"must be >= {minimum}, got {value}")
    return int(value)


def _float(value, path: str, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _fail(path, f"must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise _fail(path, f"must be > 0, got {value}")
    return float(value)


def _str(value, path: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(path, f"must be a non-empty string, got {value!r}")
    return value


def _floats(value, path: str, length: int, positive: bool = False) -> tuple:
    if not isinstance(value, (list, tuple)) or len(value) != length:
        got = f"{len(value)} values" if isinstance(value, (list, tuple)) else repr(value)
        raise _fail(path, f"must be a list of {length} numbers, got {got}")
    return tuple(_float(v, f"{path}[{i}]", positive) for i, v in enumerate(value))


def _bundle_path(folder: str, value, path: str) -> str:
    return os.path.normpath(os.path.join(folder, _str(value, path)))


# ----------------------------------------------------------------------------------------------------------------------
# Manifest parsing (no model is loaded here; build_engine uses this too)
# ----------------------------------------------------------------------------------------------------------------------

def read_manifest(folder: str) -> BundleManifest:
    """Parse and check ``<folder>/bundle.yaml`` without loading any model.

    Raises
    ------
    BundleError
        On a missing manifest, invalid YAML, or any missing, malformed or inconsistent
        field (the message names the field).
    """
    folder = os.path.abspath(str(folder))
    path = os.path.join(folder, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise BundleError(f"{folder}: no {MANIFEST_NAME} found (a bundle is a folder with {MANIFEST_NAME}; "
                          "see models/README.md)")
    try:
        with open(path, "r", encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BundleError(f"{MANIFEST_NAME}: not valid YAML: {exc}") from None
    return parse_manifest(data, folder)


def parse_manifest(data, folder: str) -> BundleManifest:
    """Check a manifest already loaded from YAML; see :func:`read_manifest`."""
    if not isinstance(data, Mapping):
        raise BundleError(f"{MANIFEST_NAME}: must hold a mapping at the top level, got {type(data).__name__}")
    _no_unknown(data, _TOP_LEVEL_KEYS, "")
    version = _int(_require(data, "format_version", ""), "format_version")
    if version != FORMAT_VERSION:
        raise _fail("format_version", f"is {version}; this loader reads format {FORMAT_VERSION}")
    image = _parse_image(_mapping(_require(data, "image", ""), "image"))
    cameras = _mapping(_require(data, "cameras", ""), "cameras")
    _no_unknown(cameras, CAMERA_KEYS, "cameras")
    camera_names = CameraNames(*(_str(_require(cameras, k, "cameras"), f"cameras.{k}") for k in CAMERA_KEYS))
    mask_classes = _require(data, "mask_classes", "")
    if not isinstance(mask_classes, list) or not mask_classes:
        raise _fail("mask_classes", "must be a non-empty list of class names (index 0 = background)")
    mask_classes = tuple(_str(c, f"mask_classes[{i}]") for i, c in enumerate(mask_classes))
    if len(set(mask_classes)) != len(mask_classes):
        raise _fail("mask_classes", f"has duplicate names: {list(mask_classes)}")
    action = _parse_action(_mapping(_require(data, "action", ""), "action"))
    fast = _mapping(_require(data, "fast", ""), "fast")
    _no_unknown(fast, ("tokenizer_dir",), "fast")
    instructions = _parse_instructions(_mapping(_require(data, "instructions", ""), "instructions"), folder)
    models_raw = _mapping(_require(data, "models", ""), "models")
    actors = _parse_actors(_mapping(_require(data, "actors", ""), "actors"), models_raw)
    kinds = _role_kinds(models_raw, actors, instructions)
    models = {str(role): _parse_model(str(role), kinds.get(role, "other"), _mapping(entry, f"models.{role}"), folder)
              for role, entry in models_raw.items()}
    manifest = BundleManifest(
        folder=folder, format_version=version, name=_str(_require(data, "name", ""), "name"),
        description=str(data.get("description") or ""), image=image, cameras=camera_names,
        mask_classes=mask_classes,
        keypoints_per_arm=_int(_require(data, "keypoints_per_arm", ""), "keypoints_per_arm", 1),
        chain_length=_int(_require(data, "chain_length", ""), "chain_length", 1),
        history=_int(_require(data, "history", ""), "history", 1), action=action,
        fast_tokenizer_dir=_bundle_path(folder, _require(fast, "tokenizer_dir", "fast"), "fast.tokenizer_dir"),
        instructions=instructions, models=MappingProxyType(models), actors=MappingProxyType(actors))
    for role in FIXED_ROLES:
        if role not in models:
            raise _fail("models", f"has no '{role}' model (required roles: {list(FIXED_ROLES)} + the actors' roles)")
    for role, entry in models.items():
        _check_role_interface(manifest, entry)
    _check_actor_consistency(manifest)
    return manifest


def _parse_image(image: Mapping) -> ImageConfig:
    _no_unknown(image, ("height", "width", "channel_order", "layout", "scale", "mean", "std"), "image")
    order = _require(image, "channel_order", "image")
    if order not in ("rgb", "bgr"):
        raise _fail("image.channel_order", f"must be 'rgb' or 'bgr', got {order!r}")
    layout = _require(image, "layout", "image")
    if layout != "nchw":
        raise _fail("image.layout", f"must be 'nchw' (the only layout the models take), got {layout!r}")
    return ImageConfig(
        height=_int(_require(image, "height", "image"), "image.height", 1),
        width=_int(_require(image, "width", "image"), "image.width", 1),
        channel_order=order, layout=layout,
        scale=_float(_require(image, "scale", "image"), "image.scale", positive=True),
        mean=_floats(_require(image, "mean", "image"), "image.mean", 3),
        std=_floats(_require(image, "std", "image"), "image.std", 3, positive=True))


def _parse_action(action: Mapping) -> ActionConfig:
    _no_unknown(action, ("dim", "chunk_length", "control_rate_hz", "normalization"), "action")
    dim = _int(_require(action, "dim", "action"), "action.dim")
    if dim != ACTION_DIM:
        raise _fail("action.dim", f"must be {ACTION_DIM} (joints 1-6 + gripper per arm), got {dim}")
    norm = _mapping(_require(action, "normalization", "action"), "action.normalization")
    _no_unknown(norm, ("kind",) + ARMS, "action.normalization")
    kind = _require(norm, "kind", "action.normalization")
    if kind not in NORMALIZATION_KINDS:
        raise _fail("action.normalization.kind", f"must be one of {sorted(NORMALIZATION_KINDS)}, got {kind!r}")
    normalizers = {}
    for arm in ARMS:
        path = f"action.normalization.{arm}"
        stats = _mapping(_require(norm, arm, "action.normalization"), path)
        names = NORMALIZATION_KINDS[kind]
        _no_unknown(stats, names, path)
        vectors = {n: _floats(_require(stats, n, path), f"{path}.{n}", dim) for n in names}
        try:
            normalizers[arm] = ActionNormalizer(kind, vectors)
        except ValueError as exc:
            raise BundleError(f"{MANIFEST_NAME}: {path}: {exc}") from None
    return ActionConfig(dim=dim, chunk_length=_int(_require(action, "chunk_length", "action"), "action.chunk_length", 1),
                        control_rate_hz=_float(_require(action, "control_rate_hz", "action"), "action.control_rate_hz",
                                               positive=True),
                        normalization_kind=kind, normalizers=MappingProxyType(normalizers))


def _parse_instructions(section: Mapping, folder: str) -> InstructionConfig:
    _no_unknown(section, ("embeddings", "max_tokens", "dim", "text_encoder", "text_tokenizer"), "instructions")
    encoder = section.get("text_encoder")
    tokenizer = section.get("text_tokenizer")
    if encoder is not None:
        encoder = _str(encoder, "instructions.text_encoder")
        if tokenizer is None:
            raise _fail("instructions.text_tokenizer", "is missing: a text_encoder needs the tokenizer.json "
                                                       "(tokenizers library format) that produces its input_ids")
    if tokenizer is not None and encoder is None:
        raise _fail("instructions.text_tokenizer", "is set but instructions.text_encoder is not")
    return InstructionConfig(
        embeddings_file=_bundle_path(folder, _require(section, "embeddings", "instructions"), "instructions.embeddings"),
        max_tokens=_int(_require(section, "max_tokens", "instructions"), "instructions.max_tokens", 1),
        dim=_int(_require(section, "dim", "instructions"), "instructions.dim", 1),
        text_encoder=encoder,
        text_tokenizer=_bundle_path(folder, tokenizer, "instructions.text_tokenizer") if tokenizer else None)


def _parse_actors(actors: Mapping, models: Mapping) -> dict:
    _no_unknown(actors, ARMS, "actors")
    parsed = {}
    for arm in ARMS:
        path = f"actors.{arm}"
        section = _mapping(_require(actors, arm, "actors"), path)
        _no_unknown(section, ("encoder", "decoder", "denoiser"), path)
        roles = {}
        for key in ("encoder", "decoder", "denoiser"):
            value = section.get(key)
            if value is None:
                if key == "denoiser":
                    roles[key] = None
                    continue
                raise _fail(f"{path}.{key}", "is missing")
            role = _str(value, f"{path}.{key}")
            if role not in models:
                raise _fail(f"{path}.{key}", f"names model '{role}', which is not in models ({sorted(models)})")
            roles[key] = role
        parsed[arm] = ActorRoles(**roles)
    return parsed


def _role_kinds(models: Mapping, actors: Mapping[str, ActorRoles], instructions: InstructionConfig) -> dict:
    kinds = {role: role for role in FIXED_ROLES if role in models}

    def claim(role: str, kind: str, path: str) -> None:
        if kinds.get(role, kind) != kind:
            raise _fail(path, f"uses model '{role}' as {kind}, but it is already the {kinds[role]} model")
        kinds[role] = kind

    for arm, roles in actors.items():
        claim(roles.encoder, "actor_encoder", f"actors.{arm}.encoder")
        claim(roles.decoder, "actor_decoder", f"actors.{arm}.decoder")
        if roles.denoiser:
            claim(roles.denoiser, "denoiser", f"actors.{arm}.denoiser")
    if instructions.text_encoder:
        if instructions.text_encoder not in models:
            raise _fail("instructions.text_encoder", f"names model '{instructions.text_encoder}', which is not in "
                                                     f"models ({sorted(models)})")
        claim(instructions.text_encoder, "text_encoder", "instructions.text_encoder")
    # Models no actor uses (e.g. alternative decoders shipped for tests) are checked by what they declare.
    for role, entry in models.items():
        if role not in kinds and isinstance(entry, Mapping):
            if "vocab_size" in entry:
                kinds[role] = "actor_decoder"
            elif "steps" in entry:
                kinds[role] = "denoiser"
    return kinds


def _parse_model(role: str, kind: str, entry: Mapping, folder: str) -> ModelEntry:
    path = f"models.{role}"
    _no_unknown(entry, _MODEL_KEYS, path)
    try:
        contract = ModelContract.from_dict(entry, where=path)
    except ValueError as exc:
        raise BundleError(f"{MANIFEST_NAME}: {exc}") from None
    dynamic_axes = {}
    for axis, value in _mapping(entry.get("dynamic_axes") or {}, f"{path}.dynamic_axes").items():
        triple = value if isinstance(value, (list, tuple)) else None
        if triple is None or len(triple) != 3:
            raise _fail(f"{path}.dynamic_axes.{axis}", f"must be [min, opt, max], got {value!r}")
        lo, opt, hi = (_int(v, f"{path}.dynamic_axes.{axis}", 0) for v in triple)
        if not lo <= opt <= hi:
            raise _fail(f"{path}.dynamic_axes.{axis}", f"must satisfy min <= opt <= max, got {list(triple)}")
        dynamic_axes[str(axis)] = (lo, opt, hi)
    tokens = None
    present = [k for k in _DECODER_KEYS if k in entry]
    if kind == "actor_decoder":
        values = {k: _int(_require(entry, k, path), f"{path}.{k}", 0) for k in _DECODER_KEYS}
        tokens = TokenSpec(**values)
        if tokens.vocab_size < 3:
            raise _fail(f"{path}.vocab_size", f"must be >= 3 (FAST ids + BOS + EOS), got {tokens.vocab_size}")
        if tokens.bos_id != tokens.vocab_size - 2 or tokens.eos_id != tokens.vocab_size - 1:
            raise _fail(path, f"token ids must be FAST ids 0..V-1, BOS = V, EOS = V+1 with vocab_size = V+2: "
                              f"vocab_size {tokens.vocab_size} needs bos_id {tokens.vocab_size - 2} and eos_id "
                              f"{tokens.vocab_size - 1}, got {tokens.bos_id} and {tokens.eos_id}")
        if tokens.max_tokens < 1:
            raise _fail(f"{path}.max_tokens", "must be >= 1")
    elif present:
        raise _fail(path, f"has {present}, which only an actor decoder takes (this model is the {kind} model)")
    steps = None
    if kind == "denoiser":
        steps = _int(_require(entry, "steps", path), f"{path}.steps", 1)
    elif "steps" in entry:
        raise _fail(f"{path}.steps", f"is only for a denoiser (this model is the {kind} model)")
    options = _parse_options(entry, kind, path)
    engine = entry.get("engine")
    return ModelEntry(role=role, kind=kind, file=_bundle_path(folder, _require(entry, "file", path), f"{path}.file"),
                      contract=contract, engine=_bundle_path(folder, engine, f"{path}.engine") if engine else None,
                      dynamic_axes=MappingProxyType(dynamic_axes), tokens=tokens, steps=steps,
                      options=MappingProxyType(options))


def _parse_options(entry: Mapping, kind: str, path: str) -> dict:
    allowed = {"actor_decoder": _DECODER_OPTIONS, "denoiser": _DENOISER_OPTIONS}.get(kind, ())
    stray = [k for k in _DECODER_OPTIONS + _DENOISER_OPTIONS if k in entry and k not in allowed]
    if stray:
        raise _fail(path, f"has {stray}, which a {kind} model does not take")
    options = {k: entry[k] for k in allowed if entry.get(k) is not None}
    if "mode" in options and options["mode"] not in DECODER_MODES:
        raise _fail(f"{path}.mode", f"must be one of {list(DECODER_MODES)}, got {options['mode']!r}")
    if "max_expert_tokens" in options:
        _int(options["max_expert_tokens"], f"{path}.max_expert_tokens", 1)
    if "noise_seed" in options:
        _int(options["noise_seed"], f"{path}.noise_seed", 0)
    if "schedule" in options:
        _mapping(options["schedule"], f"{path}.schedule")
    return options


# ----------------------------------------------------------------------------------------------------------------------
# Role interfaces (fixed tensor names; models/README.md documents them)
# ----------------------------------------------------------------------------------------------------------------------

def role_interface(manifest: BundleManifest, entry: ModelEntry) -> tuple:
    """``(required_inputs, optional_inputs, required_outputs, optional_outputs)`` of a role.

    Each is a dict tensor name -> (dtype, shape) where a shape entry is an int the
    manifest must use (or leave dynamic) or None for "any size".
    """
    height, width = manifest.image.height, manifest.image.width
    image = ("float32", (1, 3 * manifest.history, height, width))
    instruction = ("float32", (1, manifest.instructions.max_tokens, manifest.instructions.dim))
    points, chain, dim = manifest.keypoints_per_arm, manifest.chain_length, manifest.action.dim
    context = ("float32", (1, None, None))
    cache = ("float32", (None, 1, None, None, None))
    if entry.kind == "mask":
        return ({"image": ("float32", (None, 3, height, width))}, {},
                {"mask_logits": ("float32", (None, len(manifest.mask_classes), height, width))}, {})
    if entry.kind == "planner":
        return ({"top_image": image, "instruction": instruction,
                 "prev_affordance": ("float32", (1, chain, 2, points, 2)), "prev_valid": ("float32", (1, chain))}, {},
                {"keypoints": ("float32", (1, 2, points, 2)), "arm_active": ("float32", (1, 2)),
                 "done": ("float32", (1,))}, {})
    if entry.kind == "validator":
        return ({"top_image": image, "wrist_image": image, "affordance": ("float32", (1, points, 2)),
                 "joint_state": ("float32", (1, dim))}, {}, {"achieved": ("float32", (1,))}, {})
    if entry.kind == "actor_encoder":
        return ({"wrist_image": image, "top_image": image, "affordance": ("float32", (1, points, 2)),
                 "joint_state": ("float32", (1, dim)), "instruction": instruction}, {}, {"context": context}, {})
    if entry.kind == "actor_decoder" and entry.mode == "one_shot":
        return ({"context": context}, {"expert_tokens": ("int64", (1, None))},
                {"tokens": ("int64", (1, None))}, {})
    if entry.kind == "actor_decoder":
        return ({"context": context, "tokens": ("int64", (1, None))},
                {"past_key": cache, "past_value": cache, "expert_tokens": ("int64", (1, None))},
                {"logits": ("float32", (1, entry.tokens.vocab_size))},
                {"present_key": cache, "present_value": cache})
    if entry.kind == "denoiser":
        chunk = ("float32", (1, manifest.action.chunk_length, dim))
        return ({"noisy_actions": chunk, "timestep": ("float32", (1,)), "context": context}, {}, {"eps": chunk}, {})
    if entry.kind == "text_encoder":
        ids = ("int64", (1, manifest.instructions.max_tokens))
        return ({"input_ids": ids, "attention_mask": ids}, {}, {"embedding": instruction}, {})
    return None


def _expected_text(dtype: str, shape: tuple) -> str:
    return f"{dtype}[{', '.join('*' if d is None else str(d) for d in shape)}]"


def _check_tensor(path: str, kind: str, spec: TensorSpec, dtype: str, shape: tuple) -> None:
    expected = _expected_text(dtype, shape)
    if spec.dtype != dtype or spec.rank != len(shape):
        raise _fail(path, f"{kind} '{spec.name}' must be {expected}, manifest says {spec.describe()}")
    for axis, (have, want) in enumerate(zip(spec.shape, shape)):
        # A dynamic axis in the manifest accepts the size the pipeline feeds; a fixed one must equal it.
        if want is not None and isinstance(have, int) and have != want:
            raise _fail(path, f"{kind} '{spec.name}' must be {expected}, manifest says {spec.describe()} "
                              f"(dim {axis} is {have}, expected {want})")


def _check_role_interface(manifest: BundleManifest, entry: ModelEntry) -> None:
    interface = role_interface(manifest, entry)
    if interface is None:
        return  # a model no role uses: only its file and contract are checked
    required_in, optional_in, required_out, optional_out = interface
    path = f"models.{entry.role}"
    for name, (dtype, shape) in required_in.items():
        if name not in entry.contract.inputs:
            raise _fail(path, f"has no input '{name}', which the {entry.kind} interface requires "
                              f"({_expected_text(dtype, shape)})")
    for name in entry.contract.inputs:
        if name not in required_in and name not in optional_in:
            raise _fail(path, f"input '{name}' is not part of the {entry.kind} interface (inputs: "
                              f"{list(required_in) + list(optional_in)})")
    for name, (dtype, shape) in required_out.items():
        if name not in entry.contract.outputs:
            raise _fail(path, f"has no output '{name}', which the {entry.kind} interface requires "
                              f"({_expected_text(dtype, shape)})")
    for kind, specs, allowed in (("input", entry.contract.inputs, {**required_in, **optional_in}),
                                 ("output", entry.contract.outputs, {**required_out, **optional_out})):
        for name, spec in specs.items():
            if name in allowed:
                _check_tensor(path, kind, spec, *allowed[name])
    if entry.kind == "actor_decoder":
        names = set(entry.contract.inputs) | set(entry.contract.outputs)
        have = [n for n in _KV_CACHE_TENSORS if n in names]
        if have and len(have) != len(_KV_CACHE_TENSORS):
            raise _fail(path, f"has {have} but a key/value cache needs all of {list(_KV_CACHE_TENSORS)}")


def _check_actor_consistency(manifest: BundleManifest) -> None:
    for arm, roles in manifest.actors.items():
        encoder, decoder = manifest.models[roles.encoder], manifest.models[roles.decoder]
        produced = encoder.contract.outputs["context"]
        consumers = [decoder] + ([manifest.models[roles.denoiser]] if roles.denoiser else [])
        for consumer in consumers:
            taken = consumer.contract.inputs["context"]
            for axis, (a, b) in enumerate(zip(produced.shape, taken.shape)):
                if isinstance(a, int) and isinstance(b, int) and a != b:
                    raise _fail(f"actors.{arm}", f"encoder '{roles.encoder}' outputs context {format_shape(produced.shape)} "
                                                 f"but '{consumer.role}' takes {format_shape(taken.shape)}")
        if roles.denoiser and not decoder.uses_expert_tokens:
            raise _fail(f"actors.{arm}", f"uses denoiser '{roles.denoiser}' but decoder '{roles.decoder}' has no "
                                         f"'expert_tokens' input to receive its chunk")
    for arm, roles in manifest.actors.items():
        if manifest.models[roles.decoder].uses_expert_tokens and not roles.denoiser:
            raise _fail(f"actors.{arm}", f"decoder '{roles.decoder}' takes 'expert_tokens' but the arm has no "
                                         f"denoiser to produce them")


# ----------------------------------------------------------------------------------------------------------------------
# Files: existence, instruction embeddings, FAST tokenizer folder
# ----------------------------------------------------------------------------------------------------------------------

def _rel(manifest: BundleManifest, path: str) -> str:
    return os.path.relpath(path, manifest.folder)


def _check_file(manifest: BundleManifest, path: str, field_path: str) -> None:
    if not os.path.isfile(path):
        raise BundleError(f"{_rel(manifest, path)}: file not found (named by {MANIFEST_NAME} {field_path})")
    if os.path.getsize(path) == 0:
        raise BundleError(f"{_rel(manifest, path)}: file is empty (named by {MANIFEST_NAME} {field_path})")


def fast_tokenizer_files(tokenizer_dir: str) -> tuple:
    """``(processor_config.json, tokenizer.json)`` paths; the tokenizer may be in ``bpe_tokenizer/``."""
    flat = os.path.join(tokenizer_dir, "tokenizer.json")
    nested = os.path.join(tokenizer_dir, "bpe_tokenizer", "tokenizer.json")
    return os.path.join(tokenizer_dir, "processor_config.json"), (flat if os.path.isfile(flat) else nested)


def check_files(manifest: BundleManifest, backend: str = "onnxruntime") -> None:
    """Every file the manifest names exists and is non-empty (engines only for ``backend='tensorrt'``)."""
    for role, entry in manifest.models.items():
        _check_file(manifest, entry.file, f"models.{role}.file")
        if backend == "tensorrt":
            if entry.engine is None:
                raise BundleError(f"{MANIFEST_NAME}: models.{role}.engine is not set; backend='tensorrt' needs an "
                                  f"engine per model: build it with `build_engine --bundle {manifest.folder} "
                                  f"--role {role}` and add its path as models.{role}.engine")
            _check_file(manifest, entry.engine, f"models.{role}.engine")
    _check_file(manifest, manifest.instructions.embeddings_file, "instructions.embeddings")
    if manifest.instructions.text_tokenizer:
        _check_file(manifest, manifest.instructions.text_tokenizer, "instructions.text_tokenizer")
    if not os.path.isdir(manifest.fast_tokenizer_dir):
        raise BundleError(f"{_rel(manifest, manifest.fast_tokenizer_dir)}: FAST tokenizer folder not found "
                          f"(named by {MANIFEST_NAME} fast.tokenizer_dir)")
    config, tokenizer = fast_tokenizer_files(manifest.fast_tokenizer_dir)
    _check_file(manifest, config, "fast.tokenizer_dir")
    if not os.path.isfile(tokenizer):
        raise BundleError(f"{_rel(manifest, manifest.fast_tokenizer_dir)}: no tokenizer.json (looked for it flat and "
                          f"in bpe_tokenizer/; named by {MANIFEST_NAME} fast.tokenizer_dir)")
    _check_file(manifest, tokenizer, "fast.tokenizer_dir")


def check_fast_tokenizer(manifest: BundleManifest, tokenizer) -> None:
    """A loaded FAST tokenizer agrees with the bundle's action shape and decoder vocabularies."""
    label = _rel(manifest, manifest.fast_tokenizer_dir)
    for key, want in (("time_horizon", manifest.action.chunk_length), ("action_dim", manifest.action.dim)):
        have = getattr(tokenizer, key, None)
        if have is not None and have != want:
            raise BundleError(f"{label}: FAST {key} is {have}, but the bundle's action uses {want}")
    fast_ids = int(getattr(tokenizer, "bpe_vocab_size"))
    for role, entry in manifest.models.items():
        if entry.tokens is not None and fast_ids > entry.tokens.fast_vocab_size:
            raise BundleError(f"models.{role}: vocab_size {entry.tokens.vocab_size} leaves room for "
                              f"{entry.tokens.fast_vocab_size} FAST ids, but the FAST tokenizer has {fast_ids}")


def load_instruction_embeddings(manifest: BundleManifest) -> dict:
    """Instruction text -> read-only float32 [L, E] array, from the bundle's npz.

    Raises
    ------
    BundleError
        If the npz is unreadable, empty (without a text encoder), or an entry has the
        wrong shape, a non-float dtype or non-finite values.
    """
    config = manifest.instructions
    label = _rel(manifest, config.embeddings_file)
    want = (config.max_tokens, config.dim)
    embeddings = {}
    try:
        with np.load(config.embeddings_file, allow_pickle=False) as archive:
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise BundleError(f"{label}: must be an .npz archive (np.savez), not a single .npy array")
            for key in archive.files:
                value = archive[key]
                if not np.issubdtype(value.dtype, np.floating):
                    raise BundleError(f"{label}: instruction {key!r} has dtype {value.dtype}, expected float32")
                if value.shape != want:
                    raise BundleError(f"{label}: instruction {key!r} has shape {list(value.shape)}, expected "
                                      f"[{want[0]}, {want[1]}] (instructions.max_tokens, instructions.dim)")
                if not np.all(np.isfinite(value)):
                    raise BundleError(f"{label}: instruction {key!r} has non-finite values")
                array = value.astype(np.float32)
                array.setflags(write=False)
                embeddings[key] = array
    except BundleError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise BundleError(f"{label}: cannot read instruction embeddings: {exc}") from None
    if not embeddings and not config.text_encoder:
        raise BundleError(f"{label}: holds no instruction embeddings and the bundle has no text encoder")
    return embeddings


def _normalize_text(text: str) -> str:
    # Whitespace differences (a trailing newline from a launch file) should not miss a key.
    return " ".join(str(text).split())


# ----------------------------------------------------------------------------------------------------------------------
# The loaded bundle
# ----------------------------------------------------------------------------------------------------------------------

class Bundle:
    """A validated bundle with its models loaded; create it with :func:`load_bundle`."""

    def __init__(self, manifest: BundleManifest, models: Mapping[str, InferenceBackend], embeddings: Mapping,
                 backend: str) -> None:
        self.manifest = manifest
        self.backend = backend
        self._models = dict(models)
        self._embeddings = dict(embeddings)
        self._lookup = {_normalize_text(k): k for k in self._embeddings}
        self._computed: dict = {}
        self._text_tokenizer = None
        self._fast = None
        self._lock = threading.Lock()
        self.image_preprocessor = manifest.image.preprocessor()

    # --- identity ---------------------------------------------------------------------------------------------------
    @property
    def folder(self) -> str:
        return self.manifest.folder

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def roles(self) -> tuple:
        """Model role names, in manifest order."""
        return tuple(self._models)

    # --- models -----------------------------------------------------------------------------------------------------
    def model(self, role: str) -> InferenceBackend:
        """The loaded backend of a model role (``"planner"``, ``bundle.actor_roles("left").decoder``, ...)."""
        try:
            return self._models[role]
        except KeyError:
            raise BundleError(f"bundle '{self.name}' has no model role '{role}'; roles: {list(self._models)}") from None

    def model_entry(self, role: str) -> ModelEntry:
        """The manifest entry of a role (contract, token ids, denoiser steps, engine path)."""
        self.model(role)
        return self.manifest.models[role]

    def actor_roles(self, arm: str) -> ActorRoles:
        """Encoder/decoder/denoiser role names of ``arm`` (``"left"`` or ``"right"``)."""
        if arm not in self.manifest.actors:
            raise BundleError(f"unknown arm {arm!r}; arms are {list(ARMS)}")
        return self.manifest.actors[arm]

    def normalizer(self, arm: str) -> ActionNormalizer:
        """Action normaliser of ``arm`` (for the decoded chunk and the ``joint_state`` input)."""
        if arm not in self.manifest.action.normalizers:
            raise BundleError(f"unknown arm {arm!r}; arms are {list(ARMS)}")
        return self.manifest.action.normalizers[arm]

    def warmup(self, n: int = 1) -> None:
        """Warm every model up with zero inputs (dynamic axes of size 1)."""
        for backend in self._models.values():
            backend.warmup(n)

    def latency_stats(self) -> dict:
        """Role -> :meth:`InferenceBackend.latency_stats`."""
        return {role: backend.latency_stats() for role, backend in self._models.items()}

    def close(self) -> None:
        for backend in self._models.values():
            backend.close()

    def __enter__(self) -> "Bundle":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- images -----------------------------------------------------------------------------------------------------
    def preprocess_image(self, rgb_uint8_hwc: np.ndarray) -> np.ndarray:
        """uint8 RGB (H, W, 3) -> float32 [1, 3, height, width]; see :class:`ImagePreprocessor`."""
        return self.image_preprocessor(rgb_uint8_hwc)

    # --- instructions -----------------------------------------------------------------------------------------------
    @property
    def known_instructions(self) -> tuple:
        """Instructions with a precomputed embedding."""
        return tuple(self._embeddings)

    def instruction_embedding(self, text: str) -> np.ndarray:
        """Embedding of an instruction, float32 [L, E] (read-only; add the batch axis with ``[None]``).

        Looked up in the bundle's npz (exact text, whitespace-insensitive); otherwise computed
        by the bundle's text encoder if it has one.

        Raises
        ------
        UnknownInstructionError
            If the text is unknown and there is no text encoder; it lists the known ones.
        """
        key = self._lookup.get(_normalize_text(text))
        if key is not None:
            return self._embeddings[key]
        encoder_role = self.manifest.instructions.text_encoder
        if encoder_role is None:
            raise UnknownInstructionError(text, self.known_instructions)
        normalized = _normalize_text(text)
        with self._lock:
            if normalized not in self._computed:
                self._computed[normalized] = self._encode_text(encoder_role, normalized)
            return self._computed[normalized]

    def _encode_text(self, role: str, text: str) -> np.ndarray:
        if self._text_tokenizer is None:
            from tokenizers import Tokenizer

            self._text_tokenizer = Tokenizer.from_file(self.manifest.instructions.text_tokenizer)
        length = self.manifest.instructions.max_tokens
        ids = self._text_tokenizer.encode(text).ids[:length]
        input_ids = np.zeros((1, length), dtype=np.int64)
        mask = np.zeros((1, length), dtype=np.int64)
        input_ids[0, :len(ids)] = ids
        mask[0, :len(ids)] = 1
        embedding = self.model(role).run({"input_ids": input_ids, "attention_mask": mask})["embedding"][0]
        embedding = np.where(mask[0, :, None] > 0, embedding, 0.0).astype(np.float32)  # zero padding, like the npz
        embedding.setflags(write=False)
        return embedding

    # --- FAST -------------------------------------------------------------------------------------------------------
    def fast_tokenizer(self):
        """The bundle's FAST tokenizer (``sim2real_vla_ros.core.policy.fast.FastTokenizer``), loaded once."""
        with self._lock:
            if self._fast is None:
                from sim2real_vla_ros.core.policy.fast import FastTokenizer

                try:
                    tokenizer = FastTokenizer.load(self.manifest.fast_tokenizer_dir)
                except Exception as exc:  # any failure of a bundle file is a BundleError naming it
                    raise BundleError(f"{_rel(self.manifest, self.manifest.fast_tokenizer_dir)}: cannot load the "
                                      f"FAST tokenizer: {exc}") from exc
                check_fast_tokenizer(self.manifest, tokenizer)
                self._fast = tokenizer
            return self._fast


# ----------------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------------

def expected_profiles(entry: ModelEntry) -> Optional[dict]:
    """Engine shape profiles the manifest implies (None if a dynamic axis has no range)."""
    try:
        return resolve_profiles({n: s.shape for n, s in entry.contract.inputs.items()}, entry.dynamic_axes)
    except ValueError:
        return None


def _make_backend(manifest: BundleManifest, entry: ModelEntry, backend: str, providers, intra_op_threads,
                  inter_op_threads, device: int) -> InferenceBackend:
    if backend == "tensorrt":
        return TensorRTBackend(entry.engine, entry.contract, onnx_path=entry.file,
                               input_profiles=expected_profiles(entry), device=device,
                               label=_rel(manifest, entry.engine))
    return OnnxRuntimeBackend(entry.file, entry.contract, providers=providers or DEFAULT_PROVIDERS,
                              intra_op_num_threads=intra_op_threads, inter_op_num_threads=inter_op_threads,
                              label=_rel(manifest, entry.file))


def load_bundle(folder: str, backend: str = "onnxruntime", providers: Optional[Sequence] = None,
                intra_op_threads: Optional[int] = None, *, inter_op_threads: Optional[int] = None,
                device: int = 0, load_fast_tokenizer: bool = True) -> Bundle:
    """Load and validate a bundle; every model is loaded and checked against its contract.

    Parameters
    ----------
    folder : str
        The bundle folder (holding ``bundle.yaml``).
    backend : {"onnxruntime", "tensorrt"}
        ``"tensorrt"`` runs each model's ``engine`` (its metadata must match this machine).
    providers : sequence, optional
        ONNX Runtime execution providers (default CPU only); see :class:`OnnxRuntimeBackend`.
    intra_op_threads, inter_op_threads : int, optional
        ONNX Runtime thread counts per model.
    device : int
        CUDA device for TensorRT engines.
    load_fast_tokenizer : bool
        Load the FAST tokenizer now (default) so a broken one fails at start-up.

    Returns
    -------
    Bundle

    Raises
    ------
    BundleError
        The first problem found, naming the file, manifest field or tensor.
    """
    if backend not in BACKENDS:
        raise BundleError(f"backend must be one of {list(BACKENDS)}, got {backend!r}")
    manifest = read_manifest(folder)
    check_files(manifest, backend)
    embeddings = load_instruction_embeddings(manifest)
    models = {}
    try:
        for role, entry in manifest.models.items():
            models[role] = _make_backend(manifest, entry, backend, providers, intra_op_threads, inter_op_threads,
                                         device).load()
    except (RuntimeBackendError, ContractError, ValueError) as exc:
        for loaded in models.values():
            loaded.close()
        if isinstance(exc, BundleError):
            raise
        raise BundleError(str(exc)) from exc
    bundle = Bundle(manifest, models, embeddings, backend)
    if load_fast_tokenizer:
        bundle.fast_tokenizer()
    return bundle


__all__ = ["load_bundle", "read_manifest", "parse_manifest", "Bundle", "BundleManifest", "ModelEntry", "ActorRoles",
           "TokenSpec", "ImageConfig", "ImagePreprocessor", "ActionConfig", "InstructionConfig", "CameraNames",
           "BundleError", "UnknownInstructionError", "ImageFormatError", "role_interface", "check_files",
           "load_instruction_embeddings", "check_fast_tokenizer", "expected_profiles", "fast_tokenizer_files", "MANIFEST_NAME"]
