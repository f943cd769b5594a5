"""The fast path: how the method is computed quickly, never what it computes.

* :mod:`~hypernas.fast.kernels` (+ ``csrc/``): three compiled CPU kernels;
* :mod:`~hypernas.fast.dispatch`: every kernel-or-eager choice, in one place;
* :mod:`~hypernas.fast.fused`: the fused (all edges of a node at once) and shared forms
  of the ops, named by the op records of :mod:`hypernas.ops`;
* :mod:`~hypernas.fast.inference`: inference folding and the faster drop-in forms of
  plain modules (same state dict);
* :mod:`~hypernas.fast.graphs`: the training step replayed from a CUDA graph;
* :mod:`~hypernas.fast.process`: process settings (glibc malloc), applied by the CLI and
  the trainer, never on import.

Nothing here imports the study modules; only :mod:`~hypernas.fast.inference` imports a
method module (:mod:`hypernas.ops`, whose plain modules it rewrites).
"""
