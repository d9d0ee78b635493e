"""Which side of the train/validation split each near-duplicate group goes to, per class.

A group is *positive* when any of its tiles is positive. Within each class (positive groups,
negative groups), every group gets a seeded uniform number from its key
(:func:`side_value`: a sha256 of the seed and the group's smallest tile hash), and the
``k`` groups with the smallest numbers go to validation, where

    k = clip(round(val_fraction * n), 1, n - 1)   for a class of n >= 2 groups,
    k = 0                                          for a class of one group (it trains).

So each class gets ``val_fraction`` of its groups to within half a group, validation holds a
positive group whenever there are two, and the training side keeps at least one group of
every class that has two. The old rule (a group is validation when its number is below
``val_fraction``) was a coin per group: on 300 SYNTHETIC tiles (11 positive lesion groups,
``val_fraction`` 0.15) the validation side had no positive for 40 of 200 seeds.

**Stability.** The side still depends only on the group keys and the seed, not on the order
of files or records. Adding a group to a class moves at most one group of that class across
the split (the ``k`` smallest of ``n`` numbers keep their place among ``n + 1`` unless the
new number displaces the last of them, and ``k`` grows by at most one), so adding ``m``
groups moves at most ``m`` existing ones, besides the groups whose key the new tiles change.
"""

from __future__ import annotations

import hashlib

import numpy as np


def side_value(key: np.ndarray, seed: int) -> float:
    """A group key (2 uint64 words) -> a seeded uniform number in [0, 1)."""
    text = f"{seed}:{int(key[0]):016x}{int(key[1]):016x}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "big") / 2.0**64


def validation_count(groups: int, val_fraction: float) -> int:
    """How many of a class's ``groups`` go to validation (see the module docstring)."""
    if groups < 2:
        return 0
    k = int(np.floor(val_fraction * groups + 0.5))
    return min(max(k, 1), groups - 1)


def stratified_sides(
    keys: np.ndarray, positive: np.ndarray, val_fraction: float, seed: int
) -> np.ndarray:
    """The side of each group: ``keys`` (G, 2) uint64 group keys, ``positive`` (G,) bool
    -> (G,) bool, True = validation. Deterministic for a seed; independent of group order
    (ties between numbers are broken by the key)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be within (0, 1), got {val_fraction}")
    keys = np.asarray(keys, dtype=np.uint64).reshape(-1, 2)
    positive = np.asarray(positive, dtype=bool)
    if positive.shape != (keys.shape[0],):
        raise ValueError("one positive flag per group key is needed")
    values = np.array([side_value(k, seed) for k in keys], dtype=np.float64)
    is_val = np.zeros(keys.shape[0], dtype=bool)
    for members in (np.flatnonzero(positive), np.flatnonzero(~positive)):
        k = validation_count(members.size, val_fraction)
        if not k:
            continue
        sub = keys[members]
        order = np.lexsort((sub[:, 1], sub[:, 0], values[members]))
        is_val[members[order[:k]]] = True
    return is_val
