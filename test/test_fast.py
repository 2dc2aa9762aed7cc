"""Unit tests of the FAST action codec (sim2real_vla_ros.core.policy.fast); no ROS needed."""
import json
import math
import os
import shutil

import numpy as np
import pytest
import scipy.fft
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from tokenizers.implementations import ByteLevelBPETokenizer

from sim2real_vla_ros.core.policy.fast import (
    DecodeFailure,
    DecodeResult,
    DecodeStats,
    FastConfigError,
    FastDecodeError,
    FastEncodeError,
    FastError,
    FastFitError,
    FastTokenizer,
    _BYTE_LEVEL_SYMBOLS,
)

SCALE = 10
VOCAB_SIZE = 512
ACTION_DIM = 7


def smooth_chunks(rng: np.random.Generator, count: int, horizon: int, dim: int = ACTION_DIM) -> list:
    """Random smooth trajectories: a linear trend plus three sinusoids per joint.

    Each joint is min-max mapped onto a random sub-interval [a, b] of [-1, 1], as chunks
    normalised with dataset-wide statistics are: some sit near a joint limit, which gives
    large DC coefficients (character codes above 127, i.e. multi-byte UTF-8).
    """
    t = np.linspace(0.0, 1.0, horizon)[:, None]
    chunks = []
    for _ in range(count):
        x = rng.uniform(-1, 1, dim) * t
        for _ in range(3):
            amplitude = rng.uniform(0.0, 1.0, dim)
            frequency = rng.uniform(0.1, 1.5, dim)  # cycles per chunk: smooth
            x = x + amplitude * np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi, dim))
        unit = (x - x.min(axis=0)) / (x.max(axis=0) - x.min(axis=0))
        low, high = np.sort(rng.uniform(-1, 1, (2, dim)), axis=0)
        chunks.append(low + (high - low) * unit)
    return chunks


def max_abs_error_bound(horizon: int, scale: float) -> float:
    """Worst-case time-domain error of quantising the DCT, exact for the ortho DCT.

    Each quantised coefficient is off by at most 0.5 / scale. The inverse of the
    orthonormal DCT-II is x = C^T X, so the error at step t is sum_k C[k, t] * delta_k,
    whose largest magnitude is 0.5 / scale * sum_k |C[k, t]| (signs of delta chosen
    adversarially). By Cauchy-Schwarz (unit-norm columns) this is <= 0.5 * sqrt(T) / scale.
    """
    basis = scipy.fft.dct(np.eye(horizon), axis=0, norm="ortho")  # basis[k, t]
    return 0.5 / scale * float(np.abs(basis).sum(axis=0).max())


@pytest.fixture(scope="module")
def training_chunks():
    rng = np.random.default_rng(1234)
    return smooth_chunks(rng, 150, 50) + smooth_chunks(rng, 50, 25)


@pytest.fixture(scope="module")
def fast(training_chunks):
    """The module's main tokenizer; T and D left unset like the public one.

    Fitted with every byte-level symbol in the alphabet so held-out chunks always encode
    (see test_reference_fit_can_miss_bytes_and_encode_refuses_to_drop_them).
    """
    return FastTokenizer.fit(training_chunks, scale=SCALE, vocab_size=VOCAB_SIZE, cover_all_bytes=True)


@pytest.fixture(scope="module")
def reference_fast(training_chunks):
    """Fitted exactly as the reference processor fits."""
    return FastTokenizer.fit(training_chunks, scale=SCALE, vocab_size=VOCAB_SIZE)


@pytest.fixture(scope="module")
def held_out_chunks():
    rng = np.random.default_rng(99)
    return smooth_chunks(rng, 40, 50) + smooth_chunks(rng, 40, 25)


def byte_level(text: str) -> str:
    """How the byte-level pre-tokenizer spells `text` (one visible char per UTF-8 byte)."""
    ((spelled, _),) = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False).pre_tokenize_str(text)
    return spelled


@pytest.fixture(scope="module")
def hand_fast():
    """A hand-built byte-level BPE whose ids are known exactly.

    min_token = -60, so quantised coefficients 4 and 3 become codes 64 '@' and 63 '?'
    (printable ASCII: the byte-level spelling is the character itself).
    """
    vocab = {
        "?": 0,
        "@": 1,
        "@?": 2,
        byte_level(chr(0xC2))[0]: 3,  # 'Â', the byte 0xC2 alone: a UTF-8 lead byte
        byte_level(chr(300)): 4,  # 'Ä¬', code 300 (two bytes), beyond vocab_size 128
    }
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=[("@", "?")]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    bpe.decoder = decoders.ByteLevel()
    bpe.post_processor = processors.ByteLevel(trim_offsets=False)
    return FastTokenizer(bpe, scale=10, vocab_size=128, min_token=-60, time_horizon=2, action_dim=1)


