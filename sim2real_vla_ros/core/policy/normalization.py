"""Action normalisation shared by training and deployment.

The actor's FAST tokens describe a chunk in normalised units, and `joint_state` inputs are
normalised the same way, so the robot must use exactly the statistics the model was
trained with. Two kinds are supported, matching openpi (quantile) and LeRobot (mean_std):

- quantile: ``y = (x - q01) / (q99 - q01 + 1e-6) * 2 - 1``
- mean_std: ``y = (x - mean) / std``
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np

QUANTILE_EPS = 1e-6
KINDS = {"quantile": ("q01", "q99"), "mean_std": ("mean", "std")}


@dataclass(frozen=True, eq=False)
class ActionNormalizer:
    """Maps actions between robot units and the model's normalised units.

    Parameters
    ----------
    kind : str
        ``"quantile"`` (stats ``q01``, ``q99``) or ``"mean_std"`` (stats ``mean``, ``std``).
    stats : Mapping[str, array-like]
        One vector per statistic, all of the same length (the action dimension).

    Raises
    ------
    ValueError
        If the kind is unknown, a statistic is missing, not finite, of the wrong shape,
        or degenerate (``q99 <= q01`` or ``std <= 0``); the message names the statistic
        and the index.
    """

    kind: str
    stats: Mapping[str, np.ndarray] = field(repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"normalization kind '{self.kind}' is unknown; use one of {sorted(KINDS)}")
        names = KINDS[self.kind]
        missing = [n for n in names if n not in self.stats]
        extra = [n for n in self.stats if n not in names]
        if missing or extra:
            raise ValueError(f"normalization kind '{self.kind}' needs exactly {list(names)}; "
                             f"missing {missing}, unexpected {extra}")
        arrays = {name: _stat_vector(name, self.stats[name]) for name in names}
        dims = {a.shape[0] for a in arrays.values()}
        if len(dims) != 1:
            raise ValueError("normalization stats have different lengths: "
                             + ", ".join(f"{n}={a.shape[0]}" for n, a in arrays.items()))
        low, high = arrays[names[0]], arrays[names[1]]
        if self.kind == "quantile":
            bad = np.flatnonzero(high <= low)
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"normalization q99 must be > q01 in every dimension; "
                                 f"dimension {i} has q01={low[i]:g}, q99={high[i]:g}")
        else:
            bad = np.flatnonzero(high <= 0)
            if bad.size:
                i = int(bad[0])
                raise ValueError(f"normalization std must be > 0 in every dimension; dimension {i} has std={high[i]:g}")
        object.__setattr__(self, "stats", MappingProxyType(arrays))

    @classmethod
    def quantile(cls, q01, q99) -> "ActionNormalizer":
        """Quantile normaliser (openpi convention) from 1% and 99% quantiles."""
        return cls("quantile", {"q01": q01, "q99": q99})

    @classmethod
    def mean_std(cls, mean, std) -> "ActionNormalizer":
        """Mean/std normaliser (LeRobot convention)."""
        return cls("mean_std", {"mean": mean, "std": std})

    @property
    def dim(self) -> int:
        """Action dimension the statistics cover."""
        return int(next(iter(self.stats.values())).shape[0])

    def _offset_and_range(self, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        # Written as y = (x - offset) / span * gain + bias so both kinds share one path.
        if self.kind == "quantile":
            q01, q99 = self.stats["q01"], self.stats["q99"]
            return q01.astype(dtype), (q99 - q01 + QUANTILE_EPS).astype(dtype)
        return self.stats["mean"].astype(dtype), self.stats["std"].astype(dtype)

    def normalize(self, x) -> np.ndarray:
        """Robot units -> normalised units.

        Parameters
        ----------
        x : array-like, shape (..., dim)
            Floating-point actions; float32 stays float32, anything else becomes float64.

        Returns
        -------
        numpy.ndarray
            Same shape as ``x``. Values outside the training range are not clipped.
        """
        x = self._as_actions(x)
        offset, span = self._offset_and_range(x.dtype)
        y = (x - offset) / span
        if self.kind == "quantile":
            y = y * 2 - 1
        return y

    def unnormalize(self, y) -> np.ndarray:
        """Normalised units -> robot units; the exact inverse of :meth:`normalize`."""
        y = self._as_actions(y)
        offset, span = self._offset_and_range(y.dtype)
        if self.kind == "quantile":
            y = (y + 1) / 2
        return y * span + offset

    def _as_actions(self, x) -> np.ndarray:
        arr = np.asarray(x)
        if arr.dtype != np.float32:
            arr = arr.astype(np.float64)
        if arr.ndim == 0 or arr.shape[-1] != self.dim:
            raise ValueError(f"actions must have shape (..., {self.dim}), got {arr.shape}")
        return arr

    def to_dict(self) -> dict:
        """Plain-Python form, as written in a bundle manifest."""
        return {name: [float(v) for v in values] for name, values in self.stats.items()}


def _stat_vector(name: str, values) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"normalization {name} must be a list of numbers ({exc})") from None
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"normalization {name} must be a non-empty 1-D list of numbers, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"normalization {name} has a non-finite value at index {int(np.flatnonzero(~np.isfinite(arr))[0])}")
    arr = arr.copy()
    arr.setflags(write=False)  # frozen dataclass: keep the statistics immutable too
    return arr
