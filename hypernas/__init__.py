"""hypernas: one supernet training, a whole family of architectures.

Companion library to S. A. Firsov's 2025 thesis: DARTS with a Gumbel-Softmax relaxation
and a hypernetwork that maps a complexity vector ``s`` (one penalty per op type) to the
architecture logits of every edge.

Importing it changes nothing in the process: the CLI and :class:`~hypernas.train.Trainer`
apply the fast path's process settings (:func:`hypernas.fast.process.retain_freed_memory`).
"""
__version__ = "0.1.0"

from .complexity import check_complexity, sample_simplex  # noqa: E402,F401
from .genotype import Genotype, op_counts, weight_count_of  # noqa: E402,F401
from .model import HyperSupernet  # noqa: E402,F401
from .presets import EXPERIMENTS, PRESETS, PROFILES, config  # noqa: E402,F401