# ---------------------------------------------------------------- round trip
@pytest.mark.parametrize("horizon", [50, 25])
def test_round_trip_error_is_bounded_by_quantisation(fast, held_out_chunks, horizon):
    bound = max_abs_error_bound(horizon, SCALE)
    assert bound <= 0.5 * math.sqrt(horizon) / SCALE
    chunks = [c for c in held_out_chunks if c.shape[0] == horizon]
    squared_errors = []
    for chunk in chunks:
        result = fast.decode(fast.encode(chunk), horizon, ACTION_DIM)
        assert result.ok, result.detail
        assert not result.relaxed_used and result.chunk.shape == (horizon, ACTION_DIM)
        error = result.chunk - chunk
        assert np.abs(error).max() <= bound + 1e-12
        # Orthonormal transform: the RMS error equals the coefficients' RMS error <= 0.5/scale.
        assert np.sqrt(np.mean(error**2)) <= 0.5 / SCALE + 1e-12
        squared_errors.append(error**2)
    # Rounding errors are close to uniform on [-0.5, 0.5]/scale: RMS ~ 1/(scale*sqrt(12)) ~ 0.029,
    # far below the worst case (about 0.5 for T=50).
    typical_rms = float(np.sqrt(np.mean(squared_errors)))
    assert typical_rms < 0.035
    assert typical_rms < bound / 5


def test_training_chunks_round_trip_and_codes_cover_multibyte_utf8(fast, training_chunks):
    codes = np.concatenate([fast.quantize(c).ravel() - fast.min_token for c in training_chunks])
    assert codes.max() >= 128  # multi-byte characters are exercised, not only ASCII
    for chunk in training_chunks[::10]:
        coefficients = fast.decode_to_coefficients(fast.encode(chunk))
        np.testing.assert_array_equal(coefficients, fast.quantize(chunk).ravel())


def test_compression_is_real(fast, held_out_chunks):
    chunk = held_out_chunks[0]
    assert len(fast.encode(chunk)) < chunk.size  # BPE merges shorten the 350-code text


# ---------------------------------------------------------------- hand-computed example
def test_hand_computed_example(hand_fast):
    chunk = np.array([[0.5], [0.1]])
    # DCT-II ortho, N = 2: X0 = (x0 + x1)/sqrt(2) = 0.42426, X1 = (x0 - x1)/sqrt(2) = 0.28284.
    # Times scale 10 and rounded: 4 and 3. Minus min_token (-60): codes 64 '@' and 63 '?'.
    np.testing.assert_array_equal(hand_fast.quantize(chunk), [[4.0], [3.0]])
    assert hand_fast.to_text(chunk) == "@?"
    assert hand_fast.encode(chunk) == [2]  # the merge '@' + '?' -> id 2
    np.testing.assert_array_equal(hand_fast.decode_to_coefficients([2]), [4, 3])
    np.testing.assert_array_equal(hand_fast.decode_to_coefficients([1, 0]), [4, 3])
    # Inverse: x0 = (0.4 + 0.3)/sqrt(2) = 0.49497, x1 = (0.4 - 0.3)/sqrt(2) = 0.07071.
    result = hand_fast.decode([2])
    assert result.ok and result.detail == "" and not result.relaxed_used
    np.testing.assert_allclose(result.chunk, [[0.7 / math.sqrt(2)], [0.1 / math.sqrt(2)]], atol=1e-15)
    swapped = hand_fast.decode([0, 1])  # "?@": coefficients 3, 4
    np.testing.assert_allclose(swapped.chunk, [[0.7 / math.sqrt(2)], [-0.1 / math.sqrt(2)]], atol=1e-15)


# ---------------------------------------------------------------- failure kinds
def test_empty(fast, hand_fast):
    result = fast.decode([], 50, ACTION_DIM)
    assert not result.ok and result.failure is DecodeFailure.EMPTY and result.chunk is None
    assert hand_fast.decode(np.array([], dtype=np.int64)).failure is DecodeFailure.EMPTY


