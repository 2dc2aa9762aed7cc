"""FAST action tokenizer (DCT + byte-level BPE), compatible with `physical-intelligence/fast`.

The public processor (`UniversalActionProcessor`, used by openpi and LeRobot) turns a
normalised action chunk of shape (T, D) into BPE token ids:

    coeff = dct(chunk, axis=0, norm="ortho")            # keeps the caller's dtype
    q     = around(coeff * scale)                       # round half to even
    codes = max(q.flatten() - min_token, 0)             # C order: frequency-major
    text  = "".join(map(chr, codes));  ids = bpe.encode(text)

and decodes by inverting each step. This module reproduces that format with numpy,
`scipy.fft` and the `tokenizers` library (the BPE is never hand-written), and reads and
writes the hub folder layout, so a tokenizer fitted here loads in the reference processor
and the public tokenizer loads here.

Where the reference is unsafe for a robot, this module differs on purpose:

- `decode` never returns zeros on failure (the reference prints "Error decoding tokens"
  and returns an all-zero chunk, which unnormalises to a jump toward the dataset's mean
  pose). It returns a `DecodeResult` with a typed `DecodeFailure` instead, and never
  raises for bad model output.
- Ids the tokenizer would silently drop (>= its vocabulary) or raise on (negative) are
  reported as `INVALID_ID` before the tokenizer sees them.
- `encode` rejects input the reference would mangle silently: non-finite values, codes
  past the tokenizer's range (which can reach the UTF-16 surrogate range and break the
  tokenizer), and, unless asked to clip like the reference, coefficients below
  `min_token`.
- The BPE has no unknown token: a character whose UTF-8 bytes are not all in the
  vocabulary is dropped silently by the reference (one coefficient fewer, then a wrong
  length at decode). `encode` rejects such chunks; `fit(..., cover_all_bytes=True)` puts
  all 256 byte-level symbols in the vocabulary so it cannot happen.
"""
from __future__ import annotations

import enum
import json
import logging
import math
import os
import threading
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import scipy.fft
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

_LOG = logging.getLogger(__name__)

PROCESSOR_CLASS = "UniversalActionProcessor"
PROCESSOR_CONFIG_FILE = "processor_config.json"
TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_SUBFOLDER = "bpe_tokenizer"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"

# chr() of a code at or above this is a UTF-16 surrogate (invalid in a Rust string, the
# tokenizer then fails) or beyond; the vocabulary bound below is far stricter anyway.
_SURROGATE_START = 0xD800
_REPLACEMENT_CHARACTER = "\ufffd"


def _byte_level_symbols() -> list[str]:
    """The byte-level pre-tokenizer's visible symbol for each byte 0..255 (GPT-2's table).

    Printable Latin-1 bytes stand for themselves; the others are shifted to 256, 257, ...
    in byte order. `test_fast` checks this against `pre_tokenizers.ByteLevel`.
    """
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("\xa1"), ord("\xac") + 1))
    printable |= set(range(ord("\xae"), ord("\xff") + 1))
    symbols, shifted = [], 0
    for value in range(256):
        if value in printable:
            symbols.append(chr(value))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


_BYTE_LEVEL_SYMBOLS = _byte_level_symbols()

# transformers' VERY_LARGE_INTEGER, what PreTrainedTokenizerFast writes when no limit is set.
_MODEL_MAX_LENGTH = int(1e30)


class FastError(ValueError):
    """Base class of the FAST codec's errors."""


class FastConfigError(FastError):
    """A tokenizer folder or its configuration is missing, malformed or inconsistent."""


class FastFitError(FastError):
    """Training data cannot be fitted (bad shape, non-finite, range larger than the vocabulary)."""


class FastEncodeError(FastError):
    """A chunk cannot be encoded faithfully (bad shape, non-finite, coefficients out of range)."""


class FastDecodeError(FastError):
    """Raised only by `FastTokenizer.decode_to_coefficients`; `decode` returns failures instead."""

    def __init__(self, failure: "DecodeFailure", detail: str):
        super().__init__(f"{failure.value}: {detail}")
        self.failure = failure
        self.detail = detail


