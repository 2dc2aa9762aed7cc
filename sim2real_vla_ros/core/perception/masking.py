"""The camera/mask step as a plain object: a paired camera set in, masks and masked images out.

:class:`CameraMasker` is what the camera_mask node does with each camera set (ROS-free):
resize every frame to the model resolution, run the mask model once for the set (batched
when the model's batch axis is dynamic), take the per-pixel argmax and build the masked
image (``core.policy.observation.apply_mask``: background exactly black). The node
(``nodes/camera_mask.py``) and the in-process runner (``sim/in_process.py``) both call it,
so the images the planner, validator and actors see are made by one implementation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np

from sim2real_vla_ros.core.policy.observation import apply_mask, logits_to_mask, resize_rgb


@dataclass(frozen=True)
class MaskedFrame:
    """One camera's result: the class mask and the masked RGB image, both at the model resolution."""

    mask: np.ndarray  # uint8 (H, W) class ids, 0 = background
    masked: np.ndarray  # uint8 (H, W, 3)


class CameraMasker:
    """Resize, mask model, argmax, masked image for one camera set.

    Parameters
    ----------
    bundle : Bundle
        The model bundle (its ``mask`` model, image preprocessor and mask classes).
    """

    def __init__(self, bundle) -> None:
        image = bundle.manifest.image
        self.bundle = bundle
        self.model_size: Tuple[int, int] = (image.width, image.height)
        self.n_classes = len(bundle.manifest.mask_classes)
        self.model = bundle.model("mask")
        # A dynamic batch axis lets the cameras of a set share one model call.
        self.batched = isinstance(self.model.input_specs["image"].shape[0], str)

    def process(self, frames: Sequence[np.ndarray]) -> Tuple[MaskedFrame, ...]:
        """Masks and masked images of a set of uint8 RGB frames (any size), in the given order.

        Raises
        ------
        Exception
            Whatever the model run raises, or ValueError for a class id the bundle does not
            have; the caller counts it and publishes nothing for the set.
        """
        resized = [resize_rgb(rgb, *self.model_size) for rgb in frames]
        masks = self.masks(resized)
        return tuple(MaskedFrame(mask, apply_mask(rgb, mask)) for rgb, mask in zip(resized, masks))

    def masks(self, resized: Sequence[np.ndarray]) -> np.ndarray:
        """uint8 [B, H, W] class masks of frames already at the model resolution."""
        inputs = [self.bundle.preprocess_image(rgb) for rgb in resized]
        if self.batched:
            logits = self.model.run({"image": np.concatenate(inputs, axis=0)})["mask_logits"]
        else:
            logits = np.concatenate([self.model.run({"image": x})["mask_logits"] for x in inputs], axis=0)
        masks = logits_to_mask(logits)
        if masks.max(initial=0) >= self.n_classes:
            raise ValueError(f"mask model produced class {int(masks.max())} but the bundle has {self.n_classes}")
        return masks