def test_wrong_length(fast, held_out_chunks):
    ids = fast.encode(held_out_chunks[0])
    result = fast.decode(ids + ids, 50, ACTION_DIM)
    assert result.failure is DecodeFailure.WRONG_LENGTH and result.chunk is None
    assert "700 coefficients" in result.detail and "350 expected" in result.detail
    # Same ids read as the wrong chunk shape (the openpi/LeRobot failure) is the same failure.
    assert fast.decode(ids, 25, ACTION_DIM).failure is DecodeFailure.WRONG_LENGTH


@pytest.mark.parametrize("bad_id", [-1, "vocab", "vocab+5"])
def test_invalid_id(fast, held_out_chunks, bad_id):
    ids = fast.encode(held_out_chunks[0])
    bad = {"vocab": fast.bpe_vocab_size, "vocab+5": fast.bpe_vocab_size + 5}.get(bad_id, bad_id)
    # Left to tokenizers, an id >= vocab is dropped silently and a negative one raises;
    # both are caught before the tokenizer.
    if bad >= 0:
        assert fast.tokenizer.decode(ids[:3] + [bad] + ids[3:]) == fast.tokenizer.decode(ids)
    else:
        with pytest.raises(OverflowError):
            fast.tokenizer.decode([bad])
    result = fast.decode(ids[:3] + [bad] + ids[3:], 50, ACTION_DIM)
    assert result.failure is DecodeFailure.INVALID_ID and result.chunk is None
    assert f"first {bad} at position 3" in result.detail


def test_invalid_id_threshold_is_the_bpe_vocabulary(hand_fast):
    # The hand tokenizer has 5 tokens but a config vocab_size of 128: id 5 does not exist.
    assert hand_fast.bpe_vocab_size == 5
    assert hand_fast.decode([5]).failure is DecodeFailure.INVALID_ID


@pytest.mark.parametrize(
    "ids",
    [np.array([1.0, 2.0]), np.array([[2]]), [[2], [2, 0]], np.array([True])],
    ids=["floats", "2-D", "ragged", "bools"],
)
def test_malformed_id_containers_are_invalid_ids(hand_fast, ids):
    assert hand_fast.decode(ids).failure is DecodeFailure.INVALID_ID


def test_replacement_character_from_lone_lead_byte(fast, hand_fast, held_out_chunks):
    assert hand_fast.tokenizer.decode([3]) == "\ufffd"  # the tokenizer itself does not complain
    result = hand_fast.decode([2, 3])
    assert result.failure is DecodeFailure.REPLACEMENT_CHARACTER and result.chunk is None
    # The fitted tokenizer has such tokens too (codes >= 128 are two UTF-8 bytes).
    lone_lead_ids = [i for i in range(fast.bpe_vocab_size) if fast.tokenizer.decode([i]) == "\ufffd"]
    assert lone_lead_ids
    ids = fast.encode(held_out_chunks[0])
    result = fast.decode(ids + [lone_lead_ids[0]], 50, ACTION_DIM, relaxed=True)
    assert result.failure is DecodeFailure.REPLACEMENT_CHARACTER


def test_coefficient_out_of_range(hand_fast):
    assert hand_fast.tokenizer.decode([4]) == chr(300)  # valid UTF-8, a huge coefficient
    result = hand_fast.decode([4, 0])
    assert result.failure is DecodeFailure.COEFFICIENT_OUT_OF_RANGE
    assert "300" in result.detail


def test_non_finite(fast, held_out_chunks):
    # With a sane scale decoding cannot overflow: codes are <= vocab_size, so coefficients
    # are bounded. It takes an absurd (but positive, finite, so loadable) scale: the
    # coefficients divided by 1e-308 overflow to inf.
    tiny_scale = FastTokenizer(fast.tokenizer, scale=1e-308, vocab_size=VOCAB_SIZE, min_token=fast.min_token)
    result = tiny_scale.decode(fast.encode(held_out_chunks[0]), 50, ACTION_DIM)
    assert result.failure is DecodeFailure.NON_FINITE and result.chunk is None


def test_decode_never_returns_zeros_and_never_raises_on_garbage(fast):
    rng = np.random.default_rng(5)
    outcomes = set()
    for _ in range(200):
        ids = rng.integers(-3, fast.bpe_vocab_size + 3, size=rng.integers(0, 80))
        result = fast.decode(ids, 50, ACTION_DIM)
        assert isinstance(result, DecodeResult)
        assert (result.chunk is None) == (result.failure is not None)
        outcomes.add(result.failure)
    assert {DecodeFailure.INVALID_ID, DecodeFailure.WRONG_LENGTH} <= outcomes


