"""Shared test setup: tiny models run fastest single-threaded on the 2-core CI machine (the thread
pool's overhead dominates their small matmuls, and concurrent test processes oversubscribe)."""

import torch

torch.set_num_threads(1)
