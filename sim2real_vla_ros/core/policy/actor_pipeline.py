"""Per-arm actor pipeline: observation + affordance target -> FAST tokens -> joint chunk (ROS-free).

One call of :meth:`ActorPipeline.infer` runs, for one arm:

1. preprocess: camera images -> model tensors (masked-image convention of
   :mod:`sim2real_vla_ros.core.policy.observation`), affordance keypoints -> normalised [0, 1],
   joint state -> the bundle's action normalisation, instruction -> its embedding;
2. encoder: the actor encoder -> ``context``;
3. denoiser (optional, the paper's diffusion action expert): K deterministic DDIM steps
   with the bundle's schedule, the proposed chunk clipped to the normalised range and
   FAST-encoded into ``expert_tokens``;
4. token generation: greedy decoding from a step model (next-token ``logits``; with or
   without a key/value cache), stopping at EOS or the contract's ``max_tokens``; or a
   one-shot model that outputs the whole ``tokens`` sequence;
5. decode: FAST ids -> normalised (T, 7) chunk;
6. unnormalise: -> robot units (joints 1-6 in rad, joint7 finger in m).

Problems with what a model produced (NaN logits, no EOS, tokens that do not decode, a
diffusion proposal that cannot be encoded) are returned as an :class:`ActorResult` whose
``failure`` says what happened; ``chunk`` is then None, never zeros. Caller mistakes (an
image of the wrong type, a joint vector of the wrong length, an unknown instruction) raise
one :class:`ActorInputError` (a ValueError) naming the input. Nothing here imports rclpy or torch.
"""
from __future__ import annotations

import enum
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

from sim2real_vla_ros.core.policy.fast import DecodeFailure, FastEncodeError
from sim2real_vla_ros.core.policy.observation import masked_model_input

AFFORDANCE_UNITS = ("normalized", "pixels")


class ActorConfigError(ValueError):
    """The bundle's actor roles cannot be run by this pipeline (names the role and field)."""


class ActorInputError(ValueError):
    """A malformed observation or an instruction the bundle has no embedding for (names the field)."""


class ActorFailureKind(str, enum.Enum):
    """Why an inference produced no chunk (a string enum: usable as a counter key or log field)."""

    NON_FINITE_CONTEXT = "non_finite_context"
    """The encoder's context has NaN or inf."""
    DENOISER_NON_FINITE = "denoiser_non_finite"
    """The denoiser's eps (hence the proposed chunk) has NaN or inf."""
    EXPERT_ENCODE_FAILED = "expert_encode_failed"
    """The diffusion proposal could not be FAST-encoded (coefficients outside the fitted range)."""
    EXPERT_TOO_LONG = "expert_too_long"
    """The proposal's FAST sequence is longer than the decoder's ``max_expert_tokens``."""
    NON_FINITE_LOGITS = "non_finite_logits"
    """The decoder's next-token logits have NaN or inf."""
    NO_EOS = "no_eos"
    """No EOS within ``max_tokens`` generation steps."""
    INVALID_TOKENS = "invalid_tokens"
    """A one-shot decoder's ``tokens`` output is not a [1, N] integer sequence."""
    DECODE_FAILED = "decode_failed"
    """The FAST decoder rejected the ids; ``ActorFailure.fast_failure`` holds its kind."""
    NON_FINITE_CHUNK = "non_finite_chunk"
    """Unnormalising gave NaN or inf (only possible with extreme decoded values)."""


@dataclass(frozen=True)
class ActorFailure:
    """A typed failure: its kind, a human-readable detail, and the FAST kind for decode failures."""

    kind: ActorFailureKind
    detail: str
    fast_failure: Optional[DecodeFailure] = None

    def describe(self) -> str:
        """``decode_failed/wrong_length: 168 coefficients ...``: kind(/FAST kind) and detail."""
        kind = self.kind.value + (f"/{self.fast_failure.value}" if self.fast_failure else "")
        return f"{kind}: {self.detail}"


