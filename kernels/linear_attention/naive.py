"""Plain-PyTorch reference of L2ViT linear global attention (LGA).

For each head (ReLU feature map phi): ``out_n = temperature * phi(q_n) (phi(K)^T V) / max(phi(q_n) . sum_m phi(k_m), floor)``.
Sums over tokens are taken in fp32: in fp16 they overflow for large N.
"""
from __future__ import annotations

import torch


def linear_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, temperature: torch.Tensor,
                               floor: float) -> torch.Tensor:
    """q, k, v ``[B, N, heads, D]``, temperature ``[heads]`` -> ``[B, N, heads, D]`` in q's dtype."""
    qf, kf = torch.relu(q.float()), torch.relu(k.float())
    state = torch.einsum("bnhd,bnhe->bhde", kf, v.float()) * temperature.float()[None, :, None, None]
    k_sum = kf.sum(dim=1)  # [B, heads, D]
    denominator = torch.einsum("bnhd,bhd->bnh", qf, k_sum).clamp_min(floor)
    out = torch.einsum("bnhd,bhde->bnhe", qf, state) / denominator[..., None]
    return out.to(q.dtype)
