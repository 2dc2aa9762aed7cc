"""Unit tests of the keypoint and mask overlays (pure core, OpenCV drawing)."""

import numpy as np
import pytest

from sim2real_vla_ros.core.perception.overlay import (
    ARM_COLORS,
    CLIPPED_MARKER_COLOR,
    blend_mask,
    class_palette,
    draw_affordances,
    mask_to_color,
)

BACKGROUND = (40, 40, 40)


def gray_image(height=480, width=640):
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    return image


def test_output_is_a_new_image_of_the_same_shape_and_the_input_is_untouched():
    image = gray_image()
    original = image.copy()
    out = draw_affordances(image, {"left": np.array([[100.0, 200.0], [300.0, 250.0]])}, index=2, label="running")
    assert out.shape == image.shape and out.dtype == np.uint8
    assert out is not image and not np.shares_memory(out, image)
    np.testing.assert_array_equal(image, original)
    assert np.any(out != original)


def test_keypoints_are_coloured_per_arm_and_inactive_arms_are_not_drawn():
    keypoints = {
        "left": np.array([[100.0, 200.0], [200.0, 300.0], [300.0, 250.0]]),
        "right": np.array([[500.0, 400.0], [450.0, 350.0], [400.0, 380.0]]),
    }
    out = draw_affordances(gray_image(), keypoints, active={"left": True, "right": True}, index=0)
    for arm, points in keypoints.items():
        for x, y in points.astype(int):
            assert tuple(out[y, x]) == ARM_COLORS[arm], f"{arm} point ({x}, {y})"
    assert ARM_COLORS["left"] != ARM_COLORS["right"]
    # A connecting line passes through the midpoint of the first two left points.
    assert tuple(out[250, 150]) != BACKGROUND

    out = draw_affordances(gray_image(), keypoints, active={"left": True, "right": False})
    for x, y in keypoints["right"].astype(int):
        assert tuple(out[y, x]) == BACKGROUND


def test_outside_points_are_clipped_onto_the_border_with_a_marker():
    out = draw_affordances(gray_image(), {"left": np.array([[320.0, 240.0], [900.0, 240.0]])})
    assert tuple(out[240, 639]) == ARM_COLORS["left"]  # clipped point drawn at the right border
    window = out[225:256, 620:640].reshape(-1, 3)
    assert any(tuple(pixel) == CLIPPED_MARKER_COLOR for pixel in window)


def test_non_finite_points_are_skipped():
    out = draw_affordances(gray_image(), {"right": np.array([[np.nan, 10.0], [320.0, 240.0]])})
    assert tuple(out[240, 320]) == ARM_COLORS["right"]


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="RGB uint8"):
        draw_affordances(np.zeros((48, 64), np.uint8), {})
    with pytest.raises(ValueError, match="RGB uint8"):
        draw_affordances(np.zeros((48, 64, 3), np.float32), {})
    with pytest.raises(ValueError, match=r"\(P, 2\)"):
        draw_affordances(gray_image(), {"left": np.zeros((3, 3))})


def test_mask_to_color_uses_a_fixed_palette():
    colored = mask_to_color(np.array([[0, 1], [2, 3]], dtype=np.uint8), n_classes=4)
    assert colored.shape == (2, 2, 3) and colored.dtype == np.uint8
    # Background black; hue steps of the golden ratio at S = 0.85, V = 1 (hand-computed HSV -> RGB).
    np.testing.assert_array_equal(colored[0, 0], [0, 0, 0])
    np.testing.assert_array_equal(colored[0, 1], [255, 38, 38])
    np.testing.assert_array_equal(colored[1, 0], [38, 101, 255])
    assert len({tuple(color) for color in class_palette(12)}) == 12


def test_mask_to_color_rejects_bad_masks():
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 3\)"):
        mask_to_color(np.array([[0, 3]]), n_classes=3)
    with pytest.raises(ValueError, match="2-D integer"):
        mask_to_color(np.zeros((2, 2), np.float32), n_classes=3)


def test_blend_mask_tints_only_foreground():
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    mask = np.array([[0, 1], [0, 0]], dtype=np.uint8)
    out = blend_mask(image, mask, n_classes=2, alpha=0.2)
    np.testing.assert_array_equal(out[0, 0], [100, 100, 100])
    # 0.8 * 100 + 0.2 * (255, 38, 38) = (131, 87.6, 87.6)
    np.testing.assert_array_equal(out[0, 1], [131, 88, 88])
    np.testing.assert_array_equal(image, np.full((2, 2, 3), 100))
    with pytest.raises(ValueError, match="does not match"):
        blend_mask(image, np.zeros((3, 3), np.uint8), n_classes=2)


def test_the_run_panel_puts_both_wrists_and_the_validator_beside_the_overlay():
    from sim2real_vla_ros.core.perception.overlay import compose_panel

    top = np.zeros((240, 320, 3), np.uint8)
    wrist = np.full((480, 640, 3), 200, np.uint8)
    panel = compose_panel(top, {"left": wrist}, {"left": 0.75, "right": None}, "phase running")
    assert panel.shape == (240 + 36, 320 + 160, 3)  # one size per top size, whatever the wrists' size
    assert panel[60, 400].mean() > 150  # the left wrist tile (upper right), resized
    assert panel[180, 400].mean() < 120  # no right wrist image: a grey tile, labelled
    bar = panel[240 + 25, 4 + 110:4 + 210]  # the left arm's probability bar: 3/4 filled in green
    green = (bar[:, 1] > 120) & (bar[:, 0] < 100)
    assert 0.65 < green.mean() < 0.85
    assert compose_panel(top, {}, {}, "").shape == panel.shape
