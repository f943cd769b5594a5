"""Configuration as plain data: presets, experiments, profiles.

A run's configuration is one flat dict, built by :func:`config` from

* a **preset**: how the method is implemented. ``authors_code`` follows the thesis
  author's public code (intsystems/Firsov_KOT_DARTS); ``thesis_text`` follows the text.
  Every difference between the two is a named option (:data:`DIFFERENCES`);
* an **experiment** (exp1-exp3 of the thesis): data set, op set, epochs, and the four
  complexity vectors A-D in the thesis's op order;
* a **profile**: how much of it to run (``smoke`` for tests, ``quick`` for the default
  book build, ``paper`` for the thesis's scale);
* explicit overrides (``epochs``, ``kappa``, ``width``, any other key).
"""
from __future__ import annotations

from .model import CLASSIFIERS

#: op of each role under each preset; the thesis orders ops (pool, ident, conv) for 3
#: ops and (pool1, pool2, ident, conv1, conv2) for 5.  ``authors_code``'s five ops are
#: in the order of the authors' ``DARTS_five`` (average pooling first); hypernas before
#: 2026-12-02 put max pooling first (the committed exp2 seed-0 run, whose results file
#: records its order).  The published five-op vectors give both pools the same value.
OP_SETS = {
    "authors_code": {
        3: ("avg_pool_3x3", "skip_connect", "sep_conv_3x3"),
        5: ("avg_pool_3x3", "max_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5"),
    },
    "thesis_text": {
        3: ("max_pool_3x3", "identity", "conv_3x3"),
        5: ("max_pool_3x3", "avg_pool_3x3", "identity", "conv_3x3", "conv_5x5"),
    },
}

PRESETS = {
    "authors_code": dict(
        per_image=True,            # one Gumbel sample per image and edge
        rbf_sign=1.0,              # w_r = softmax(+||s - s_ref||^2)
        n_reference=5,
        learn_points=True,
        reference_init="randn",
        classifier="own",          # interpolated from s with its own points (model.Classifier);
                                   # "shared" before 2026-12-02 (the committed seed-0 runs)
        cost_weights="softmax",    # Cost(softmax(alpha); s)
        kappa=50.0,
        batch_size=64,
        optimizer="sgd+adam",
        w_lr=0.025, w_momentum=0.9, w_weight_decay=3e-4, w_lr_min=1e-3, grad_clip=5.0,
        h_lr=1e-3, h_betas=(0.5, 0.999), h_weight_decay=1e-3,
        temperature_schedule="step",  # t = start - step * epoch ...
        temperature_start=1.0, temperature_step=0.08,
        temperature_end=0.2,          # (the linear schedule's; unused here)
        temperature_floor=0.2,        # ... never below this (the code has no floor)
        width=16, n_cells=3, n_nodes=4,  # C of the first cell, cells, intermediate nodes per cell
        log_every=20,                 # steps per log line
    ),
    "thesis_text": dict(
        per_image=False,           # one Gumbel sample per batch and edge
        rbf_sign=-1.0,             # w_r = softmax(-||s - s_ref||^2)
        n_reference=None,          # k + 1: the simplex's vertices and barycentre
        learn_points=False,
        reference_init="simplex",
        classifier="linear",       # one fully connected layer
        cost_weights="softmax_t",  # Cost(softmax(alpha / t); s)
        kappa=50.0,                # not given in the text; the code's value
        batch_size=64,             # not given in the text; the code's value
        optimizer="adam",          # Adam for weights and hypernetwork
        w_lr=1e-3, w_momentum=None, w_weight_decay=0.0, w_lr_min=None, grad_clip=None,
        h_lr=1e-3, h_betas=(0.9, 0.999), h_weight_decay=0.0,
        temperature_schedule="linear",  # start -> end over the epochs
        temperature_start=1.0, temperature_end=0.2,
        temperature_step=0.08,          # (the step schedule's; unused here)
        temperature_floor=0.2,
        width=16, n_cells=3, n_nodes=4,
        log_every=20,
    ),
}

