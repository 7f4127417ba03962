"""Distances between two batches of features: multi-kernel MMD (DAN) and CORAL's second-order statistics."""

from __future__ import annotations

from typing import Sequence

import torch

# DAN's Gaussian family: bandwidths 2^k times the batch's mean squared distance, k = -3..1
MMD_SCALES = (0.125, 0.25, 0.5, 1.0, 2.0)


def multi_kernel(features: torch.Tensor, scales: Sequence[float] = MMD_SCALES) -> torch.Tensor:
    """The sum of Gaussian kernels ``exp(-|x - y|^2 / (2 s m))`` over ``scales`` s, with m the batch's mean
    squared distance (taken without gradient, so the bandwidth follows the features but is not optimised)."""
    squared = torch.cdist(features, features).pow(2)
    mean = squared.detach().mean().clamp(min=1e-8)
    return sum(torch.exp(-squared / (2.0 * scale * mean)) for scale in scales)


def mk_mmd(source: torch.Tensor, target: torch.Tensor, scales: Sequence[float] = MMD_SCALES) -> torch.Tensor:
    """The unbiased squared multi-kernel MMD between two batches (Gretton et al. 2012): within-domain means
    leave out the diagonal; may dip below zero when the distributions match."""
    n, m = len(source), len(target)
    if n < 2 or m < 2:
        return source.sum() * 0.0
    kernel = multi_kernel(torch.cat([source, target]).float(), scales)
    ss, tt, st = kernel[:n, :n], kernel[n:, n:], kernel[:n, n:]
    within_s = (ss.sum() - ss.diagonal().sum()) / (n * (n - 1))
    within_t = (tt.sum() - tt.diagonal().sum()) / (m * (m - 1))
    return within_s + within_t - 2.0 * st.mean()


def coral(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the two batches' means plus that of their covariance matrices (Deep CORAL's
    second-order alignment, with the first-order term the reference implementation adds)."""
    source, target = source.float(), target.float()
    if len(source) < 2 or len(target) < 2:
        return source.sum() * 0.0
    mean_s, mean_t = source.mean(0), target.mean(0)
    cov_s, cov_t = torch.cov(source.T), torch.cov(target.T)
    return (mean_s - mean_t).pow(2).mean() + (cov_s - cov_t).pow(2).mean()
