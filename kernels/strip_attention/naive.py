"""Plain-PyTorch reference of CSWin cross-shaped stripe attention (the attention part; LePE is added by the caller).

The first half of the heads attends inside vertical stripes (full height, ``stripe_width`` columns), the second
half inside horizontal stripes (``stripe_width`` rows, full width), as CSWin's two branches. When the stripe width
does not divide the map, the last stripe is narrower (computed as padding with masked tokens). A stripe width of
at least the map size gives full attention.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _vertical_stripes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, stripe_width: int,
                      scale: float) -> torch.Tensor:
    """Attention inside stripes of all H rows x ``stripe_width`` columns; ``[B, H, W, heads, D]`` in and out."""
    b, h, w, heads, d = q.shape
    sw = min(stripe_width, w)
    wp = -(-w // sw) * sw

    def stripes(t: torch.Tensor) -> torch.Tensor:  # -> [B * W/sw, heads, H*sw, D]
        t = F.pad(t.float(), (0, 0, 0, 0, 0, wp - w)).view(b, h, wp // sw, sw, heads, d)
        return t.permute(0, 2, 4, 1, 3, 5).reshape(-1, heads, h * sw, d)

    logits = (stripes(q) * scale) @ stripes(k).transpose(-2, -1)
    is_pad = (torch.arange(wp, device=q.device) >= w).view(wp // sw, 1, sw).expand(wp // sw, h, sw).reshape(-1, h * sw)
    logits = logits.view(b, wp // sw, heads, h * sw, h * sw).masked_fill(is_pad[None, :, None, None, :], float("-inf"))
    out = torch.softmax(logits, dim=-1).view(-1, heads, h * sw, h * sw) @ stripes(v)
    out = out.view(b, wp // sw, heads, h, sw, d).permute(0, 3, 1, 4, 2, 5).reshape(b, h, wp, heads, d)
    return out[:, :, :w]


def strip_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, stripe_width: int,
                              scale: float) -> torch.Tensor:
    """q, k, v ``[B, H, W, heads, D]`` (heads even) -> ``[B, H, W, heads, D]`` in q's dtype."""
    half = q.shape[3] // 2
    vertical = _vertical_stripes(q[:, :, :, :half], k[:, :, :, :half], v[:, :, :, :half], stripe_width, scale)
    # Horizontal stripes are vertical stripes of the transposed map.
    qt, kt, vt = (t[:, :, :, half:].transpose(1, 2) for t in (q, k, v))
    horizontal = _vertical_stripes(qt, kt, vt, stripe_width, scale).transpose(1, 2)
    return torch.cat([vertical, horizontal], dim=3).to(q.dtype).contiguous()