#: (aspect, option, thesis text, authors' code) for the reproduction notes
DIFFERENCES = [
    ("convolution op", "ops", "conv_3x3 / conv_5x5 (ReLU-Conv-BN)", "sep_conv_3x3 / sep_conv_5x5"),
    ("pooling op in exp 1 and 3", "ops", "max_pool_3x3", "avg_pool_3x3 (count_include_pad=False)"),
    ("Gumbel sample", "per_image", "one per batch and edge", "one per image and edge"),
    ("hypernetwork distance sign", "rbf_sign", "softmax(-||s - s_ref||^2)", "softmax(+||s - s_ref||^2)"),
    ("reference points", "n_reference, learn_points, reference_init",
     "fixed (not given; we use the k vertices + barycentre)", "5, learned, randn init"),
    ("classifier", "classifier", "one linear layer",
     "linear layer interpolated from s with its own reference points for W and b"),
    ("cost weights", "cost_weights", "softmax(alpha / t)", "softmax(alpha)"),
    ("kappa, batch", "kappa, batch_size", "not given (we use 50, 64)", "50, 64"),
    ("optimiser", "optimizer, w_*, h_*, grad_clip", "Adam for all (lr not given; we use 1e-3)",
     "SGD 0.025 momentum 0.9 wd 3e-4 cosine to 1e-3, clip 5; Adam 1e-3 (0.5, 0.999) wd 1e-3"),
    ("temperature", "temperature_schedule, temperature_floor", "linear 1.0 -> 0.2",
     "1.0 - 0.08 epoch (we floor it at 0.2)"),
]

#: where our ``authors_code`` preset knowingly differs from the authors' code
DEVIATIONS = [
    ("reference points", "one set of m = 5 learned points shared by every edge and cell type",
     "one hypernetwork (points and logits) per node and cell type"),
    ("temperature", "1.0 - 0.08 epoch, floored at 0.2 (temperature_floor)",
     "1.0 - 0.08 epoch with no floor (negative after epoch 12)"),
    ("augmentation", "RandomAffine / RandomVerticalFlip / RandomCrop / RandomHorizontalFlip "
     "re-implemented on tensor batches (same parameters, nearest-neighbour sampling)",
     "torchvision transforms on PIL images"),
    ("validation", "soft supernet (op weights softmax(alpha(s) / t)) at the uniform s = (1/k, ..., 1/k), "
     "in eval mode, on 5000 images of the second half (paper profile)",
     "the whole second half, with the model called without s, i.e. at s = 0 (off the simplex), "
     "and Gumbel sampling still on in eval mode (two calls on one batch differ)"),
    ("accuracy in the tables", "derived discrete network, weights inherited, BatchNorm re-estimated",
     "not settled by the code: it derives genotypes and has separate configurations that "
     "retrain a given genotype; the text does not say which the tables used"),
]

_A3 = {"A": (0.33, 0.33, 0.33), "B": (0.15, 0.15, 0.70),
       "C": (0.70, 0.15, 0.15), "D": (0.15, 0.70, 0.15)}
_A5 = {"A": (0.2, 0.2, 0.2, 0.2, 0.2), "B": (0.077, 0.077, 0.077, 0.38, 0.38),
       "C": (0.38, 0.38, 0.077, 0.077, 0.077), "D": (0.11, 0.11, 0.55, 0.11, 0.11)}

#: each experiment: its title, data set and training-time augmentation, number of ops,
#: epochs and the complexity vectors A-D
EXPERIMENTS = {
    "exp1": dict(title="Experiment 1: Fashion-MNIST", dataset="fashion_mnist", augment="affine_vflip",
                 n_ops=3, epochs=10, complexities=_A3),
    "exp2": dict(title="Experiment 2: Fashion-MNIST", dataset="fashion_mnist", augment="affine_vflip",
                 n_ops=5, epochs=20, complexities=_A5),
    "exp3": dict(title="Experiment 3: CIFAR-10", dataset="cifar10", augment="crop_hflip",
                 n_ops=3, epochs=50, complexities=_A3),
}