class DecodeFailure(enum.Enum):
    """Why a token sequence did not decode into a chunk."""

    EMPTY = "empty"
    """No ids, or ids that decode to no text."""
    INVALID_ID = "invalid_id"
    """An id that is negative, >= the tokenizer's vocabulary, or not an integer."""
    REPLACEMENT_CHARACTER = "replacement_character"
    """The bytes were not valid UTF-8 (e.g. a lone lead byte) and decoded to U+FFFD."""
    COEFFICIENT_OUT_OF_RANGE = "coefficient_out_of_range"
    """A character code above `vocab_size`: no fitted data can produce it (a huge coefficient)."""
    WRONG_LENGTH = "wrong_length"
    """The number of coefficients is not time_horizon * action_dim (and relaxed mode is off)."""
    NON_FINITE = "non_finite"
    """The inverse DCT produced inf or NaN."""


@dataclass(frozen=True, eq=False)
class DecodeResult:
    """Outcome of `FastTokenizer.decode`: a chunk, or a typed failure (never a zero chunk).

    Attributes
    ----------
    chunk : np.ndarray or None
        The decoded (T, D) float64 chunk in normalised units; None on failure.
    failure : DecodeFailure or None
        Why decoding failed; None on success.
    detail : str
        Human-readable explanation (counts, offending ids); empty on a clean success.
    relaxed_used : bool
        True when relaxed mode had to truncate or zero-pad the coefficients. The chunk is
        then not what the model meant exactly; callers should count it.
    """

    chunk: np.ndarray | None
    failure: DecodeFailure | None
    detail: str = ""
    relaxed_used: bool = False

    @property
    def ok(self) -> bool:
        """True when a chunk was decoded."""
        return self.failure is None


class DecodeStats:
    """Thread-safe counters of decode outcomes, for a node's diagnostics.

    Examples
    --------
    >>> stats = DecodeStats()
    >>> stats.record(tokenizer.decode(ids))   # doctest: +SKIP
    >>> stats.as_dict()                       # doctest: +SKIP
    {'total': 1, 'ok': 1, 'relaxed_used': 0, 'empty': 0, 'invalid_id': 0, ...}
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ok = 0
        self._relaxed_used = 0
        self._failures = {kind: 0 for kind in DecodeFailure}

    def record(self, result: DecodeResult) -> None:
        """Count one decode result."""
        with self._lock:
            if result.ok:
                self._ok += 1
            else:
                self._failures[result.failure] += 1
            if result.relaxed_used:
                self._relaxed_used += 1

    def failures(self, kind: DecodeFailure) -> int:
        """Number of results that failed with `kind`."""
        with self._lock:
            return self._failures[kind]

    @property
    def total(self) -> int:
        """Number of results recorded."""
        with self._lock:
            return self._ok + sum(self._failures.values())

    def as_dict(self) -> dict[str, int]:
        """Snapshot: total, ok, relaxed_used and one entry per failure kind (by its value)."""
        with self._lock:
            counts = {
                "total": self._ok + sum(self._failures.values()),
                "ok": self._ok,
                "relaxed_used": self._relaxed_used,
            }
            counts.update({kind.value: n for kind, n in self._failures.items()})
            return counts


def _positive_int_or_none(value: object, name: str, error: type[FastError]) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise error(f"{name} must be a positive integer or None, got {value!r}")
    return int(value)


def _validated_scale(scale: object, error: type[FastError]) -> int | float:
    """A finite, positive scale as a plain int or float (so it serialises to JSON)."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)):
        raise error(f"scale must be a number, got {scale!r}")
    if not (math.isfinite(scale) and scale > 0):
        raise error(f"scale must be finite and > 0, got {scale!r}")
    return int(scale) if isinstance(scale, (int, np.integer)) else float(scale)


def _new_byte_level_bpe() -> Tokenizer:
    """An untrained tokenizer configured exactly like `tokenizers.ByteLevelBPETokenizer()`."""
    tokenizer = Tokenizer(models.BPE())
    # No normaliser: ByteLevelBPETokenizer() sets none without lowercase/unicode options.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    return tokenizer