def test_decode_to_coefficients_raises_typed_error(hand_fast):
    with pytest.raises(FastDecodeError, match="replacement_character") as info:
        hand_fast.decode_to_coefficients([3])
    assert info.value.failure is DecodeFailure.REPLACEMENT_CHARACTER


def test_decode_without_shape_is_a_caller_error(fast, held_out_chunks):
    with pytest.raises(FastError, match="time_horizon and action_dim"):
        fast.decode(fast.encode(held_out_chunks[0]))


# ---------------------------------------------------------------- relaxed mode
def test_relaxed_truncates_and_flags(fast, held_out_chunks):
    chunk = held_out_chunks[0]
    ids = fast.encode(chunk)
    strict = fast.decode(ids, 50, ACTION_DIM)
    relaxed = fast.decode(ids + ids, 50, ACTION_DIM, relaxed=True)
    assert relaxed.ok and relaxed.relaxed_used and "truncated" in relaxed.detail
    np.testing.assert_array_equal(relaxed.chunk, strict.chunk)  # the first 350 are the chunk's
    exact = fast.decode(ids, 50, ACTION_DIM, relaxed=True)
    assert exact.ok and not exact.relaxed_used


def test_relaxed_zero_pads_missing_high_frequencies(fast, held_out_chunks):
    ids = fast.encode(held_out_chunks[0])
    # The longest clean prefix (a prefix may end inside a multi-byte character).
    for cut in range(len(ids) - 1, 0, -1):
        try:
            coefficients = fast.decode_to_coefficients(ids[:cut])
            break
        except FastDecodeError:
            continue
    else:
        pytest.fail("no prefix of the ids decodes cleanly")
    assert fast.decode(ids[:cut], 50, ACTION_DIM).failure is DecodeFailure.WRONG_LENGTH
    result = fast.decode(ids[:cut], 50, ACTION_DIM, relaxed=True)
    assert result.ok and result.relaxed_used and "zero-padded" in result.detail
    padded = np.zeros(50 * ACTION_DIM)
    padded[: coefficients.size] = coefficients  # coefficient 0, not code 0 (= min_token)
    expected = scipy.fft.idct(padded.reshape(50, ACTION_DIM) / SCALE, axis=0, norm="ortho")
    np.testing.assert_allclose(result.chunk, expected, atol=1e-12)


def test_relaxed_does_not_hide_other_failures(hand_fast):
    assert hand_fast.decode([5], relaxed=True).failure is DecodeFailure.INVALID_ID
    assert hand_fast.decode([4], relaxed=True).failure is DecodeFailure.COEFFICIENT_OUT_OF_RANGE


def test_decode_stats_counts_each_kind(hand_fast):
    stats = DecodeStats()
    for ids, relaxed in [([2], False), ([2, 2], True), ([2, 2], False), ([5], False), ([3], False), ([], False)]:
        stats.record(hand_fast.decode(ids, relaxed=relaxed))
    counts = stats.as_dict()
    assert counts["total"] == stats.total == 6
    assert counts["ok"] == 2 and counts["relaxed_used"] == 1
    assert counts["wrong_length"] == 1 and counts["invalid_id"] == 1
    assert counts["replacement_character"] == 1 and counts["empty"] == 1
    assert counts["non_finite"] == 0 and counts["coefficient_out_of_range"] == 0
    assert stats.failures(DecodeFailure.WRONG_LENGTH) == 1


# ---------------------------------------------------------------- dtypes
def test_float32_and_float64_may_round_differently_but_both_decode_within_bound(fast, held_out_chunks):
    # The reference runs the DCT in the caller's dtype. A coefficient whose scaled value
    # lies within float32 precision of a half-integer rounds differently: here
    # 10 * (0.15 - 1e-10) is 1.4999999990 in float64 (-> 1) but 1.5000001 in float32 (-> 2).
    edge = np.array([[0.15 - 1e-10]])
    assert fast.quantize(edge)[0, 0] == 1 and fast.quantize(edge.astype(np.float32))[0, 0] == 2
    assert fast.encode(edge) != fast.encode(edge.astype(np.float32))
    for chunk in (edge, *held_out_chunks[:20]):
        horizon = chunk.shape[0]
        for dtype in (np.float64, np.float32):
            result = fast.decode(fast.encode(chunk.astype(dtype)), horizon, chunk.shape[1])
            assert result.ok and np.abs(result.chunk - chunk).max() <= max_abs_error_bound(horizon, SCALE) + 1e-6
    # On ordinary data such disagreements are rare and only one step apart.
    q64 = np.concatenate([fast.quantize(c).ravel() for c in held_out_chunks])
    q32 = np.concatenate([fast.quantize(c.astype(np.float32)).ravel() for c in held_out_chunks])
    assert np.abs(q64 - q32).max() <= 1 and np.count_nonzero(q64 != q32) <= 5


