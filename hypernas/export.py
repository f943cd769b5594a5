"""A derived network for use outside hypernas: ``hypernas derive MODEL --s ... --export DIR``.

:func:`export_derived` writes three files into ``DIR``:

* ``genotype.json``: the architecture (op of each edge of the normal and the reduction
  cell), ``s``, the op order, the configuration needed to rebuild the network (width,
  cells, nodes, data set and input shape), its weight count, where it came from, and
  how the input is normalised;
* ``weights.pt``: the derived network's ``state_dict`` (BatchNorm statistics re-estimated
  on training images, as for the reported accuracies), in a file that holds tensors and
  plain data only, so ``torch.load(..., weights_only=True)`` reads it without running
  code (:func:`hypernas.train.load_state` explains the choice against safetensors);
  :func:`load_derived` rebuilds the :class:`~hypernas.derived.DerivedNetwork` from the
  folder;
* ``model.onnx``: the network as an ONNX graph (input ``x``: normalised images
  ``(batch, C, H, W)``, any batch size; output ``logits``), for ONNX Runtime and other
  engines: the inference copy (:meth:`~hypernas.derived.DerivedNetwork.folded`) exported
  and checked against PyTorch by :func:`hypernas.latency.export_onnx`.

The files are written into a staging folder beside ``DIR`` and moved into place only
when all three are complete, so a failed export leaves ``DIR`` as it was.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from . import __version__
from .errors import UserError, check_writable_folder
from .latency import export_onnx

FILES = ("genotype.json", "weights.pt", "model.onnx")
FORMAT = 1


def describe(model, genotype, s, bn_images, source) -> dict:
    """The contents of ``genotype.json``."""
    from .data import DATASETS
    from .genotype import op_counts, weight_count_of
    cfg = model.cfg
    d = DATASETS[cfg["dataset"]]
    return dict(
        format=FORMAT, hypernas=__version__, source=str(source),
        ops=list(model.ops), s=[float(v) for v in s],
        normal=list(genotype.normal), reduce=list(genotype.reduce),
        op_counts=op_counts(genotype),
        weights=weight_count_of(genotype, cfg["width"], cfg["n_cells"]),
        network=dict(width=cfg["width"], n_cells=cfg["n_cells"], n_nodes=cfg["n_nodes"],
                     dataset=cfg["dataset"], input_shape=[d["channels"], d["size"], d["size"]],
                     classes=d["classes"]),
        input=dict(normalise="x = (pixels / 255 - mean) / std, per channel",
                   mean=list(d["mean"]), std=list(d["std"])),
        bn_recalibrated_on=f"the first {bn_images} training images of {cfg['dataset']}",
        config=cfg,
    )


def export_derived(model, s, folder, splits, bn_images=None, source="") -> dict:
    """Derive the network of ``s`` from ``model``, re-estimate its BatchNorm statistics
    on ``bn_images`` training images of ``splits`` (default: the run's ``bn_images``),
    and write ``genotype.json``, ``weights.pt`` and ``model.onnx`` into ``folder``
    (created if needed; these three files replaced, others left alone).  Returns the
    description written to ``genotype.json``."""
    from .complexity import check_complexity
    from .derived import DerivedNetwork
    from .evaluation import recalibrate_bn
    folder = check_writable_folder(folder, "export folder")
    s = check_complexity(s, model.ops)
    if s.dim() != 1:
        raise UserError("export takes one complexity vector s")
    if bn_images is None:
        bn_images = model.cfg.get("bn_images") or 2000
    genotype = model.genotype(s)
    net = DerivedNetwork(model, genotype, s.to(next(model.parameters()).device))
    recalibrate_bn(net, splits, bn_images)
    info = describe(model, genotype, s.tolist(), bn_images, source)
    folder.parent.mkdir(parents=True, exist_ok=True)
    stage = folder.with_name(f".{folder.name}.export-{os.getpid()}")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        (stage / "genotype.json").write_text(json.dumps(info, indent=1) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
        torch.save(dict(format=FORMAT, hypernas=__version__, genotype=info, state_dict=state),
                   stage / "weights.pt")
        export_onnx(net.folded(), info["network"]["input_shape"], stage / "model.onnx")
        folder.mkdir(exist_ok=True)
        for name in FILES:
            os.replace(stage / name, folder / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return info


def load_derived(folder):
    """The :class:`~hypernas.derived.DerivedNetwork` exported into ``folder`` (eval mode,
    on the CPU), read without unpickling code."""
    from .derived import DerivedNetwork
    from .genotype import Genotype
    from .presets import upgrade
    from .train import build_model
    folder = Path(folder)
    path = folder / "weights.pt"
    if not path.is_file():
        raise UserError(f"{folder} holds no exported network (no weights.pt); export one with "
                        "hypernas derive MODEL --s ... --export FOLDER")
    try:
        st = torch.load(path, map_location="cpu", weights_only=True)
        info = st["genotype"]
        cfg = upgrade(info["config"])
    except Exception as err:  # noqa: BLE001  (any unreadable file: one message)
        raise UserError(f"{path} is not a readable hypernas export ({type(err).__name__}); "
                        "export the network again") from None
    if st.get("format", 1) > FORMAT:
        raise UserError(f"{path} was written by hypernas {st.get('hypernas')}; install it to load the file")
    with torch.random.fork_rng(devices=[]):      # building draws initial weights: keep the caller's RNG
        model = build_model(cfg, info["network"]["input_shape"][0], info["network"]["classes"])
    s = torch.tensor(info["s"])
    net = DerivedNetwork(model, Genotype(tuple(info["normal"]), tuple(info["reduce"])), s)
    net.load_state_dict(st["state_dict"])
    return net.eval()
