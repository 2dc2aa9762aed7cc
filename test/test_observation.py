"""core.observation: the masked-image convention, model inputs, joint extraction, back-projection."""
import cv2
import numpy as np
import pytest

from sim2real_vla_ros.core.policy.bundle import ImagePreprocessor
from sim2real_vla_ros.core.policy.observation import (LatencyWindow, apply_mask, background_of, foreground_of, joint_vector,
                                               logits_to_mask, masked_model_input, pixels_to_optical_points)


def test_logits_to_mask_is_the_argmax_and_rejects_bad_logits():
    logits = np.zeros((2, 3, 4, 5), np.float32)
    logits[0, 2, 1, 1] = 5.0
    logits[1, 1] = 1.0
    mask = logits_to_mask(logits)
    assert mask.dtype == np.uint8 and mask.shape == (2, 4, 5)
    assert mask[0, 1, 1] == 2 and mask[0].sum() == 2 and np.all(mask[1] == 1)
    logits[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        logits_to_mask(logits)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        logits_to_mask(np.zeros((3, 4, 5)))


def test_masked_image_background_is_exactly_black_and_recoverable():
    rgb = np.full((4, 4, 3), 90, np.uint8)
    rgb[0, 0] = 0  # a pure-black object pixel
    mask = np.zeros((4, 4), np.uint8)
    mask[:2, :2] = 1
    masked = apply_mask(rgb, mask)
    assert not masked[mask == 0].any()
    assert masked[0, 0].tolist() == [1, 1, 1], "a black object pixel is lifted so it is not background"
    assert np.array_equal(masked[0, 1], rgb[0, 1])
    assert np.array_equal(background_of(masked), mask == 0)


def test_masked_model_input_zeroes_background_after_normalisation():
    preprocess = ImagePreprocessor(4, 4, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    rgb = np.full((4, 4, 3), 255, np.uint8)
    mask = np.zeros((4, 4), np.uint8)
    mask[1:3, 1:3] = 2
    tensor = masked_model_input(preprocess, apply_mask(rgb, mask))
    assert tensor.shape == (1, 3, 4, 4) and tensor.dtype == np.float32
    assert np.all(tensor[:, :, mask == 0] == 0.0), "background is 0 after normalisation, not -mean/std"
    assert np.allclose(tensor[:, :, mask == 2], 1.0)


def test_masked_model_input_resizes_the_background_with_nearest():
    preprocess = ImagePreprocessor(2, 2)
    masked = np.zeros((4, 4, 3), np.uint8)
    masked[:2, :2] = 200  # top-left quadrant is an object
    tensor = masked_model_input(preprocess, masked)
    assert tensor[0, :, 0, 0].min() > 0 and np.all(tensor[0, :, 1, 1] == 0)


def _masked_model_input_by_assignment(preprocessor, masked_rgb):
    """The original implementation (boolean-index assignment), kept here as the reference."""
    tensor = preprocessor(masked_rgb)
    background = ~np.any(masked_rgb, axis=2)
    height, width = tensor.shape[2], tensor.shape[3]
    if background.shape != (height, width):
        background = cv2.resize(background.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0
    tensor[:, :, background] = 0.0
    return tensor


@pytest.mark.parametrize("size", [(96, 128), (480, 640), (97, 131)])
@pytest.mark.parametrize("preprocess", [
    ImagePreprocessor(96, 128, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
    ImagePreprocessor(96, 128, "bgr", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
], ids=["rgb", "bgr_imagenet"])
def test_masked_model_input_has_the_same_bits_as_boolean_assignment(size, preprocess):
    """The multiply-by-foreground version must not change a single bit (no -0.0 either)."""
    rng = np.random.default_rng(sum(size))
    rgb = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)
    rgb[:5, :5] = 0  # pure-black object pixels, lifted by apply_mask
    mask = (rng.random(size) < 0.4).astype(np.uint8) * rng.integers(1, 5, size=size, dtype=np.uint8)
    masked = apply_mask(rgb, mask)
    fast, reference = masked_model_input(preprocess, masked), _masked_model_input_by_assignment(preprocess, masked)
    assert fast.dtype == reference.dtype == np.float32 and fast.shape == reference.shape == (1, 3, 96, 128)
    assert fast.tobytes() == reference.tobytes()
    assert not np.any(np.signbit(fast[fast == 0])), "background must be +0.0"


def test_foreground_is_the_complement_of_background_for_any_image():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 3, size=(20, 30, 3), dtype=np.uint8)  # many exactly-black and one-channel pixels
    expected = np.any(image, axis=2)
    np.testing.assert_array_equal(foreground_of(image), expected)
    np.testing.assert_array_equal(background_of(image), ~expected)
    np.testing.assert_array_equal(foreground_of(image.astype(np.float32)), expected)


def test_joint_vector_picks_names_in_order_and_names_what_is_wrong():
    names = ["right_joint1", "left_joint2", "left_joint1"]
    assert joint_vector(names, [3.0, 2.0, 1.0], ["left_joint1", "left_joint2"]).tolist() == [1.0, 2.0]
    with pytest.raises(ValueError, match="left_joint3"):
        joint_vector(names, [3.0, 2.0, 1.0], ["left_joint3"])
    with pytest.raises(ValueError, match="non-finite.*left_joint2"):
        joint_vector(names, [3.0, float("nan"), 1.0], ["left_joint2"])
    with pytest.raises(ValueError, match="3 names but 2 positions"):
        joint_vector(names, [1.0, 2.0], ["left_joint1"])


def test_pixels_back_project_onto_their_rays():
    intrinsics = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    points = pixels_to_optical_points(np.array([[50, 40], [150, 40]]), intrinsics, 2.0)
    np.testing.assert_allclose(points, [[0, 0, 2], [2, 0, 2]])
    reprojected = (intrinsics @ points.T).T
    np.testing.assert_allclose(reprojected[:, :2] / reprojected[:, 2:], [[50, 40], [150, 40]])


def test_latency_window_percentiles():
    window = LatencyWindow(capacity=100)
    assert window.stats()["count"] == 0
    for value in range(1, 201):
        window.add(float(value))
    stats = window.stats()
    assert stats["count"] == 100 and stats["max_ms"] == 200.0 and stats["p50_ms"] == pytest.approx(150.5)
    assert window.total == 200