def experiment_title(experiment: str) -> str:
    """``Experiment 1: Fashion-MNIST, 3 ops, 10 epochs`` (the book's page title)."""
    exp = EXPERIMENTS[experiment]
    return f"{exp['title']}, {exp['n_ops']} ops, {exp['epochs']} epochs"

#: what each architecture's s penalises, in the thesis's words
LABELS = {"A": "uniform penalty", "B": "convolutions penalised",
          "C": "pooling penalised", "D": "identity penalised"}

#: ``None`` = everything / the experiment's own value
PROFILES = {
    "smoke": dict(train_images=256, val_images=128, test_images=512, bn_images=256, epochs=1,
                  checkpoint_every=4, latency_repeats=3),
    "quick": dict(train_images=2560, val_images=1000, test_images=2000, bn_images=500,
                  epochs=2, checkpoint_every=20, latency_repeats=5),
    "paper": dict(train_images=None, val_images=5000, test_images=None, bn_images=2000,
                  epochs=None, checkpoint_every=100, latency_repeats=30),
}

#: fields that change neither training nor evaluation (where a run executes and how it
#: reports progress): a results file stays valid under other values of them
PLACEMENT_FIELDS = {"device", "data_dir", "checkpoint_every", "progress", "cuda_graphs"}
#: fields that do not change what training computes (those, and how the trained model is
#: evaluated); a checkpoint may be resumed under other values of them
RUNTIME_FIELDS = PLACEMENT_FIELDS | {"complexities", "test_images", "bn_images", "latency_repeats"}


def config(experiment="exp1", preset="authors_code", profile="smoke", seed=0, **overrides):
    """The flat configuration dict of one run."""
    for name, table in (("experiment", EXPERIMENTS), ("preset", PRESETS), ("profile", PROFILES)):
        value = locals()[name]
        if value not in table:
            from .errors import UserError
            raise UserError(f"unknown {name} {value!r}; choose one of {', '.join(sorted(table))}")
    exp, pre, prof = EXPERIMENTS[experiment], PRESETS[preset], PROFILES[profile]
    k = exp["n_ops"]
    cfg = dict(experiment=experiment, preset=preset, profile=profile, seed=int(seed),
               dataset=exp["dataset"], augment=exp["augment"], ops=list(OP_SETS[preset][k]),
               complexities={a: normalized(v) for a, v in exp["complexities"].items()},
               device="auto", data_dir=None, progress=True, cuda_graphs=False)
    cfg.update(pre)
    cfg.update({key: v for key, v in prof.items()})
    cfg["epochs"] = exp["epochs"] if prof["epochs"] is None else prof["epochs"]
    if cfg["n_reference"] is None:
        cfg["n_reference"] = k + 1
    unknown = set(overrides) - set(cfg)
    if unknown:
        from .errors import UserError
        raise UserError(f"unknown config key(s) {sorted(unknown)}; known: {sorted(cfg)}")
    cfg.update({key: v for key, v in overrides.items() if v is not None})
    cfg["h_betas"] = list(cfg["h_betas"])
    validate(cfg)
    return cfg