# ---------------------------------------------------------------- encode validation
@pytest.mark.parametrize(
    "chunk, message",
    [
        (np.full((50, 7), np.nan), "non-finite"),
        (np.full((50, 7), np.inf), "non-finite"),
        (np.zeros(50), "2-D"),
        (np.zeros((2, 50, 7)), "2-D"),
        (np.zeros((0, 7)), "empty"),
        (np.full((50, 7), 1e6), "above min_token"),  # would reach the UTF-16 surrogate range
        (np.full((50, 7), 8.0), "above min_token"),  # unnormalised: DC 8*sqrt(50)*10 = 566 codes up
        (np.full((50, 7), -3.0), "below min_token"),
    ],
)
def test_encode_rejects_bad_input(fast, chunk, message):
    with pytest.raises(FastEncodeError, match=message):
        fast.encode(chunk)


def test_encode_can_clip_below_min_like_the_reference(fast):
    chunk = np.full((50, 7), -3.0)
    codes = [ord(c) for c in fast.to_text(chunk, clip_below_min=True)]
    assert codes[:7] == [0] * 7  # the DC coefficients clipped to min_token


def test_encode_checks_configured_shape(hand_fast):
    with pytest.raises(FastEncodeError, match=r"expects \(2, 1\)"):
        hand_fast.encode(np.zeros((3, 1)))


# ---------------------------------------------------------------- fit
def test_fit_matches_byte_level_bpe_tokenizer(reference_fast, training_chunks):
    """Training our low-level Tokenizer equals training ByteLevelBPETokenizer() as the reference does."""
    reference = ByteLevelBPETokenizer()
    texts = [reference_fast.to_text(c) for c in training_chunks]
    code_range = max(max(map(ord, t)) for t in texts)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        special_tokens=[],
        initial_alphabet=[chr(i) for i in range(code_range + 1)],
        max_token_length=10000,
    )
    reference._tokenizer.train_from_iterator(texts, trainer=trainer)
    assert json.loads(reference._tokenizer.to_str()) == json.loads(reference_fast.tokenizer.to_str())


def test_fit_is_deterministic(fast, training_chunks):
    again = FastTokenizer.fit(training_chunks, scale=SCALE, vocab_size=VOCAB_SIZE, cover_all_bytes=True)
    assert again.tokenizer.to_str() == fast.tokenizer.to_str() and again.min_token == fast.min_token


def test_byte_level_symbol_table_matches_the_library():
    assert set(_BYTE_LEVEL_SYMBOLS) == set(pre_tokenizers.ByteLevel.alphabet())
    for code in (0, 12, 33, 127, 128, 200, 300, 1000):
        assert byte_level(chr(code)) == "".join(_BYTE_LEVEL_SYMBOLS[b] for b in chr(code).encode("utf-8"))


def test_reference_fit_can_miss_bytes_and_encode_refuses_to_drop_them(fast, reference_fast, held_out_chunks):
    # The reference alphabet is chr(0..max-min); byte-level symbols of bytes below 0x21 are
    # chr(256+), so a code unseen in training (here 12, a rare extreme coefficient) has no
    # symbol in the vocabulary and the BPE (no unknown token) drops it without a word.
    assert fast.covers_all_bytes and not reference_fast.covers_all_bytes
    rejected = 0
    for chunk in held_out_chunks:
        try:
            reference_fast.encode(chunk)
        except FastEncodeError as error:
            assert "not in the tokenizer's vocabulary" in str(error)
            text = fast.to_text(chunk)
            silently_shortened = reference_fast.tokenizer.decode(reference_fast.tokenizer.encode(text).ids)
            assert len(silently_shortened) < len(text)  # what the reference would have sent
            rejected += 1
        assert fast.decode(fast.encode(chunk), *chunk.shape).ok
    assert rejected >= 1


