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
    length_batches,
    resolve_precision,
)
from shiftlab.shift._likelihood import Decoding, NllGap, nll_gap
from shiftlab.shift._mmd import KERNELS, MMDResult, median_bandwidth, mmd_test
from shiftlab.shift._paired import PairedShift, paired_shift

__all__ = [
    "KERNELS",
    "ClassifierTestResult",
    "Decoding",
    "EmbeddingCache",
    "MMDResult",
    "NllGap",
    "PairedShift",
    "TextEncoder",
    "centroid_cosine_distance",
    "classifier_test",
    "default_encoder_path",
    "embed",
    "encoder_identity",
    "frechet_distance",
    "length_batches",
    "median_bandwidth",
    "mmd_test",
    "nll_gap",
    "paired_shift",
    "resolve_precision",
]
