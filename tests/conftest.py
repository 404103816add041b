"""Test-wide setup: Triton runs through its interpreter on machines without a GPU (set before triton's import)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests run small shapes: one intra-op thread is faster than two there, and immune to a busy neighbour core
# (OpenMP threads spin-wait; with another process on the second core a tiny backward took 80x longer).
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
