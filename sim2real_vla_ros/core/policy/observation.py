"""Turning camera frames and joint states into model inputs, and the masked-image convention.

The camera/mask node publishes, per camera, a masked RGB image at the model resolution in
which background pixels (mask class 0) are exactly (0, 0, 0) and object pixels never are
(an object pixel that happens to be pure black is lifted to (1, 1, 1), a change of 1/255).
Consumers (planner, validator, actors) can therefore recover the background exactly from the
masked image alone and build the model input the bundle schema asks for: the normalised image
with background pixels set to 0 *after* normalisation (``masked_model_input``), which is how
the models were trained (zeroing before normalisation would give -mean/std instead).

Also here: argmax of mask logits, joint-vector extraction by name, pixel back-projection for
rviz markers and a latency window for diagnostics. Pure numpy/OpenCV; no rclpy.
"""
from __future__ import annotations

from collections import deque
from typing import Mapping, Sequence

import numpy as np

BACKGROUND_CLASS = 0
MAX_MASK_CLASSES = 256  # the mask is published as mono8


def logits_to_mask(logits: np.ndarray) -> np.ndarray:
    """Per-pixel argmax of mask logits.

    Parameters
    ----------
    logits : np.ndarray
        float [B, C, H, W] class scores.

    Returns
    -------
    np.ndarray
        uint8 [B, H, W] class ids (0 = background).

    Raises
    ------
    ValueError
        Wrong rank, more than 256 classes, or non-finite scores (a failed model output is
        never turned into an all-background mask).
    """
    logits = np.asarray(logits)
    if logits.ndim != 4:
        raise ValueError(f"mask logits must be [B, C, H, W], got shape {list(logits.shape)}")
    if not 1 <= logits.shape[1] <= MAX_MASK_CLASSES:
        raise ValueError(f"mask logits have {logits.shape[1]} classes; mono8 masks hold 1..{MAX_MASK_CLASSES}")
    if not np.all(np.isfinite(logits)):
        raise ValueError("mask logits contain NaN/Inf")
    return np.argmax(logits, axis=1).astype(np.uint8)