@dataclass(frozen=True)
class ActorObservation:
    """What one arm's actor sees.

    Attributes
    ----------
    wrist_rgb, top_rgb : np.ndarray
        uint8 (H, W, 3) RGB images of the arm's wrist camera and ``cam_high``. With
        ``images_masked`` (the default, what the camera/mask node publishes) background pixels
        are exactly black and are zeroed after normalisation, as the models were trained.
    affordance : np.ndarray
        (P, 2) target keypoints of this arm in the top image, (x, y): normalised to [0, 1]
        (x / width, y / height), or pixels of ``top_rgb`` when ``affordance_units='pixels'``.
    joint_state : np.ndarray
        (7,) current joints 1-6 (rad) and joint7 finger (m), robot units.
    instruction : str
        Task instruction; must have an embedding in the bundle (or a text encoder).
    affordance_units : str
        ``"normalized"`` or ``"pixels"``.
    images_masked : bool
        Whether the images follow the masked-image convention (see above).
    """

    wrist_rgb: np.ndarray
    top_rgb: np.ndarray
    affordance: np.ndarray
    joint_state: np.ndarray
    instruction: str
    affordance_units: str = "normalized"
    images_masked: bool = True


@dataclass(frozen=True)
class ActorTimings:
    """Seconds spent per stage of one inference; None for a stage that did not run."""

    preprocess: Optional[float] = None
    encoder: Optional[float] = None
    denoiser: Optional[float] = None
    token_generation: Optional[float] = None
    decode: Optional[float] = None
    unnormalise: Optional[float] = None
    total: float = 0.0
    n_tokens: int = 0
    """Generated FAST ids (EOS excluded); for one-shot models, the ids used."""
    n_model_calls: int = 0
    """Decoder (and denoiser) runs this inference made."""

    def as_dict(self) -> dict:
        """Plain dict (for JSON diagnostics and benchmarks)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True, eq=False)
class ActorResult:
    """Outcome of :meth:`ActorPipeline.infer`.

    Attributes
    ----------
    chunk : np.ndarray or None
        float64 (T, 7) chunk in robot units; None when ``failure`` is set.
    failure : ActorFailure or None
        Why there is no chunk.
    tokens : tuple of int
        FAST ids the decoder produced (BOS/EOS excluded), also on failure when any exist.
    timings : ActorTimings
    normalized_chunk : np.ndarray or None
        The decoded chunk before unnormalising.
    expert_tokens : tuple of int or None
        FAST ids of the diffusion proposal, when a denoiser ran.
    relaxed_used : bool
        Relaxed FAST decoding had to truncate or pad (only with ``relaxed_decode=True``).
    """

    chunk: Optional[np.ndarray]
    failure: Optional[ActorFailure]
    tokens: tuple
    timings: ActorTimings
    normalized_chunk: Optional[np.ndarray] = None
    expert_tokens: Optional[tuple] = None
    relaxed_used: bool = False

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class DdimSchedule:
    """Deterministic DDIM sampling schedule of a denoiser (epsilon prediction, eta = 0).

    Attributes
    ----------
    timesteps : tuple of int
        Training timesteps visited, noisiest first; one denoiser call each.
    alphas_cumprod : tuple of float
        Cumulative alpha at each of those timesteps, in (0, 1].
    final_alpha_cumprod : float
        Alpha of the step after the last (1.0: return the clean estimate).
    clip_sample : float or None
        Clip each clean-chunk estimate to [-clip, clip] (the normalised action range).
    """

    timesteps: tuple
    alphas_cumprod: tuple
    final_alpha_cumprod: float = 1.0
    clip_sample: Optional[float] = 1.0

    @classmethod
    def from_options(cls, steps: int, schedule: Mapping, where: str = "denoiser") -> "DdimSchedule":
        """Build from a manifest's ``steps`` and ``schedule`` mapping (see models/README.md).

        Raises
        ------
        ActorConfigError
            Naming the field that is missing or inconsistent.
        """
        if not isinstance(schedule, Mapping):
            raise ActorConfigError(f"{where}.schedule is missing: a denoiser needs its DDIM schedule "
                                   f"(kind, timesteps, alphas_cumprod)")
        kind = schedule.get("kind", "ddim")
        if kind != "ddim":
            raise ActorConfigError(f"{where}.schedule.kind must be 'ddim', got {kind!r}")
        prediction = schedule.get("prediction", "epsilon")
        if prediction != "epsilon":
            raise ActorConfigError(f"{where}.schedule.prediction must be 'epsilon' (the contract's 'eps' output), "
                                   f"got {prediction!r}")
        timesteps = schedule.get("timesteps")
        alphas = schedule.get("alphas_cumprod")
        for name, values in (("timesteps", timesteps), ("alphas_cumprod", alphas)):
            if not isinstance(values, (list, tuple)) or len(values) != steps:
                raise ActorConfigError(f"{where}.schedule.{name} must list {steps} values (one per step), "
                                       f"got {values!r}")
        alphas = tuple(float(a) for a in alphas)
        final = float(schedule.get("final_alpha_cumprod", 1.0))
        if not all(0.0 < a <= 1.0 for a in (*alphas, final)):
            raise ActorConfigError(f"{where}.schedule: alphas_cumprod and final_alpha_cumprod must be in (0, 1], "
                                   f"got {list(alphas)} and {final}")
        if any(a >= 1.0 for a in alphas):
            raise ActorConfigError(f"{where}.schedule.alphas_cumprod must be < 1 at sampled steps, got {list(alphas)}")
        clip = schedule.get("clip_sample", 1.0)
        if clip is not None and not (isinstance(clip, (int, float)) and clip > 0):
            raise ActorConfigError(f"{where}.schedule.clip_sample must be a positive number or null, got {clip!r}")
        return cls(tuple(int(t) for t in timesteps), alphas, final, None if clip is None else float(clip))


def ddim_sample(eps_model: Callable[[np.ndarray, np.ndarray], np.ndarray], schedule: DdimSchedule,
                noise: np.ndarray) -> np.ndarray:
    """Run deterministic DDIM from ``noise`` and return the final clean estimate.

    Each step: ``x0 = (x - sqrt(1-a) eps) / sqrt(a)``, clipped; eps re-derived from the
    clipped x0 (diffusers' ``use_clipped_model_output``, which keeps x consistent with the
    clip); ``x = sqrt(a_prev) x0 + sqrt(1-a_prev) eps``.

    Parameters
    ----------
    eps_model : callable
        ``(x [B,T,D] float32, timestep [B] float32) -> eps [B,T,D]``.
    schedule : DdimSchedule
    noise : np.ndarray
        Starting sample [B, T, D].

    Returns
    -------
    np.ndarray
        float32 [B, T, D]; may hold NaN if the model produced NaN (callers check).
    """
    x = np.asarray(noise, dtype=np.float32)
    clean = x
    alphas = schedule.alphas_cumprod
    for index, (timestep, alpha) in enumerate(zip(schedule.timesteps, alphas)):
        alpha_prev = alphas[index + 1] if index + 1 < len(alphas) else schedule.final_alpha_cumprod
        eps = np.asarray(eps_model(x, np.full((x.shape[0],), float(timestep), np.float32)), dtype=np.float32)
        clean = (x - math.sqrt(1.0 - alpha) * eps) / math.sqrt(alpha)
        if schedule.clip_sample is not None:
            clean = np.clip(clean, -schedule.clip_sample, schedule.clip_sample)
        eps = (x - math.sqrt(alpha) * clean) / math.sqrt(1.0 - alpha)
        x = (math.sqrt(alpha_prev) * clean + math.sqrt(1.0 - alpha_prev) * eps).astype(np.float32)
    return clean.astype(np.float32)


class _Stopwatch:
    """Accumulates per-stage durations for one inference."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.stages: dict = {}
        self._mark = self.start

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.stages[stage] = now - self._mark
        self._mark = now

    def timings(self, n_tokens: int, n_calls: int) -> ActorTimings:
        return ActorTimings(total=time.perf_counter() - self.start, n_tokens=n_tokens, n_model_calls=n_calls,
                            **self.stages)


