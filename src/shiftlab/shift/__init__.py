"""Shift measurement: text encoders and two-sample statistics with honest p-values."""

from __future__ import annotations

from shiftlab.shift._classifier import ClassifierTestResult, classifier_test
from shiftlab.shift._distances import centroid_cosine_distance, frechet_distance
from shiftlab.shift._encoders import (
    EmbeddingCache,
    TextEncoder,
    default_encoder_path,
    embed,
    encoder_identity,
)
from shiftlab.shift._likelihood import LikelihoodShift, likelihood_shift
from shiftlab.shift._mmd import KERNELS, MMDResult, median_bandwidth, mmd_test
from shiftlab.shift._paired import PairedShift, paired_shift

__all__ = [
    "KERNELS",
    "ClassifierTestResult",
    "EmbeddingCache",
    "LikelihoodShift",
    "MMDResult",
    "PairedShift",
    "TextEncoder",
    "centroid_cosine_distance",
    "classifier_test",
    "default_encoder_path",
    "embed",
    "encoder_identity",
    "frechet_distance",
    "likelihood_shift",
    "median_bandwidth",
    "mmd_test",
    "paired_shift",
]