def resize_rgb(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an RGB uint8 image with area interpolation (what the bundle preprocessor uses)."""
    import cv2

    if rgb.shape[:2] == (height, width):
        return rgb
    return cv2.resize(rgb, (int(width), int(height)), interpolation=cv2.INTER_AREA)


def apply_mask(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked image: background (class 0) exactly black, object pixels never exactly black.

    Parameters
    ----------
    rgb : np.ndarray
        uint8 (H, W, 3).
    mask : np.ndarray
        integer (H, W) class ids, same height and width.

    Returns
    -------
    np.ndarray
        A new uint8 (H, W, 3) image.
    """
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"apply_mask: rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if mask.shape != rgb.shape[:2]:
        raise ValueError(f"apply_mask: mask shape {mask.shape} does not match image {rgb.shape[:2]}")
    foreground = mask != BACKGROUND_CLASS
    black = ~np.any(rgb, axis=2)
    masked = np.where(foreground[..., None], rgb, 0).astype(np.uint8)
    masked[foreground & black] = 1  # keep "all zero" meaning background only
    return masked


def foreground_of(masked_rgb: np.ndarray) -> np.ndarray:
    """Boolean (H, W): True where a masked image (see `apply_mask`) is an object pixel (not exactly black)."""
    if masked_rgb.ndim == 3 and masked_rgb.shape[2] == 3 and np.issubdtype(masked_rgb.dtype, np.integer):
        # OR of the three channel planes: ~15x faster than np.any(axis=2) on a 96x128 image.
        return (masked_rgb[:, :, 0] | masked_rgb[:, :, 1] | masked_rgb[:, :, 2]) != 0
    return np.any(masked_rgb, axis=2)


def background_of(masked_rgb: np.ndarray) -> np.ndarray:
    """Boolean (H, W): True where a masked image (see `apply_mask`) is background."""
    return ~foreground_of(masked_rgb)


def masked_model_input(preprocessor, masked_rgb: np.ndarray) -> np.ndarray:
    """Model input of a masked image: preprocess, then zero the background after normalisation.

    Parameters
    ----------
    preprocessor : callable
        The bundle's ``ImagePreprocessor`` (uint8 (H, W, 3) -> float32 [1, 3, h, w]).
    masked_rgb : np.ndarray
        uint8 (H, W, 3) masked image (background exactly black).

    Returns
    -------
    np.ndarray
        float32 [1, 3, h, w]; background values are +0.0, object values are the
        preprocessor's output unchanged. Training the reference bundle uses this very
        function (``make_reference_bundle.model_input_images``), so models see the same bits.
    """
    import cv2

    tensor = preprocessor(masked_rgb)
    foreground = foreground_of(masked_rgb).view(np.uint8)
    height, width = tensor.shape[2], tensor.shape[3]
    if foreground.shape != (height, width):
        # Nearest keeps the background exact; area interpolation would blend it with objects.
        foreground = cv2.resize(foreground, (width, height), interpolation=cv2.INTER_NEAREST)
    # Multiplying by the 0/1 foreground is ~15x cheaper than boolean-index assignment
    # (tensor[:, :, background] = 0). A negative background value times 0 gives -0.0; adding
    # +0.0 turns it into +0.0 and leaves every other value as it is, so the result has the
    # same bits as the assignment (for the finite values a uint8 image preprocesses to).
    tensor *= foreground.astype(np.float32)
    tensor += np.float32(0.0)
    return tensor


def joint_vector(names: Sequence[str], positions: Sequence[float], wanted: Sequence[str]) -> np.ndarray:
    """Positions of ``wanted`` joints (in that order) from a JointState's names/positions.

    Raises
    ------
    ValueError
        Names and positions differ in length, a wanted joint is missing, or a value is not finite.
    """
    if len(names) != len(positions):
        raise ValueError(f"joint state has {len(names)} names but {len(positions)} positions")
    index = {name: i for i, name in enumerate(names)}
    missing = [name for name in wanted if name not in index]
    if missing:
        raise ValueError(f"joint state lacks {missing}")
    values = np.array([positions[index[name]] for name in wanted], dtype=np.float64)
    if not np.all(np.isfinite(values)):
        bad = [name for name, value in zip(wanted, values) if not np.isfinite(value)]
        raise ValueError(f"joint state has non-finite values for {bad}")
    return values


def pixels_to_optical_points(pixels: np.ndarray, intrinsics: np.ndarray, depth_m: float) -> np.ndarray:
    """Back-project (N, 2) pixels to (N, 3) points at ``depth_m`` in the camera's optical frame.

    The optical frame is z forward, x right, y down (REP 103), so a keypoint marker drawn
    there lies on the ray through that pixel.
    """
    pixels = np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
    fx, fy = float(intrinsics[0, 0]), float(intrinsics[1, 1])
    cx, cy = float(intrinsics[0, 2]), float(intrinsics[1, 2])
    if fx <= 0 or fy <= 0:
        raise ValueError(f"intrinsics need positive focal lengths, got fx={fx}, fy={fy}")
    x = (pixels[:, 0] - cx) / fx * depth_m
    y = (pixels[:, 1] - cy) / fy * depth_m
    return np.stack([x, y, np.full_like(x, float(depth_m))], axis=1)


class LatencyWindow:
    """Percentiles of the most recent latency samples (ms), for /diagnostics.

    Parameters
    ----------
    capacity : int
        Samples kept; older ones fall off so the numbers describe the present.
    """

    def __init__(self, capacity: int = 500) -> None:
        if int(capacity) < 1:
            raise ValueError(f"LatencyWindow: capacity must be >= 1, got {capacity}")
        self._samples: deque = deque(maxlen=int(capacity))
        self.total = 0

    def add(self, milliseconds: float) -> None:
        self._samples.append(float(milliseconds))
        self.total += 1

    @property
    def last_ms(self) -> float:
        """The newest sample (ms); NaN while empty."""
        samples = self._samples
        return samples[-1] if samples else float("nan")

    def stats(self) -> Mapping[str, float]:
        """``{"p50_ms", "p99_ms", "max_ms", "count"}``; times are NaN while empty."""
        if not self._samples:
            nan = float("nan")
            return {"p50_ms": nan, "p99_ms": nan, "max_ms": nan, "count": 0}
        samples = np.asarray(self._samples, dtype=np.float64)
        p50, p99 = np.percentile(samples, [50, 99])
        return {"p50_ms": float(p50), "p99_ms": float(p99), "max_ms": float(samples.max()),
                "count": int(samples.size)}


__all__ = ["logits_to_mask", "resize_rgb", "apply_mask", "foreground_of", "background_of", "masked_model_input",
           "joint_vector", "pixels_to_optical_points", "LatencyWindow", "BACKGROUND_CLASS", "MAX_MASK_CLASSES"]