def _as_chunk(chunk: object, error: type[FastError], what: str) -> np.ndarray:
    """Validate a (T, D) real, finite, non-empty array without changing its float dtype."""
    array = np.asarray(chunk)
    if array.ndim != 2:
        raise error(f"{what} must be 2-D (time_horizon, action_dim), got shape {array.shape}")
    if array.size == 0:
        raise error(f"{what} is empty, shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise error(f"{what} must be real numbers, got dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        bad = np.argwhere(~np.isfinite(array))[0]
        raise error(f"{what} has non-finite values (first at index {tuple(int(i) for i in bad)})")
    return array


def _read_json(path: str, what: str) -> dict:
    try:
        with open(path, encoding="utf-8") as stream:
            data = json.load(stream)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FastConfigError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise FastConfigError(f"{what} {path} must hold a JSON object, got {type(data).__name__}")
    return data


def _write_json(path: str, data: dict) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        json.dump(data, stream, indent=2, sort_keys=True)
        stream.write("\n")


def find_tokenizer_file(folder: str) -> str:
    """Path of the BPE `tokenizer.json` in a FAST folder, flat or under `bpe_tokenizer/`.

    The hub layout is flat; newer transformers `save_pretrained` writes the tokenizer under
    `bpe_tokenizer/`. The flat file wins when both exist, as it is what the hub ships.

    Raises
    ------
    FastConfigError
        When neither file exists.
    """
    candidates = [
        os.path.join(folder, TOKENIZER_FILE),
        os.path.join(folder, TOKENIZER_SUBFOLDER, TOKENIZER_FILE),
    ]
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FastConfigError(
        f"no FAST BPE tokenizer in {folder}: expected {candidates[0]} (hub layout) "
        f"or {candidates[1]} (transformers save_pretrained layout)"
    )


def _load_tokenizer_file(path: str) -> Tokenizer:
    """Load a tokenizer.json and check it is the byte-level BPE that FAST decoding relies on."""
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
        spec = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FastConfigError(f"cannot read FAST tokenizer {path}: {exc}") from exc
    model_type = (spec.get("model") or {}).get("type") if isinstance(spec, dict) else None
    decoder_type = (spec.get("decoder") or {}).get("type") if isinstance(spec, dict) else None
    if model_type != "BPE" or decoder_type != "ByteLevel":
        raise FastConfigError(
            f"FAST tokenizer {path} must be a byte-level BPE (model BPE, decoder ByteLevel), "
            f"got model {model_type!r}, decoder {decoder_type!r}"
        )
    try:
        return Tokenizer.from_str(text)
    except Exception as exc:  # the Rust side raises a bare Exception on malformed specs
        raise FastConfigError(f"tokenizers cannot load FAST tokenizer {path}: {exc}") from exc


class FastTokenizer:
    """FAST action tokenizer: DCT + quantisation + byte-level BPE.

    Parameters
    ----------
    tokenizer : tokenizers.Tokenizer
        The trained byte-level BPE.
    scale : float
        Multiplier applied to DCT coefficients before rounding (quantisation step 1/scale).
    vocab_size : int
        The processor's vocab_size (the BPE training target). Also the largest character
        code accepted: fitting guarantees ``max_token - min_token <= vocab_size``.
    min_token : int
        Smallest rounded ``coeff * scale`` seen at fit time; subtracted before ``chr``.
    time_horizon, action_dim : int or None
        Default chunk shape for `decode` (and checked by `encode` when set).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        scale: float,
        vocab_size: int,
        min_token: int,
        time_horizon: int | None = None,
        action_dim: int | None = None,
    ) -> None:
        scale = _validated_scale(scale, FastConfigError)
        if isinstance(min_token, bool) or not isinstance(min_token, (int, np.integer)):
            raise FastConfigError(f"min_token must be an integer, got {min_token!r}")
        self.tokenizer = tokenizer
        self.scale = scale
        self.vocab_size = _positive_int_or_none(vocab_size, "vocab_size", FastConfigError)
        if self.vocab_size is None:
            raise FastConfigError("vocab_size is required")
        self.min_token = int(min_token)
        self.time_horizon = _positive_int_or_none(time_horizon, "time_horizon", FastConfigError)
        self.action_dim = _positive_int_or_none(action_dim, "action_dim", FastConfigError)
        # Ids at or above this are dropped silently by tokenizers.decode. It can exceed
        # vocab_size when the initial alphabet alone is larger than the training target.
        self.bpe_vocab_size = tokenizer.get_vocab_size(with_added_tokens=True)
        # The BPE model has no unknown token: a UTF-8 byte whose byte-level symbol is not in
        # the vocabulary is dropped silently at encode time (one coefficient fewer).
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        self._known_bytes = np.array([symbol in vocab for symbol in _BYTE_LEVEL_SYMBOLS], dtype=bool)

    def __repr__(self) -> str:
        return (
            f"FastTokenizer(scale={self.scale}, vocab_size={self.vocab_size}, "
            f"min_token={self.min_token}, time_horizon={self.time_horizon}, "
            f"action_dim={self.action_dim}, bpe_vocab_size={self.bpe_vocab_size})"
        )

    @property
    def covers_all_bytes(self) -> bool:
        """True when every UTF-8 byte has its byte-level symbol in the vocabulary.

        Otherwise `encode` rejects chunks needing a missing byte (the reference would drop
        the character silently). Reference-style fitting on data spanning fewer than ~320
        codes leaves bytes out; `fit(..., cover_all_bytes=True)` includes them all.
        """
        return bool(self._known_bytes.all())

    @property
    def max_code(self) -> int:
        """Largest character code (``q - min_token``) accepted by `encode` and `decode`."""
        return min(self.vocab_size, _SURROGATE_START - 1)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        chunks: Iterable[np.ndarray],
        scale: float = 10,
        vocab_size: int = 1024,
        time_horizon: int | None = None,
        action_dim: int | None = None,
        *,
        cover_all_bytes: bool = False,
    ) -> "FastTokenizer":
        """Fit a FAST tokenizer on normalised action chunks, as the reference `fit` does.

        Parameters
        ----------
        chunks : iterable of np.ndarray
            Chunks of shape (T, D), already normalised (typically to [-1, 1]).
        scale : float
            Quantisation scale (default 10, as the public tokenizer).
        vocab_size : int
            BPE vocabulary size to train to; must cover ``max_token - min_token``.
        time_horizon, action_dim : int or None
            Stored in the config as defaults for decoding (the reference leaves them None).
        cover_all_bytes : bool
            Also put the 256 byte-level symbols in the initial alphabet (a departure from
            the reference, whose files it still loads) so every code up to vocab_size can be
            encoded. The reference alphabet holds ``chr(0..max-min)``, which are byte-level
            symbols only for printable bytes: when the data spans fewer than ~320 codes,
            bytes never seen in training are missing and `encode` must reject chunks that
            need them. Use it when encoding data the tokenizer was not fitted on.

        Returns
        -------
        FastTokenizer

        Raises
        ------
        FastFitError
            No chunks, a chunk that is not a finite 2-D array, or a coefficient range larger
            than `vocab_size` (raise `vocab_size` or lower `scale`).
        """
        vocab_size = _positive_int_or_none(vocab_size, "vocab_size", FastFitError)
        if vocab_size is None:
            raise FastFitError("vocab_size is required")
        scale = _validated_scale(scale, FastFitError)
        coefficients = [
            scipy.fft.dct(_as_chunk(chunk, FastFitError, f"training chunk {index}"), axis=0, norm="ortho").ravel()
            for index, chunk in enumerate(chunks)
        ]
        if not coefficients:
            raise FastFitError("no training chunks given")
        rounded = [np.around(c * scale) for c in coefficients]
        max_token = int(max(r.max() for r in rounded))
        min_token = int(min(r.min() for r in rounded))
        code_range = max_token - min_token
        if code_range > vocab_size:
            raise FastFitError(
                f"quantised DCT coefficients span {code_range} codes ({min_token}..{max_token} at "
                f"scale {scale}) but vocab_size is {vocab_size}: raise vocab_size to at least "
                f"{code_range}, lower scale, or check the data is normalised"
            )
        if code_range + 100 > vocab_size:
            _LOG.warning(
                "FAST vocab_size %d leaves little room for merges over %d codes", vocab_size, code_range
            )

        def training_text() -> Iterator[str]:
            for r in rounded:
                yield "".join(map(chr, (r - min_token).astype(int)))

        alphabet = [chr(i) for i in range(code_range + 1)]
        if cover_all_bytes:
            alphabet += [symbol for symbol in _BYTE_LEVEL_SYMBOLS if ord(symbol) > code_range]
        tokenizer = _new_byte_level_bpe()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            show_progress=False,
            special_tokens=[],
            initial_alphabet=alphabet,
            max_token_length=10000,
        )
        tokenizer.train_from_iterator(training_text(), trainer=trainer, length=len(rounded))
        fitted = cls(
            tokenizer,
            scale=scale,
            vocab_size=vocab_size,
            min_token=min_token,
            time_horizon=time_horizon,
            action_dim=action_dim,
        )
        if not fitted.covers_all_bytes:
            _LOG.warning(
                "FAST tokenizer lacks %d of 256 byte-level symbols: encode rejects chunks needing "
                "them (fit with cover_all_bytes=True to include them)",
                int((~fitted._known_bytes).sum()),
            )
        return fitted

    # ------------------------------------------------------------------ files
    @classmethod
    def load(cls, folder: str | os.PathLike) -> "FastTokenizer":
        """Load a FAST tokenizer folder (hub flat layout or `bpe_tokenizer/` subfolder).

        Parameters
        ----------
        folder : path
            Holds `processor_config.json` and `tokenizer.json` (or `bpe_tokenizer/tokenizer.json`).

        Raises
        ------
        FastConfigError
            Missing or malformed files, a config value of the wrong type, a processor class
            other than UniversalActionProcessor, or a tokenizer that is not a byte-level BPE.
        """
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            raise FastConfigError(f"FAST tokenizer folder {folder} does not exist")
        config_path = os.path.join(folder, PROCESSOR_CONFIG_FILE)
        if not os.path.isfile(config_path):
            raise FastConfigError(f"FAST tokenizer folder {folder} has no {PROCESSOR_CONFIG_FILE}")
        config = _read_json(config_path, "FAST processor config")
        processor_class = config.get("processor_class", PROCESSOR_CLASS)
        if processor_class != PROCESSOR_CLASS:
            raise FastConfigError(
                f"{config_path}: processor_class is {processor_class!r}, expected {PROCESSOR_CLASS!r}"
            )
        missing = [key for key in ("scale", "vocab_size", "min_token") if key not in config]
        if missing:
            raise FastConfigError(f"{config_path} lacks {', '.join(missing)}")
        tokenizer = _load_tokenizer_file(find_tokenizer_file(folder))
        try:
            return cls(
                tokenizer,
                scale=config["scale"],
                vocab_size=config["vocab_size"],
                min_token=config["min_token"],
                time_horizon=config.get("time_horizon"),
                action_dim=config.get("action_dim"),
            )
        except FastConfigError as exc:
            raise FastConfigError(f"{config_path}: {exc}") from exc

    def save(self, folder: str | os.PathLike) -> None:
        """Write the hub's flat layout into `folder` (created if needed).

        Files: `processor_config.json`, `tokenizer.json`, `tokenizer_config.json`,
        `special_tokens_map.json`. The hub's `processing_action_tokenizer.py` (remote code)
        is not written, so no `auto_map` entry points at it.
        """
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        _write_json(
            os.path.join(folder, PROCESSOR_CONFIG_FILE),
            {
                "processor_class": PROCESSOR_CLASS,
                "scale": self.scale,
                "vocab_size": self.vocab_size,
                "min_token": self.min_token,
                "time_horizon": self.time_horizon,
                "action_dim": self.action_dim,
            },
        )
        self.tokenizer.save(os.path.join(folder, TOKENIZER_FILE), pretty=True)
        _write_json(
            os.path.join(folder, TOKENIZER_CONFIG_FILE),
            {
                "added_tokens_decoder": {},
                "clean_up_tokenization_spaces": False,
                "model_max_length": _MODEL_MAX_LENGTH,
                "tokenizer_class": "PreTrainedTokenizerFast",
            },
        )
        _write_json(os.path.join(folder, SPECIAL_TOKENS_MAP_FILE), {})

    # ------------------------------------------------------------------ encoding
    def quantize(self, chunk: np.ndarray) -> np.ndarray:
        """Rounded ``dct(chunk) * scale`` of shape (T, D), in the caller's float dtype.

        Raises
        ------
        FastEncodeError
            Not a finite, non-empty 2-D array, or a shape differing from the configured one.
        """
        array = _as_chunk(chunk, FastEncodeError, "chunk to encode")
        expected = (self.time_horizon, self.action_dim)
        for axis, (size, want) in enumerate(zip(array.shape, expected)):
            if want is not None and size != want:
                raise FastEncodeError(
                    f"chunk to encode has shape {array.shape}, tokenizer expects "
                    f"({self.time_horizon}, {self.action_dim}) (axis {axis} differs)"
                )
        return np.around(scipy.fft.dct(array, axis=0, norm="ortho") * self.scale)

    def to_text(self, chunk: np.ndarray, *, clip_below_min: bool = False) -> str:
        """The character string FAST feeds to the BPE for `chunk` (see `encode`)."""
        flat = self.quantize(chunk).ravel()
        codes = flat - self.min_token
        if codes.min() < 0:
            if not clip_below_min:
                index = int(np.argmin(codes))
                raise FastEncodeError(
                    f"quantised coefficient {int(flat[index])} (flat index {index}) is below "
                    f"min_token {self.min_token}: the chunk is outside the fitted range "
                    f"(is it normalised?); pass clip_below_min=True to clip as the reference does"
                )
            codes = np.maximum(codes, 0)
        if codes.max() > self.max_code:
            index = int(np.argmax(codes))
            raise FastEncodeError(
                f"quantised coefficient {int(flat[index])} (flat index {index}) is above "
                f"min_token + vocab_size = {self.min_token + self.max_code}: the chunk is "
                f"outside the range any fitted data covers (is it normalised?)"
            )
        text = "".join(map(chr, codes.astype(np.int64).tolist()))
        if not self._known_bytes.all():
            self._check_bytes_known(text)
        return text

    def _check_bytes_known(self, text: str) -> None:
        """Reject text the BPE would encode with characters silently missing."""
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        unknown = ~self._known_bytes[data]
        if unknown.any():
            byte = int(data[np.argmax(unknown)])
            codes = sorted({ord(c) for c in text if not self._known_bytes[list(c.encode("utf-8"))].all()})
            raise FastEncodeError(
                f"character code(s) {codes} (coefficient(s) {[c + self.min_token for c in codes]}) need "
                f"byte 0x{byte:02X}, whose byte-level symbol is not in the tokenizer's vocabulary: the "
                f"BPE would drop them silently. Refit with cover_all_bytes=True or on data covering them"
            )

    def encode(self, chunk: np.ndarray, *, clip_below_min: bool = False) -> list[int]:
        """Encode one normalised (T, D) chunk into FAST token ids.

        The DCT runs in the chunk's own dtype, as in the reference: float32 and float64
        input can round a few coefficients differently and so give slightly different ids.

        Parameters
        ----------
        chunk : np.ndarray
            Shape (T, D), finite, normalised like the fitting data.
        clip_below_min : bool
            Clip codes below `min_token` to 0 as the reference does (silently lossy), instead
            of raising.

        Raises
        ------
        FastEncodeError
            Not a finite 2-D array, a shape differing from the configured one, a
            quantised coefficient outside ``[min_token, min_token + vocab_size]``, or a
            character needing a byte the vocabulary lacks (see `covers_all_bytes`).
        """
        return self.tokenizer.encode(self.to_text(chunk, clip_below_min=clip_below_min)).ids

    # ------------------------------------------------------------------ decoding
    def _decode_codes(self, ids: object) -> tuple[np.ndarray | None, DecodeFailure | None, str]:
        """ids -> character codes (``q - min_token``), or a failure; never raises."""
        try:
            array = np.asarray(ids)
        except Exception as exc:  # ragged or exotic input from a misbehaving model
            return None, DecodeFailure.INVALID_ID, f"ids are not an array of integers: {exc}"
        if array.size == 0:
            return None, DecodeFailure.EMPTY, "no token ids"
        if array.ndim != 1:
            return None, DecodeFailure.INVALID_ID, f"ids must be 1-D, got shape {array.shape}"
        if not np.issubdtype(array.dtype, np.integer):
            return None, DecodeFailure.INVALID_ID, f"ids must be integers, got dtype {array.dtype}"
        # Checked here because tokenizers drops ids >= vocab silently and raises on negatives.
        bad = (array < 0) | (array >= self.bpe_vocab_size)
        if bad.any():
            positions = np.flatnonzero(bad)
            return None, DecodeFailure.INVALID_ID, (
                f"{positions.size} id(s) outside [0, {self.bpe_vocab_size}), first {int(array[positions[0]])} "
                f"at position {int(positions[0])}"
            )
        text = self.tokenizer.decode(array.tolist(), skip_special_tokens=False)
        if not text:
            return None, DecodeFailure.EMPTY, f"{array.size} id(s) decoded to no text"
        if _REPLACEMENT_CHARACTER in text:
            return None, DecodeFailure.REPLACEMENT_CHARACTER, (
                f"ids decode to invalid UTF-8 (U+FFFD at character {text.index(_REPLACEMENT_CHARACTER)})"
            )
        # Decoded text is a valid Rust string (no surrogates), so UTF-32 gives the code points.
        codes = np.frombuffer(text.encode("utf-32-le"), dtype="<u4").astype(np.int64)
        if codes.max() > self.max_code:
            index = int(np.argmax(codes))
            return None, DecodeFailure.COEFFICIENT_OUT_OF_RANGE, (
                f"character code {int(codes[index])} at coefficient {index} exceeds vocab_size "
                f"{self.vocab_size}: no fitted data gives that coefficient"
            )
        return codes, None, ""

    def _resolve_shape(self, time_horizon: int | None, action_dim: int | None) -> tuple[int, int]:
        horizon = _positive_int_or_none(
            self.time_horizon if time_horizon is None else time_horizon, "time_horizon", FastError
        )
        dim = _positive_int_or_none(self.action_dim if action_dim is None else action_dim, "action_dim", FastError)
        if horizon is None or dim is None:
            raise FastError(
                "decode needs time_horizon and action_dim: pass them or set them in processor_config.json"
            )
        return horizon, dim

    def decode(
        self,
        ids: Sequence[int] | np.ndarray,
        time_horizon: int | None = None,
        action_dim: int | None = None,
        relaxed: bool = False,
    ) -> DecodeResult:
        """Decode FAST token ids into a normalised (T, D) chunk, or a typed failure.

        Never raises for bad ids and never returns zeros on failure.

        Parameters
        ----------
        ids : sequence of int or 1-D integer array
            Token ids as produced by the model (already mapped back to FAST ids).
        time_horizon, action_dim : int or None
            Chunk shape; default to the configured values.
        relaxed : bool
            LeRobot's relaxed decoding: truncate extra coefficients or zero-pad missing
            high-frequency ones to T * D instead of failing with WRONG_LENGTH. Off by
            default; `DecodeResult.relaxed_used` says when it changed anything.

        Returns
        -------
        DecodeResult

        Raises
        ------
        FastError
            Only for a caller error: no time_horizon / action_dim known, or non-positive ones.
        """
        horizon, dim = self._resolve_shape(time_horizon, action_dim)
        codes, failure, detail = self._decode_codes(ids)
        if failure is not None:
            return DecodeResult(chunk=None, failure=failure, detail=detail)
        expected = horizon * dim
        coefficients = codes + self.min_token
        relaxed_used = False
        if coefficients.size != expected:
            count_detail = f"{coefficients.size} coefficients for a ({horizon}, {dim}) chunk ({expected} expected)"
            if not relaxed:
                return DecodeResult(chunk=None, failure=DecodeFailure.WRONG_LENGTH, detail=count_detail)
            relaxed_used = True
            detail = f"relaxed: {count_detail}, " + (
                "truncated" if coefficients.size > expected else "zero-padded high frequencies"
            )
            if coefficients.size > expected:
                coefficients = coefficients[:expected]
            else:
                # Pad the coefficient (not the code) with 0: missing high frequencies are zero.
                coefficients = np.pad(coefficients, (0, expected - coefficients.size))
        with np.errstate(over="ignore", invalid="ignore"):
            chunk = scipy.fft.idct(coefficients.reshape(horizon, dim) / self.scale, axis=0, norm="ortho")
        if not np.all(np.isfinite(chunk)):
            return DecodeResult(
                chunk=None,
                failure=DecodeFailure.NON_FINITE,
                detail=f"inverse DCT gave {int(np.count_nonzero(~np.isfinite(chunk)))} non-finite value(s) "
                f"(scale {self.scale})",
                relaxed_used=relaxed_used,
            )
        return DecodeResult(chunk=chunk, failure=None, detail=detail, relaxed_used=relaxed_used)

    def decode_to_coefficients(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Decode ids to the flat quantised coefficients ``q`` (int64), frequency-major.

        For tests and tools; raises instead of returning a result.

        Raises
        ------
        FastDecodeError
            With the same failure kinds as `decode` (except WRONG_LENGTH / NON_FINITE).
        """
        codes, failure, detail = self._decode_codes(ids)
        if failure is not None:
            raise FastDecodeError(failure, detail)
        return codes + self.min_token
