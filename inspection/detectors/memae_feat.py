"""Registry entry for the feature-space Mem-AE (``memae_feat``); the code lives in :mod:`.memae`.

Gong et al., "Memorizing Normality to Detect Anomaly: Memory-augmented Deep Autoencoder for
Unsupervised Anomaly Detection", ICCV 2019 (arXiv:1904.02639), applied to frozen
EfficientNet-Lite0 features instead of pixels.
"""

from __future__ import annotations

from inspection.detectors.memae import MemAEFeatConfig, MemAEFeatDetector

__all__ = ["DETECTOR", "MemAEFeatConfig", "MemAEFeatDetector"]

DETECTOR = MemAEFeatDetector
