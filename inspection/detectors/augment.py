"""Training-time augmentation of normal images for the gradient-trained detectors (albumentations).

A detector learns "normal" from a few hundred photographs; a fixed line camera still varies from
part to part without any defect: the part sits a pixel or two off, a degree rotated, the lamp
ages, the sensor is noisier on a warm day, focus drifts slightly. ``augment: nuisance`` shows
the detector that variation while it trains, so it is not learned as the exact normal. It stays
deliberately small and layout-preserving: no flips or large rotations (a mirrored connector or a
missing feature must stay a defect), no colour changes, nothing that paints structure. Images
are augmented per batch and epoch, before the model's own normalisation (photometric
standardisation included), seeded by the detector's seed so a fit stays reproducible.

``none`` trains on the images as they are. PaDiM (a closed-form Gaussian fit) and CutPaste
(its own cut-and-paste augmentations, as in its paper) do not take this option.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

AugmentKind = Literal["none", "nuisance"]

#: An augmentation of one (H, W, 3) uint8 image to another of the same shape.
ImageAugment = Callable[[np.ndarray], np.ndarray]


def build_augment(kind: AugmentKind, seed: int) -> ImageAugment | None:
    """The seeded per-image augmentation for ``kind``, or None for ``none``."""
    if kind == "none":
        return None
    if kind != "nuisance":
        raise ValueError(f"unknown augmentation {kind!r}; expected 'none' or 'nuisance'")
    import albumentations as A
    import cv2

    pipeline = A.Compose(
        [
            # placement: a pixel or few of shift, a degree or two, a percent of scale
            A.Affine(
                translate_percent=(-0.02, 0.02),
                rotate=(-2, 2),
                scale=(0.98, 1.02),
                border_mode=cv2.BORDER_REFLECT_101,
                p=0.5,
            ),
            # lighting: gamma and a little brightness / contrast (what standardisation leaves)
            A.RandomGamma(gamma_limit=(90, 110), p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.05, contrast_limit=0.05, p=0.5),
            # sensor and optics: noise, a slight defocus
            A.GaussNoise(std_range=(0.005, 0.02), p=0.3),
            A.GaussianBlur(blur_limit=(3, 3), sigma_limit=(0.1, 0.6), p=0.2),
        ],
        seed=seed,
    )

    def apply(image: np.ndarray) -> np.ndarray:
        out: np.ndarray = pipeline(image=image)["image"]
        return out

    return apply


def augment_batch(augment: ImageAugment, images: np.ndarray) -> np.ndarray:
    """Apply ``augment`` to each image of (N, H, W, 3) uint8; same shape and dtype."""
    return np.stack([augment(np.ascontiguousarray(image)) for image in images])
