"""Plain-PyTorch reference of SHViT single-head attention over all tokens."""
from __future__ import annotations

import torch


def single_head_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """q, k ``[B, N, Dqk]``, v ``[B, N, Dv]`` -> ``softmax(q k^T * scale) v``, ``[B, N, Dv]`` in q's dtype."""
    weights = torch.softmax((q.float() @ k.float().transpose(-2, -1)) * scale, dim=-1)
    return (weights @ v.float()).to(q.dtype)
