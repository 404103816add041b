"""Plain-PyTorch reference of Swin window attention, straight from the (B, H, W, heads, D) layout.

Semantics (the Triton kernel matches them exactly):
- The map is zero-padded at the bottom/right to multiples of the window size M, then rolled by ``-shift``
  (Swin's cyclic shift), cut into M x M windows, attended per window and head, and put back.
- Pad tokens are masked as keys (they never receive weight) and dropped as queries.
- With a shift, keys from a different Swin region than the query (the wrapped-around parts) are masked.
- The relative position bias comes from a table ``[heads, 2M-1, 2M-1]`` indexed by (dy + M-1, dx + M-1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_MASKED = -1e9  # finite, so a row that is fully masked (a pad query) stays finite and gradients stay finite


def relative_bias(table: torch.Tensor, window_size: int) -> torch.Tensor:
    """Gather a ``[heads, 2M-1, 2M-1]`` table into the ``[heads, M*M, M*M]`` bias of one window."""
    m = window_size
    coords = torch.stack(torch.meshgrid(torch.arange(m), torch.arange(m), indexing="ij")).flatten(1)  # [2, M*M]
    rel = coords[:, :, None] - coords[:, None, :] + (m - 1)  # [2, M*M, M*M], query minus key
    return table[:, rel[0].to(table.device), rel[1].to(table.device)]


def _region(index: torch.Tensor, padded: int, window_size: int, shift_size: int) -> torch.Tensor:
    """Swin's shift-mask region (0, 1 or 2) of each position of the rolled, padded axis."""
    return (index >= padded - window_size).long() + (index >= padded - shift_size).long()


def window_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, rel_pos_table: torch.Tensor | None,
                               window_size: int, shift_size: int, scale: float) -> torch.Tensor:
    """q, k, v ``[B, H, W, heads, D]`` -> ``[B, H, W, heads, D]`` (computed in fp32, returned in q's dtype)."""
    b, h, w, heads, d = q.shape
    m, s = window_size, shift_size
    hp, wp = -(-h // m) * m, -(-w // m) * m
    out_dtype = q.dtype

    def to_windows(t: torch.Tensor) -> torch.Tensor:  # [B, H, W, heads, D] -> [B*nW, heads, M*M, D]
        t = F.pad(t.float(), (0, 0, 0, 0, 0, wp - w, 0, hp - h))
        if s:
            t = torch.roll(t, shifts=(-s, -s), dims=(1, 2))
        t = t.view(b, hp // m, m, wp // m, m, heads, d).permute(0, 1, 3, 5, 2, 4, 6)
        return t.reshape(-1, heads, m * m, d)

    qw, kw, vw = to_windows(q), to_windows(k), to_windows(v)
    logits = (qw * scale) @ kw.transpose(-2, -1)  # [B*nW, heads, M*M, M*M]
    if rel_pos_table is not None:
        logits = logits + relative_bias(rel_pos_table.float(), m)[None]

    # Per-token facts on the rolled, padded grid: is it a pad token, and which shift region is it in.
    rows, cols = torch.arange(hp, device=q.device), torch.arange(wp, device=q.device)
    src_rows, src_cols = (rows + s) % hp, (cols + s) % wp
    is_pad = (src_rows[:, None] >= h) | (src_cols[None, :] >= w)  # [Hp, Wp]
    region = _region(rows, hp, m, s)[:, None] * 3 + _region(cols, wp, m, s)[None, :] if s else torch.zeros(
        hp, wp, dtype=torch.long, device=q.device)

    def per_window(t: torch.Tensor) -> torch.Tensor:  # [Hp, Wp] -> [nW, M*M]
        return t.view(hp // m, m, wp // m, m).permute(0, 2, 1, 3).reshape(-1, m * m)

    pad_w, region_w = per_window(is_pad), per_window(region)
    masked = pad_w[:, None, :] | (region_w[:, :, None] != region_w[:, None, :])  # [nW, M*M(q), M*M(k)]
    logits = logits.view(b, -1, heads, m * m, m * m).masked_fill(masked[None, :, None], _MASKED)
    out = torch.softmax(logits, dim=-1).view(-1, heads, m * m, m * m) @ vw  # [B*nW, heads, M*M, D]

    out = out.view(b, hp // m, wp // m, heads, m, m, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(b, hp, wp, heads, d)
    if s:
        out = torch.roll(out, shifts=(s, s), dims=(1, 2))
    return out[:, :h, :w].to(out_dtype).contiguous()
