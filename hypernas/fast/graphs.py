"""The training step replayed from a CUDA graph (opt-in, ``cuda_graphs=True``).

Status: not yet verified on a GPU (see :class:`GraphStep`); ``scripts/gpu_runs.py``
checks graph against eager steps before it lets a run use them.
"""
from __future__ import annotations

import torch


class GraphStep:
    """The training step replayed from a CUDA graph.

    A step is 3-5 thousand small kernels (C = 16, batch 64); launched one by one from
    Python they leave a GPU idle most of the time.  Captured once, all of them launch
    with one call.  Temperature and learning rates are constants of a capture, so the
    step is captured again whenever they change (each epoch).  After each change the
    first ``warmup`` steps run eagerly on a side stream, as CUDA needs before a capture.
    Every call, eager or replayed, is one real training step on its own batch: the
    inputs are copied into the capture's buffers, and the parameters, optimiser state
    and BatchNorm statistics are updated in place.

    Opt-in (``cuda_graphs=True``) until a GPU run has verified a capture (its history:
    the performance page).  ``scripts/gpu_runs.py`` checks graph against eager steps
    before it lets a run use them."""

    def __init__(self, trainer, warmup=2):
        self.trainer, self.warmup = trainer, warmup
        self.key, self.graph, self.inputs, self.out, self.eager_left = None, None, None, None, warmup

    def _zero_grad(self):
        self.trainer.w_opt.zero_grad(set_to_none=True)
        self.trainer.h_opt.zero_grad(set_to_none=True)

    def __call__(self, x, y, s, t):
        tr = self.trainer
        key = (t, tuple(g["lr"] for opt in (tr.w_opt, tr.h_opt) for g in opt.param_groups))
        if key != self.key:
            self.key, self.graph, self.inputs, self.out, self.eager_left = key, None, None, None, self.warmup
        if self.eager_left > 0:
            self.eager_left -= 1
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                self._zero_grad()
                out = tr._step(x, y, s, t)
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            self.inputs = (x.clone(), y.clone(), s.clone())
            self._zero_grad()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                self.out = tr._step(*self.inputs, t)
            self.graph = graph
        else:
            for buffer, value in zip(self.inputs, (x, y, s)):
                buffer.copy_(value)
        self.graph.replay()
        return self.out