class _Abort(Exception):
    """Internal: a stage produced a typed failure; unwinds to `infer`."""

    def __init__(self, failure: ActorFailure, tokens: Sequence[int] = ()) -> None:
        super().__init__(failure.detail)
        self.failure = failure
        self.tokens = tuple(int(t) for t in tokens)


class ActorPipeline:
    """Runs one arm's actor models from a loaded bundle (see the module docstring).

    Parameters
    ----------
    bundle : sim2real_vla_ros.core.policy.bundle.Bundle
        A loaded bundle (:func:`~sim2real_vla_ros.core.policy.bundle.load_bundle`).
    arm : str
        ``"left"`` or ``"right"``: selects the normaliser and (by default) the roles.
    max_tokens : int, optional
        Generation steps allowed per chunk, EOS included; default and upper bound: the
        decoder's ``max_tokens``.
    relaxed_decode : bool
        Use the FAST decoder's relaxed mode (truncate/zero-pad to T*7). Off by default: a
        wrong-length sequence is then a typed failure, not a guessed chunk.
    roles : ActorRoles or mapping, optional
        Override the bundle's ``actors.<arm>`` roles (``encoder``, ``decoder``, ``denoiser``),
        e.g. to run an alternative decoder shipped in the bundle.
    noise_seed : int, optional
        Seed of the diffusion starting noise; default the denoiser's ``noise_seed`` (or 0).
        Each inference draws fresh noise from this seeded generator.

    Notes
    -----
    Run one inference at a time per pipeline (one pipeline per arm): the noise generator and
    the stage timings are per call, the outcome counters are locked.

    Raises
    ------
    ActorConfigError
        If a role is missing or not runnable (no token ids, unknown mode, bad schedule, a
        denoiser without an ``expert_tokens`` input on the decoder, ``max_tokens`` too large).
    """

    def __init__(self, bundle, arm: str, max_tokens: Optional[int] = None, relaxed_decode: bool = False,
                 roles=None, noise_seed: Optional[int] = None) -> None:
        self.bundle = bundle
        self.arm = arm
        self.normalizer = bundle.normalizer(arm)
        self.fast = bundle.fast_tokenizer()
        self.relaxed_decode = bool(relaxed_decode)
        self.roles = self._resolve_roles(bundle, arm, roles)
        manifest = bundle.manifest
        self.chunk_length = manifest.action.chunk_length
        self.action_dim = manifest.action.dim
        self.keypoints = manifest.keypoints_per_arm
        self.encoder = bundle.model(self.roles["encoder"])
        self.decoder = bundle.model(self.roles["decoder"])
        decoder_entry = bundle.model_entry(self.roles["decoder"])
        self._setup_decoder(decoder_entry, max_tokens)
        self.denoiser = None
        self.schedule = None
        if self.roles.get("denoiser"):
            self._setup_denoiser(bundle.model_entry(self.roles["denoiser"]), noise_seed)
        elif self.uses_expert:
            raise ActorConfigError(f"decoder '{self.roles['decoder']}' takes 'expert_tokens' but no denoiser role is "
                                   f"set to produce them")
        self._lock = threading.Lock()
        self._outcomes: Counter = Counter()

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _resolve_roles(bundle, arm: str, roles) -> dict:
        if roles is None:
            roles = bundle.actor_roles(arm)
        if isinstance(roles, Mapping):
            resolved = {key: roles.get(key) for key in ("encoder", "decoder", "denoiser")}
        else:
            resolved = {key: getattr(roles, key, None) for key in ("encoder", "decoder", "denoiser")}
        for key in ("encoder", "decoder"):
            if not resolved[key]:
                raise ActorConfigError(f"actor roles for arm {arm!r} name no {key}")
        return resolved

    def _setup_decoder(self, entry, max_tokens: Optional[int]) -> None:
        role = entry.role
        if entry.tokens is None:
            raise ActorConfigError(f"models.{role} has no token ids (vocab_size, bos_id, eos_id, max_tokens): "
                                   f"it cannot be used as an actor decoder")
        self.token_spec = entry.tokens
        self.mode = entry.options.get("mode", "autoregressive")
        if self.mode not in ("autoregressive", "one_shot"):
            raise ActorConfigError(f"models.{role}.mode {self.mode!r} is not 'autoregressive' or 'one_shot'")
        limit = entry.tokens.max_tokens
        if max_tokens is not None and not (isinstance(max_tokens, int) and 1 <= max_tokens <= limit):
            raise ActorConfigError(f"max_tokens must be an integer in [1, {limit}] (models.{role}.max_tokens), "
                                   f"got {max_tokens!r}")
        self.max_tokens = limit if max_tokens is None else max_tokens
        inputs = entry.contract.inputs
        self.uses_cache = "past_key" in inputs
        self.uses_expert = "expert_tokens" in inputs
        self.max_expert_tokens = entry.options.get("max_expert_tokens")
        if self.uses_cache:
            shape = inputs["past_key"].shape
            fixed = [shape[i] for i in (0, 2, 4)]
            if not all(isinstance(d, int) for d in fixed):
                raise ActorConfigError(f"models.{role}.inputs.past_key must fix n_layers, heads and head_dim "
                                       f"([n_layers, batch, heads, past, head_dim]), got {list(shape)}")
            self._cache_shape = (fixed[0], 1, fixed[1], 0, fixed[2])
        if self.fast.bpe_vocab_size > self.token_spec.fast_vocab_size:
            raise ActorConfigError(f"models.{role}: vocab_size {self.token_spec.vocab_size} is too small for the "
                                   f"FAST tokenizer's {self.fast.bpe_vocab_size} ids")

    def _setup_denoiser(self, entry, noise_seed: Optional[int]) -> None:
        role = entry.role
        if not self.uses_expert:
            raise ActorConfigError(f"denoiser '{role}' needs a decoder with an 'expert_tokens' input; "
                                   f"'{self.roles['decoder']}' has none")
        if entry.steps is None:
            raise ActorConfigError(f"models.{role}.steps is missing (a denoiser needs its step count)")
        self.schedule = DdimSchedule.from_options(entry.steps, entry.options.get("schedule"), f"models.{role}")
        self.denoiser = self.bundle.model(role)
        seed = entry.options.get("noise_seed", 0) if noise_seed is None else noise_seed
        self._noise = np.random.default_rng(seed)

    # ------------------------------------------------------------------ public
    def infer(self, observation: ActorObservation) -> ActorResult:
        """Run the pipeline once; see the module docstring.

        Returns
        -------
        ActorResult
            A chunk, or a typed failure (never a zero chunk).

        Raises
        ------
        ActorInputError
            (a ValueError) for caller errors: a malformed observation field or an instruction
            without an embedding; the message names the field.
        TypeError
            If ``observation`` is not an ActorObservation or the instruction not a str.
        ContractError
            (a ValueError, from the backend) if a model's outputs break their contract.
        """
        watch = _Stopwatch()
        calls = [0]
        tokens: tuple = ()
        expert: Optional[tuple] = None
        feeds = self._preprocess(observation)  # caller errors raise from here
        watch.lap("preprocess")
        stage = "encoder"
        try:
            context = self.encoder.run(feeds)["context"]
            if not np.all(np.isfinite(context)):
                raise _Abort(ActorFailure(ActorFailureKind.NON_FINITE_CONTEXT,
                                          f"encoder context has {int(np.count_nonzero(~np.isfinite(context)))} "
                                          f"non-finite value(s)"))
            watch.lap(stage)
            if self.denoiser is not None:
                stage = "denoiser"
                expert = self._expert_tokens(context, calls)
                watch.lap(stage)
            stage = "token_generation"
            tokens = self._generate(context, expert, calls)
            watch.lap(stage)
            stage = "decode"
            decoded = self.fast.decode(list(tokens), self.chunk_length, self.action_dim, relaxed=self.relaxed_decode)
            if not decoded.ok:
                raise _Abort(ActorFailure(ActorFailureKind.DECODE_FAILED, decoded.detail, decoded.failure), tokens)
            watch.lap(stage)
            stage = "unnormalise"
            chunk = self.normalizer.unnormalize(decoded.chunk)
            if not np.all(np.isfinite(chunk)):
                raise _Abort(ActorFailure(ActorFailureKind.NON_FINITE_CHUNK, "unnormalised chunk is not finite"),
                             tokens)
            watch.lap(stage)
        except _Abort as abort:
            watch.lap(stage)  # the stage that failed still reports its time
            tokens = abort.tokens or tokens
            self._count(abort.failure)
            return ActorResult(None, abort.failure, tokens, watch.timings(len(tokens), calls[0]), expert_tokens=expert)
        self._count(None, decoded.relaxed_used)
        return ActorResult(chunk, None, tokens, watch.timings(len(tokens), calls[0]), decoded.chunk, expert,
                           decoded.relaxed_used)

    def outcome_counts(self) -> dict:
        """Counts since construction: ``ok``, ``relaxed_used`` and one key per failure kind seen
        (``decode_failed/<fast kind>`` for decode failures)."""
        with self._lock:
            return dict(self._outcomes)

    # ------------------------------------------------------------------ stages
    def _count(self, failure: Optional[ActorFailure], relaxed: bool = False) -> None:
        with self._lock:
            if failure is None:
                self._outcomes["ok"] += 1
            else:
                key = failure.kind.value + (f"/{failure.fast_failure.value}" if failure.fast_failure else "")
                self._outcomes[key] += 1
            if relaxed:
                self._outcomes["relaxed_used"] += 1

    def _image(self, image, name: str, masked: bool) -> np.ndarray:
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            described = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise ActorInputError(f"ActorObservation.{name} must be a uint8 (H, W, 3) RGB array, got {described}")
        if masked:
            return masked_model_input(self.bundle.image_preprocessor, image)
        return self.bundle.preprocess_image(image)

    def _preprocess(self, obs: ActorObservation) -> dict:
        if not isinstance(obs, ActorObservation):
            raise TypeError(f"infer() takes an ActorObservation, got {type(obs).__name__}")
        wrist = self._image(obs.wrist_rgb, "wrist_rgb", obs.images_masked)
        top = self._image(obs.top_rgb, "top_rgb", obs.images_masked)
        affordance = np.asarray(obs.affordance, dtype=np.float64)
        if affordance.shape != (self.keypoints, 2) or not np.all(np.isfinite(affordance)):
            raise ActorInputError(f"ActorObservation.affordance must be a finite ({self.keypoints}, 2) array of (x, y), "
                             f"got shape {affordance.shape}" + ("" if affordance.shape != (self.keypoints, 2)
                                                                else " with non-finite values"))
        if obs.affordance_units == "pixels":
            height, width = obs.top_rgb.shape[:2]
            affordance = affordance / np.array([width, height], dtype=np.float64)
        elif obs.affordance_units != "normalized":
            raise ActorInputError(f"ActorObservation.affordance_units must be one of {AFFORDANCE_UNITS}, "
                             f"got {obs.affordance_units!r}")
        joints = np.asarray(obs.joint_state, dtype=np.float64)
        if joints.shape != (self.action_dim,) or not np.all(np.isfinite(joints)):
            raise ActorInputError(f"ActorObservation.joint_state must be {self.action_dim} finite values (joints 1-6 rad, "
                             f"joint7 m), got {np.asarray(obs.joint_state).tolist()}")
        if not isinstance(obs.instruction, str):
            raise TypeError(f"ActorObservation.instruction must be a str, got {type(obs.instruction).__name__}")
        try:
            instruction = self.bundle.instruction_embedding(obs.instruction)
        except LookupError as exc:  # UnknownInstructionError: one caller-error type for nodes to catch
            raise ActorInputError(f"ActorObservation.instruction: {exc}") from exc
        return {
            "wrist_image": wrist,
            "top_image": top,
            "affordance": affordance.astype(np.float32)[None],
            "joint_state": self.normalizer.normalize(joints).astype(np.float32)[None],
            "instruction": np.ascontiguousarray(instruction, dtype=np.float32)[None],
        }

    def _expert_tokens(self, context: np.ndarray, calls: list) -> tuple:
        noise = self._noise.standard_normal((1, self.chunk_length, self.action_dim)).astype(np.float32)

        def eps_model(x: np.ndarray, timestep: np.ndarray) -> np.ndarray:
            calls[0] += 1
            return self.denoiser.run({"noisy_actions": x, "timestep": timestep, "context": context})["eps"]

        proposal = ddim_sample(eps_model, self.schedule, noise)[0]
        if not np.all(np.isfinite(proposal)):
            raise _Abort(ActorFailure(ActorFailureKind.DENOISER_NON_FINITE,
                                      "the denoiser produced non-finite eps; the proposal is not finite"))
        try:
            # float64 like the tokenizer's fitting data, so ids do not depend on the model dtype.
            ids = self.fast.encode(proposal.astype(np.float64))
        except FastEncodeError as exc:
            raise _Abort(ActorFailure(ActorFailureKind.EXPERT_ENCODE_FAILED, str(exc))) from None
        if self.max_expert_tokens is not None and len(ids) > self.max_expert_tokens:
            raise _Abort(ActorFailure(ActorFailureKind.EXPERT_TOO_LONG,
                                      f"proposal encodes to {len(ids)} FAST ids, decoder takes at most "
                                      f"{self.max_expert_tokens}"))
        return tuple(ids)

    def _generate(self, context: np.ndarray, expert: Optional[tuple], calls: list) -> tuple:
        extra = {} if expert is None else {"expert_tokens": np.array([expert], dtype=np.int64)}
        if self.mode == "one_shot":
            calls[0] += 1
            return self._one_shot(self.decoder.run({"context": context, **extra})["tokens"])
        if self.uses_cache:
            return self._greedy_with_cache(context, extra, calls)
        return self._greedy(context, extra, calls)

    def _next_token(self, logits: np.ndarray, generated: list) -> int:
        row = logits[0]
        if not np.all(np.isfinite(row)):
            raise _Abort(ActorFailure(ActorFailureKind.NON_FINITE_LOGITS,
                                      f"logits at step {len(generated)} have {int(np.count_nonzero(~np.isfinite(row)))} "
                                      f"non-finite value(s)"), generated)
        return int(np.argmax(row))

    def _no_eos(self, generated: list) -> _Abort:
        return _Abort(ActorFailure(ActorFailureKind.NO_EOS,
                                   f"no EOS (id {self.token_spec.eos_id}) within {self.max_tokens} generation steps"),
                      generated)

    def _greedy(self, context: np.ndarray, extra: dict, calls: list) -> tuple:
        """Re-run the whole prefix each step (a step model without a cache)."""
        sequence = [self.token_spec.bos_id]
        for _ in range(self.max_tokens):
            calls[0] += 1
            logits = self.decoder.run({"context": context, "tokens": np.array([sequence], np.int64), **extra})["logits"]
            token = self._next_token(logits, sequence[1:])
            if token == self.token_spec.eos_id:
                return tuple(sequence[1:])
            sequence.append(token)
        raise self._no_eos(sequence[1:])

    def _greedy_with_cache(self, context: np.ndarray, extra: dict, calls: list) -> tuple:
        """Feed one token per step; the model returns the grown key/value cache."""
        past_key = np.zeros(self._cache_shape, np.float32)
        past_value = np.zeros(self._cache_shape, np.float32)
        generated: list = []
        token = self.token_spec.bos_id
        for _ in range(self.max_tokens):
            calls[0] += 1
            outputs = self.decoder.run({"context": context, "tokens": np.array([[token]], np.int64),
                                        "past_key": past_key, "past_value": past_value, **extra})
            past_key, past_value = outputs["present_key"], outputs["present_value"]
            token = self._next_token(outputs["logits"], generated)
            if token == self.token_spec.eos_id:
                return tuple(generated)
            generated.append(token)
        raise self._no_eos(generated)

    def _one_shot(self, tokens) -> tuple:
        """A one-shot sequence: a leading BOS is dropped; it ends at the first EOS (else all ids count)."""
        array = np.asarray(tokens)
        if array.ndim != 2 or array.shape[0] != 1 or not np.issubdtype(array.dtype, np.integer):
            raise _Abort(ActorFailure(ActorFailureKind.INVALID_TOKENS,
                                      f"one-shot decoder output 'tokens' must be integer [1, N], got "
                                      f"{array.dtype} {list(array.shape)}"))
        ids = array[0].tolist()
        if ids and ids[0] == self.token_spec.bos_id:
            ids = ids[1:]
        if self.token_spec.eos_id in ids:
            ids = ids[:ids.index(self.token_spec.eos_id)]
        return tuple(int(i) for i in ids)


__all__ = ["ActorConfigError", "ActorFailure", "ActorInputError", "ActorFailureKind", "ActorObservation", "ActorPipeline", "ActorResult",
           "ActorTimings", "DdimSchedule", "ddim_sample"]