def test_fit_range_larger_than_vocab_is_a_clear_error(training_chunks):
    with pytest.raises(FastFitError, match="raise vocab_size to at least"):
        FastTokenizer.fit(training_chunks[:20], scale=100, vocab_size=256)


@pytest.mark.parametrize("chunks", [[], [np.zeros(5)], [np.full((4, 2), np.nan)]], ids=["none", "1-D", "nan"])
def test_fit_rejects_bad_data(chunks):
    with pytest.raises(FastFitError):
        FastTokenizer.fit(chunks, vocab_size=256)


# ---------------------------------------------------------------- files
def test_save_writes_the_hub_layout_and_loads_back(fast, held_out_chunks, tmp_path):
    fast.save(tmp_path)
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["processor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]
    )
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config == {
        "processor_class": "UniversalActionProcessor",
        "scale": SCALE,
        "vocab_size": VOCAB_SIZE,
        "min_token": fast.min_token,
        "time_horizon": None,
        "action_dim": None,
    }
    # The plain tokenizers loader (what transformers wraps) reads it and gives the same ids.
    plain = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    loaded = FastTokenizer.load(tmp_path)
    for chunk in held_out_chunks[::8]:
        ids = fast.encode(chunk)
        assert loaded.encode(chunk) == ids == plain.encode(fast.to_text(chunk)).ids
        np.testing.assert_array_equal(loaded.decode(ids, *chunk.shape).chunk, fast.decode(ids, *chunk.shape).chunk)


def test_load_accepts_bpe_tokenizer_subfolder(fast, held_out_chunks, tmp_path):
    fast.save(tmp_path)
    (tmp_path / "bpe_tokenizer").mkdir()
    shutil.move(tmp_path / "tokenizer.json", tmp_path / "bpe_tokenizer" / "tokenizer.json")
    loaded = FastTokenizer.load(str(tmp_path))
    chunk = held_out_chunks[0]
    assert loaded.encode(chunk) == fast.encode(chunk)


def test_load_public_style_config(fast, tmp_path):
    """The hub's config: shape left null, extra keys such as auto_map ignored."""
    fast.save(tmp_path)
    config = {
        "action_dim": None,
        "auto_map": {"AutoProcessor": "processing_action_tokenizer.UniversalActionProcessor"},
        "min_token": -354,
        "processor_class": "UniversalActionProcessor",
        "scale": 10,
        "time_horizon": None,
        "vocab_size": 2048,
    }
    (tmp_path / "processor_config.json").write_text(json.dumps(config))
    loaded = FastTokenizer.load(tmp_path)
    assert (loaded.min_token, loaded.vocab_size, loaded.time_horizon) == (-354, 2048, None)


def test_load_errors_name_the_problem(fast, tmp_path):
    with pytest.raises(FastConfigError, match="does not exist"):
        FastTokenizer.load(tmp_path / "missing")
    fast.save(tmp_path)
    os.remove(tmp_path / "tokenizer.json")
    with pytest.raises(FastConfigError, match="bpe_tokenizer"):
        FastTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "BPE"')
    with pytest.raises(FastConfigError, match="cannot read FAST tokenizer"):
        FastTokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordPiece"}, "decoder": None}))
    with pytest.raises(FastConfigError, match="byte-level BPE"):
        FastTokenizer.load(tmp_path)
    fast.save(tmp_path)
    config_path = tmp_path / "processor_config.json"
    config = json.loads(config_path.read_text())
    for key, value, message in [
        ("scale", 0, "scale must be finite and > 0"),
        ("vocab_size", "big", "vocab_size must be a positive integer"),
        ("time_horizon", -1, "time_horizon must be a positive integer"),
        ("processor_class", "Other", "expected 'UniversalActionProcessor'"),
    ]:
        config_path.write_text(json.dumps({**config, key: value}))
        with pytest.raises(FastConfigError, match=message):
            FastTokenizer.load(tmp_path)
    config_path.write_text(json.dumps({k: v for k, v in config.items() if k != "min_token"}))
    with pytest.raises(FastConfigError, match="lacks min_token"):
        FastTokenizer.load(tmp_path)
    os.remove(config_path)
    with pytest.raises(FastConfigError, match="no processor_config.json"):
        FastTokenizer.load(tmp_path)