#: what each numeric field must be: "count" (an integer >= 1), "count?" (the same or
#: None = all), "rate" (a finite number >= 0), "rate?" (the same or None)
FIELD_KINDS = {
    **dict.fromkeys(("epochs", "width", "n_cells", "n_nodes", "batch_size", "log_every",
                     "checkpoint_every", "latency_repeats", "n_reference"), "count"),
    **dict.fromkeys(("train_images", "val_images", "test_images", "bn_images"), "count?"),
    **dict.fromkeys(("kappa", "w_lr", "h_lr", "w_weight_decay", "h_weight_decay", "temperature_start",
                     "temperature_end", "temperature_step", "temperature_floor"), "rate"),
    **dict.fromkeys(("w_momentum", "w_lr_min", "grad_clip"), "rate?"),
}
#: the named options and their choices
CHOICES = {
    "optimizer": ("sgd+adam", "adam"), "classifier": CLASSIFIERS,
    "cost_weights": ("softmax", "softmax_t"), "temperature_schedule": ("step", "linear"),
    "augment": ("affine_vflip", "crop_hflip", "none"), "reference_init": ("randn", "simplex"),
}
#: the command-line option of a field, where it has one
OPTIONS = {"epochs": "--epochs", "width": "--width", "kappa": "--kappa", "seed": "--seed",
           "classifier": "--classifier"}


def validate(cfg: dict) -> dict:
    """Raise :class:`~hypernas.errors.UserError` naming the first field of ``cfg`` that
    no run could use (a count that is not a positive integer, a rate that is negative or
    not finite, an unknown option, a complexity vector off the simplex)."""
    import math
    from numbers import Integral, Real
    from .errors import UserError

    def bad(key, value, need):
        name = f"{key} ({OPTIONS[key]})" if key in OPTIONS else key
        raise UserError(f"{name} must be {need}; got {value!r}")

    for key, kind in FIELD_KINDS.items():
        if key not in cfg or (cfg[key] is None and kind.endswith("?")):
            continue
        v = cfg[key]
        if kind.startswith("count"):
            if not isinstance(v, Integral) or isinstance(v, bool) or v < 1:
                bad(key, v, "a whole number of at least 1"
                    + (" (or None for all)" if kind.endswith("?") else ""))
        elif not isinstance(v, Real) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
            bad(key, v, "a finite number of at least 0")
    if "seed" in cfg and (not isinstance(cfg["seed"], Integral) or isinstance(cfg["seed"], bool)):
        bad("seed", cfg["seed"], "a whole number")
    for key, choices in CHOICES.items():
        if key in cfg and cfg[key] not in choices:
            bad(key, cfg[key], "one of " + ", ".join(map(repr, choices)))
    betas = cfg.get("h_betas")
    if betas is not None and (len(betas) != 2 or not all(isinstance(b, Real) and 0 <= b < 1 for b in betas)):
        bad("h_betas", betas, "two numbers in [0, 1)")
    if "complexities" in cfg and "ops" in cfg:
        from .complexity import check_complexity
        for name, s in cfg["complexities"].items():
            try:
                check_complexity(s, cfg["ops"])
            except UserError as err:
                raise UserError(f"complexities[{name!r}]: {err}") from None
    return cfg


def upgrade(cfg: dict) -> dict:
    """A configuration written by an older hypernas, in today's keys: before 2026-12-02
    the classifier was the boolean ``classifier_from_s`` (True = today's ``"shared"``),
    and the temperature's start, end and step were constants of the code (1.0, 0.2, 0.08)."""
    cfg = dict(cfg)
    if "classifier_from_s" in cfg:
        cfg["classifier"] = "shared" if cfg.pop("classifier_from_s") else "linear"
    for key, value in TEMPERATURE_DEFAULTS.items():
        cfg.setdefault(key, value)
    return cfg


#: the temperature fields' values in configurations written before they were fields
TEMPERATURE_DEFAULTS = dict(temperature_start=1.0, temperature_end=0.2, temperature_step=0.08)


def normalized(s) -> list:
    """The published vectors are rounded (``(0.33, 0.33, 0.33)`` sums to 0.99); we feed
    them divided by their sum, which keeps their ratios."""
    total = sum(s)
    return [round(v / total, 6) for v in s]


def run_name(cfg) -> str:
    return f"{cfg['experiment']}-{cfg['preset']}-seed{cfg['seed']}"
