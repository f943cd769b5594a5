"""Retraining a derived architecture from scratch (``hypernas retrain``).

The tables of this project report each derived architecture with the weights it inherits
from the trained supernet (BatchNorm re-estimated, :mod:`hypernas.derived`).  The
authors' code also has configurations that train a *given* genotype from scratch (its
``OneHotSearchCNNController``); this module does that, with their protocol:

* **Fashion-MNIST** (experiments 1 and 2): ``code/configs/my_configs/fmnist_fine_0.cfg``
  of intsystems/Firsov_KOT_DARTS (the same as ``mini_fmnist_hyper_final/fmnist_fine_0.cfg``
  but for its seed list; it reads the genotypes of the ``5_ops_kappa_50`` search, i.e.
  experiment 2): 100 epochs, batch 96, SGD lr 0.025, momentum 0.9, weight decay 3e-4,
  cosine schedule to 0 over the epochs, gradient clipping at 5, RandomAffine +
  RandomVerticalFlip + Cutout 16, drop-path probability 0.002 x epoch on every op but the
  stride-1 identity, no auxiliary head; the network is the search network (3 cells, C = 16,
  BatchNorm not affine) with one op per edge.
* **CIFAR-10** (experiment 3): ``code/configs/mini_cifar_hyper_final/cifar_fine_0.cfg``:
  the same with 300 epochs, RandomCrop + RandomHorizontalFlip + Cutout 16 and drop-path
  0.00066 x epoch (the authors' ``my_cifar/cifar_fine_0.cfg`` retrains a 20-cell, C = 36
  network for 600 epochs instead: the DARTS evaluation network, not the searched one).

Both configurations train on the whole official training set and use the official test
set as their validation set (``validate_split`` < 0: "using test as validation"); their
best checkpoint is chosen on it.  We report the test accuracy after the last epoch and,
beside it and labelled so, the best epoch's (the authors' selection, optimistic).

Deviations, by design: augmentation runs on tensor batches (:func:`hypernas.data.augment`,
nearest-neighbour sampling) and the classifier is a plain linear layer re-initialised
(the searched one may depend on s).  The ``smoke`` profile (tests) trains 1 epoch on 256
images and tests 512; ``cost`` trains 1 epoch on 1,920 images to measure the speed.  Every
run records its throughput and extrapolates the cost of the paper protocol from it (an
*estimate*; the run's own device and thread count).

``short`` is the protocol compressed to :data:`SHORT_EPOCHS` epochs (a tenth of the
Fashion-MNIST one): whole training set, whole test set, the cosine schedule run to 0 over
those epochs and the drop-path probability following the *fraction* of training done,

    p(epoch) = drop_path_per_epoch * epoch * epochs_of_the_protocol / epochs_run,

so that it ends where the full protocol's would (for ``paper`` this is the authors' rule).
It is a cheaper proxy for ranking architectures (a tenth of the Fashion-MNIST protocol's
cost: see the estimates in ``results/retrain-cost/``), never the authors' protocol: its files say so
(``protocol.epochs_run`` < ``protocol.epochs``), and the results chapter keeps its Kendall
tau apart from the full protocol's.

Results: ``results/<profile>/retrain/<run>-<label>.json`` (``<label>`` A-D, ``m<i>`` for
member i of a family file, ``s<values>`` for a model and an s); ``short`` writes beside the
paper ones, ``results/paper/retrain/<run>-<label>-short.json``.  Written atomically; a
checkpoint beside it (``.checkpoint.pt``) after each epoch lets a stopped run resume.
One process per retraining: it holds ``<name>.lock`` beside them
(:func:`hypernas.runlock.file_lock`), so a second ``hypernas retrain`` of the same one
refuses at once, naming the holder's pid; one started after the first finished finds the
results file and returns it without training again.
"""
from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError

#: the authors' retraining configurations, by data set (see the module docstring)
PROTOCOLS = {
    "fashion_mnist": dict(source="intsystems/Firsov_KOT_DARTS code/configs/my_configs/fmnist_fine_0.cfg",
                          epochs=100, batch_size=96, lr=0.025, momentum=0.9, weight_decay=3e-4,
                          lr_min=0.0, grad_clip=5.0, cutout=16, drop_path_per_epoch=0.002,
                          augment="affine_vflip", train_set="whole official training set",
                          selection="official test set each epoch (validate_split = -10)"),
    "cifar10": dict(source="intsystems/Firsov_KOT_DARTS code/configs/mini_cifar_hyper_final/cifar_fine_0.cfg",
                    epochs=300, batch_size=96, lr=0.025, momentum=0.9, weight_decay=3e-4,
                    lr_min=0.0, grad_clip=5.0, cutout=16, drop_path_per_epoch=0.00066,
                    augment="crop_hflip", train_set="whole official training set",
                    selection="official test set each epoch (validate_split = -10)"),
}
#: epochs of the ``short`` profile (see the module docstring)
SHORT_EPOCHS = 10
#: how much of the protocol to run: ``None`` = the protocol's own value / everything;
#: ``folder`` / ``suffix``: where its files go, ``results/<folder>/retrain/<run>-<label><suffix>.json``
RETRAIN_PROFILES = {"smoke": dict(epochs=1, train_images=256, test_images=512, folder="smoke", suffix=""),
                    "cost": dict(epochs=1, train_images=1920, test_images=512, folder="cost", suffix=""),
                    "short": dict(epochs=SHORT_EPOCHS, train_images=None, test_images=None, folder="paper",
                                  suffix="-short"),
                    "paper": dict(epochs=None, train_images=None, test_images=None, folder="paper", suffix="")}
ARCHS = ("A", "B", "C", "D")


class DropPath(nn.Module):
    """An edge op followed by drop-path (the authors' ``DropPath_``: zero a whole sample's
    output with probability p, scale the rest by 1 / (1 - p)) in training mode."""

    def __init__(self, op, state):
        super().__init__()
        self.op, self.state = op, state

    def forward(self, x):
        y = self.op(x)
        p = self.state["p"]
        if self.training and p > 0:
            keep = 1.0 - p
            mask = torch.rand(y.shape[0], 1, 1, 1, generator=self.state["gen"]).to(y.device) < keep
            y = y * mask / keep
        return y


def cutout(x, length, generator):
    """The authors' Cutout on a normalised batch: a ``length`` square (clipped at the
    border), centred at a uniform pixel, set to 0."""
    B, _, H, W = x.shape
    cy = (torch.rand(B, generator=generator) * H).long().view(B, 1, 1)
    cx = (torch.rand(B, generator=generator) * W).long().view(B, 1, 1)
    ys, xs = torch.arange(H).view(1, H, 1), torch.arange(W).view(1, 1, W)
    inside = ((ys >= cy - length // 2) & (ys < cy + length // 2)
              & (xs >= cx - length // 2) & (xs < cx + length // 2))
    return x.masked_fill(inside.unsqueeze(1).to(x.device), 0.0)


def resolve_source(source, arch=None, member=None, s=None) -> dict:
    """What to retrain: ``{cfg, run, label, genotype, s, inherited_test_acc, kind, path}``
    from a results file + ``arch``, a family file + ``member``, or a model file + ``s``.
    Raises :class:`UserError` (nothing written) for anything missing or wrong."""
    import json
    from .presets import run_name, upgrade
    path = Path(source)
    if not path.exists():
        raise UserError(f"{path} does not exist; give a results file (results/<profile>/<run>.json) "
                        "with --arch, a family file with --member, or a model.pt with --s")
    if path.suffix == ".json":
        if s is not None:
            raise UserError("--s goes with a model file; with a results file give --arch A|B|C|D")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"{path} is not a JSON results file ({err.__class__.__name__}); "
                            "give a results file written by hypernas train") from None
        family = "members" in data
        if family:
            if member is None:
                raise UserError(f"{path} is a family file: give --member N (0 to {len(data['members']) - 1})")
            if not 0 <= member < len(data["members"]):
                raise UserError(f"--member must be 0 to {len(data['members']) - 1}; got {member}")
            results = path.with_name(path.name.replace("-family.json", ".json"))
            if not results.exists():
                raise UserError(f"the results file {results} of family {path} is missing")
            cfg = upgrade(json.loads(results.read_text())["config"])
            m = data["members"][member]
            entry, label = m, f"m{member}"
        else:
            if "architectures" not in data or "config" not in data:
                raise UserError(f"{path} is not a hypernas results file (no config / architectures)")
            if arch not in data["architectures"]:
                raise UserError(f"give --arch, one of {', '.join(data['architectures'])}; got {arch!r}")
            cfg, entry, label = upgrade(data["config"]), data["architectures"][arch], arch
        from .genotype import Genotype
        g = Genotype(tuple(entry["genotype"]["normal"]), tuple(entry["genotype"]["reduce"]))
        return dict(cfg=cfg, run=run_name(cfg), label=label, genotype=g, s=list(entry["s"]),
                    inherited_test_acc=entry.get("test_acc"), kind="family" if family else "results",
                    path=str(path))
    # a model file and s
    from .complexity import check_complexity
    from .train import load_model
    if s is None:
        raise UserError("give --s (a complexity vector in the model's op order) with a model file")
    model = load_model(path, "cpu")
    try:
        st = check_complexity(torch.tensor(s, dtype=torch.float32), model.ops)
    except UserError as err:
        raise UserError(f"--s: {err}") from None
    label = "s" + "-".join(f"{v:.3f}" for v in s)
    return dict(cfg=model.cfg, run=run_name(model.cfg), label=label, genotype=model.genotype(st), s=list(s),
                inherited_test_acc=None, kind="model", path=str(path), model=model)


def build_network(cfg, genotype, s, seed, drop_state):
    """The derived network of ``genotype`` with fresh weights (a newly initialised
    supernet's, under ``seed``), plain convolutions (trainable), drop-path on every op
    but the stride-1 identity and a re-initialised linear classifier."""
    from .data import DATASETS
    from .derived import DerivedNetwork
    from .fast.inference import KernelConv2d
    from .train import build_model
    torch.manual_seed(seed)
    fresh = build_model(cfg, DATASETS[cfg["dataset"]]["channels"])
    net = DerivedNetwork(fresh, genotype, torch.tensor(s, dtype=torch.float32))
    for m in net.modules():
        if type(m) is KernelConv2d:
            m.__class__ = nn.Conv2d
    net.classifier.reset_parameters()
    for cell in net.cells:
        for e, op in enumerate(cell.edge_ops):
            if not isinstance(op, nn.Identity):
                cell.edge_ops[e] = DropPath(op, drop_state)
    return net


def _train_set(splits, n):
    x = torch.cat([splits.x_train, splits.x_val])
    y = torch.cat([splits.y_train, splits.y_val])
    return (x, y) if n is None else (x[:n], y[:n])


def out_path(src, profile, root=None) -> Path:
    from .experiments import workspace
    root = Path(root) if root else workspace() / "results"
    prof = RETRAIN_PROFILES[profile]
    return root / prof.get("folder", profile) / "retrain" / f"{src['run']}-{src['label']}{prof.get('suffix', '')}.json"


def drop_path_prob(per_epoch, epoch, protocol_epochs, epochs_run) -> float:
    """Drop-path probability at ``epoch`` (0-based): the authors' ``per_epoch * epoch``,
    scaled by ``protocol_epochs / epochs_run`` when the protocol is run compressed."""
    return per_epoch * epoch * protocol_epochs / epochs_run


def retrain(src, profile="smoke", root=None, seed=0, data_dir=None, log=print, device="cpu") -> dict:
    """Retrain ``src`` (from :func:`resolve_source`) with the protocol of its data set on
    ``device`` (``"auto"``: a GPU when there is one); returns the results dict after
    writing it atomically (see the module docstring)."""
    from .data import load
    from .errors import check_writable_folder
    from .runlock import file_lock
    from .train import check_device
    dev = check_device(device)
    if profile not in RETRAIN_PROFILES:
        raise UserError(f"unknown retrain profile {profile!r}; choose one of {', '.join(RETRAIN_PROFILES)}")
    splits = load(src["cfg"]["dataset"], data_dir or src["cfg"].get("data_dir"))   # before anything is written
    path = out_path(src, profile, root)
    check_writable_folder(path.parent, "results folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    busy = ("{name} is being retrained by {who}; wait for it to finish, or stop it (kill {pid}) "
            "and run the same command again to resume after its last finished epoch")
    with file_lock(path.with_suffix(".lock"), busy):     # one process per retraining
        return _retrain_locked(src, profile, path, splits, seed, log, dev)


def _same_retraining(res, src, epochs, n, seed) -> bool:
    g = res["architecture"]["genotype"]
    return ((tuple(g["normal"]), tuple(g["reduce"])) == (tuple(src["genotype"].normal), tuple(src["genotype"].reduce))
            and res["protocol"]["epochs_run"] == epochs and res["protocol"]["train_images"] == n
            and res["provenance"]["seed"] == seed)


def _retrain_locked(src, profile, path, splits, seed, log, dev):
    """:func:`retrain` once it holds the retraining's lock."""
    import json
    from .data import augment
    from .evaluation import accuracy
    from .files import temp_beside, write_json
    from .genotype import op_counts, weight_count_of
    from .provenance import device_name, git_commit
    cfg = src["cfg"]
    proto, prof = dict(PROTOCOLS[cfg["dataset"]]), RETRAIN_PROFILES[profile]
    epochs = prof["epochs"] or proto["epochs"]
    x_all, y_all = _train_set(splits, prof["train_images"])
    if path.exists():         # finished already (e.g. by a process that held the lock before us)
        res = json.loads(path.read_text())
        if _same_retraining(res, src, epochs, len(x_all), seed):
            log(f"[retrain] {path.name} exists: retrained already, nothing to do (delete it to retrain again)")
            return res
        raise UserError(f"{path} holds another retraining (architecture, epochs, images or seed differ); "
                        "move it away or give another --results-root")
    ckpt = path.with_suffix(".checkpoint.pt")

    drop = dict(p=0.0, gen=torch.Generator().manual_seed(seed + 1))
    net = build_network(cfg, src["genotype"], src["s"], seed, drop).to(dev)
    opt = torch.optim.SGD(net.parameters(), proto["lr"], momentum=proto["momentum"],
                          weight_decay=proto["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs, eta_min=proto["lr_min"])
    data_gen = torch.Generator().manual_seed(seed + 2)
    history, segments, start, wall = [], [], 0, 0.0
    ident = dict(genotype=list(src["genotype"].normal) + list(src["genotype"].reduce), epochs=epochs,
                 train_images=len(x_all), seed=seed, source=src["path"])
    if ckpt.exists():
        st = torch.load(ckpt, map_location=dev, weights_only=True)
        if st["ident"] == ident:
            net.load_state_dict(st["net"]); opt.load_state_dict(st["opt"]); sched.load_state_dict(st["sched"])
            data_gen.set_state(st["data_gen"].cpu()); drop["gen"].set_state(st["drop_gen"].cpu())
            torch.set_rng_state(st["torch_rng"].cpu())
            history, segments, start, wall = st["history"], st["segments"], st["epoch"], st["wall_s"]
            log(f"[retrain] resuming {path.name} after epoch {start}")
    segments.append(dict(from_epoch=start, device=device_name(dev), threads=torch.get_num_threads(), commit=git_commit(),
                         started=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())))
    bs, n = proto["batch_size"], len(x_all)
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        net.train()
        drop["p"] = drop_path_prob(proto["drop_path_per_epoch"], epoch, proto["epochs"], epochs)
        perm = torch.randperm(n, generator=data_gen)
        tot_loss = tot_correct = 0.0
        t_first = None          # after the first batch: the rate leaves out the warm-up
        for i in range(0, n, bs):
            if i == bs:
                t_first = time.perf_counter()
            idx = perm[i:i + bs]
            x = augment(splits.normalize(x_all[idx]), proto["augment"], data_gen)
            x = cutout(x, proto["cutout"], data_gen).to(dev).contiguous(memory_format=torch.channels_last)
            y = y_all[idx].to(dev)
            opt.zero_grad(set_to_none=True)
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            loss.backward()
            nn.utils.clip_grad_norm_(net.parameters(), proto["grad_clip"])
            opt.step()
            tot_loss += loss.item() * len(idx)
            tot_correct += (logits.argmax(1) == y).sum().item()
        lr = sched.get_last_lr()[0]
        sched.step()
        t1 = time.perf_counter()
        train_s = t1 - t0
        rate = (n - bs) / (t1 - t_first) if t_first is not None else n / train_s
        net.eval()
        acc = accuracy(net, splits, prof["test_images"], device=dev)
        wall += time.perf_counter() - t0
        history.append(dict(epoch=epoch + 1, lr=lr, drop_path=drop["p"], train_loss=tot_loss / n,
                            train_acc=tot_correct / n, test_acc=acc, train_s=train_s,
                            images_per_s=rate))
        log(f"[retrain] {path.name} epoch {epoch + 1}/{epochs}: test {acc:.4f} ({train_s:.0f} s)")
        fd, tmp = temp_beside(ckpt)
        os.close(fd)
        torch.save(dict(ident=ident, net=net.state_dict(), opt=opt.state_dict(), sched=sched.state_dict(),
                        data_gen=data_gen.get_state(), drop_gen=drop["gen"].get_state(),
                        torch_rng=torch.get_rng_state(), history=history, segments=segments,
                        epoch=epoch + 1, wall_s=wall), tmp)
        os.replace(tmp, ckpt)

    from . import __version__
    best = max(history, key=lambda h: h["test_acc"])
    rate = sorted(h["images_per_s"] for h in history)[len(history) // 2]
    full = PROTOCOLS[cfg["dataset"]]
    n_full = len(splits.x_train) + len(splits.x_val)
    est_s = full["epochs"] * n_full / rate
    g = src["genotype"]
    res = dict(
        protocol=dict(proto, epochs_run=epochs, train_images=n, profile=profile,
                      test_images=prof["test_images"] or len(splits.x_test),
                      drop_path=("drop_path_per_epoch x epoch" if epochs == proto["epochs"] else
                                 f"drop_path_per_epoch x epoch x {proto['epochs']} / {epochs} (compressed)"),
                      deviations="augmentation on tensor batches (nearest-neighbour); linear classifier re-initialised"),
        source=dict(kind=src["kind"], path=src["path"], run=src["run"], label=src["label"], s=src["s"],
                    experiment=cfg["experiment"], preset=cfg["preset"], seed=cfg["seed"]),
        architecture=dict(genotype=dict(normal=list(g.normal), reduce=list(g.reduce)), op_counts=op_counts(g),
                          weights=weight_count_of(g, cfg["width"], cfg["n_cells"])),
        inherited_test_acc=src["inherited_test_acc"],
        retrained=dict(final_test_acc=history[-1]["test_acc"], best_test_acc=best["test_acc"],
                       best_epoch=best["epoch"], epochs=history),
        cost=dict(train_images_per_s=rate, threads=torch.get_num_threads(), measured_wall_s=wall,
                  paper_protocol_estimate_h=est_s / 3600,
                  note=(f"estimate: {full['epochs']} epochs x {n_full:,} images at the {rate:.0f} images/s "
                        f"measured by this run ({profile} profile, {device_name(dev)}), "
                        "training only (the per-epoch test adds to it)")),
        provenance=dict(commit=git_commit(), hypernas=__version__, torch=torch.__version__,
                        device=device_name(dev),
                        seed=seed, data_source=splits.source, segments=segments,
                        finished=time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())),
    )
    write_json(res, path)
    ckpt.unlink(missing_ok=True)
    log(f"[retrain] wrote {path}")
    return res


def add_parser(sub, debug_option):
    r = sub.add_parser("retrain", help="train a derived architecture from scratch with the authors' "
                                       "retraining protocol (hypernas.retrain)")
    debug_option(r)
    r.add_argument("source", help="a results file (with --arch), a family file (with --member) or a "
                                  "model.pt (with --s)")
    r.add_argument("--arch", default=None, help="A, B, C or D of a results file")
    r.add_argument("--member", type=int, default=None, help="index of a family file's member")
    r.add_argument("--s", type=float, nargs="+", default=None, help="complexity vector, with a model file")
    r.add_argument("--profile", default="smoke", help="smoke (tests), cost (one epoch of 1,920 images, "
                                                     "to measure the speed), short (the authors' protocol "
                                                     f"compressed to {SHORT_EPOCHS} epochs: a proxy) or paper "
                                                     "(the authors' protocol)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--results-root", default=None, help="default: results/ of the source tree")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--device", default="cpu", help="cpu (default), auto (a GPU when present), cuda, cuda:1 ...")
    return r


def cmd_retrain(a) -> int:
    if a.profile not in RETRAIN_PROFILES:
        raise UserError(f"--profile must be one of {', '.join(RETRAIN_PROFILES)}; got {a.profile!r}")
    src = resolve_source(a.source, a.arch, a.member, a.s)
    from .train import check_device
    check_device(a.device)
    res = retrain(src, a.profile, a.results_root, a.seed, a.data_dir, device=a.device)
    r = res["retrained"]
    inh = res["inherited_test_acc"]
    print(f"{src['run']} {src['label']}: retrained test acc {r['final_test_acc']:.4f} (best epoch "
          f"{r['best_epoch']}: {r['best_test_acc']:.4f}); inherited "
          f"{'n/a' if inh is None else f'{inh:.4f}'}; paper protocol ~{res['cost']['paper_protocol_estimate_h']:.1f} h "
          "(estimate)")
    return 0


def finite(x) -> bool:
    return x is not None and math.isfinite(x)


def spread_members(family: dict, n: int = 8) -> list:
    """Indices of ``n`` distinct members of a family file spread over its weight range
    (evenly spaced ranks by weights, the smallest and the largest included): the members
    to retrain for a Kendall tau over one family."""
    members = family["members"]
    return _evenly_spaced(sorted(range(len(members)), key=lambda i: (members[i]["weights"], i)), n)


def _evenly_spaced(order: list, n: int) -> list:
    """``n`` entries of ``order`` at evenly spaced ranks, the first and the last included
    (all of them when there are no more than ``n``), sorted."""
    if len(order) <= n:
        return sorted(order)
    return sorted({order[round(j * (len(order) - 1) / (n - 1))] for j in range(n)})


def similar_size_members(family: dict, n: int = 8, band: float = 0.2) -> list:
    """Indices of ``n`` members of a family file whose weight counts lie within one band
    ``[w, (1 + band) w]`` (the band holding the most members), spread over their inherited
    test accuracy (evenly spaced ranks, the lowest and the highest included).

    :func:`spread_members` spans the sizes, so the weight count alone already ranks its
    members well; within one band the size barely differs, and a Kendall tau there asks
    whether the inherited weights rank architectures beyond their size.  Fewer than ``n``
    when no band holds ``n``."""
    if not 0 < band < 1:
        raise ValueError(f"band must lie in (0, 1), not {band}")
    members = family["members"]
    order = sorted(range(len(members)), key=lambda i: (members[i]["weights"], i))
    best, hi = [], 0
    for lo in range(len(order)):                  # sliding window over the sorted weights
        hi = max(hi, lo)
        while hi + 1 < len(order) and members[order[hi + 1]]["weights"] <= (1 + band) * members[order[lo]]["weights"]:
            hi += 1
        if hi - lo + 1 > len(best):
            best = order[lo:hi + 1]
    return _evenly_spaced(sorted(best, key=lambda i: (members[i]["test_acc"], i)), n)


# -- reading the retrain files (the results chapter) -----------------------------------------

def collect(root, profile="paper", results_root=None) -> list:
    """Every finished retrain file under ``results/<profile>/retrain/`` (of
    ``results_root`` when given), by name, numbers in names in numeric order (``m45``
    before ``m118``)."""
    import json
    folder = Path(results_root or Path(root) / "results") / profile / "retrain"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"), key=lambda p: natural_key(p.name))]


def natural_key(name: str) -> list:
    """Sort key that orders the digit runs of ``name`` as numbers: ``m45`` < ``m118``."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def in_progress(root, profile="paper", results_root=None) -> list:
    """Retrainings stopped between epochs (a ``.checkpoint.pt`` under
    ``results/<profile>/retrain/`` without its results file, e.g. committed at the end of a
    time-boxed session): ``{name, epoch, epochs, wall_h, last_test_acc}`` each, read with
    ``weights_only`` (no code runs)."""
    folder = Path(results_root or Path(root) / "results") / profile / "retrain"
    rows = []
    for ck in sorted(folder.glob("*.checkpoint.pt"), key=lambda p: natural_key(p.name)):
        name = ck.name[:-len(".checkpoint.pt")]
        if (folder / f"{name}.json").exists():
            continue
        st = torch.load(ck, map_location="cpu", weights_only=True)
        hist = st["history"]
        rows.append(dict(name=name, epoch=st["epoch"], epochs=st["ident"]["epochs"], wall_h=st["wall_s"] / 3600,
                         last_test_acc=hist[-1]["test_acc"] if hist else None))
    return rows


def protocol_table(files):
    """One row per retrained architecture: the two protocols side by side (inherited
    weights + BatchNorm re-estimated, and retrained from scratch: the last epoch's test
    accuracy, and the best epoch's as the authors' configuration picks it), with the wall
    time this retraining took (training and per-epoch tests, all segments; threads in
    :func:`provenance_table`) and the full protocol's estimated hours of training at the
    rate it measured."""
    import pandas as pd
    rows = []
    for r in files:
        src, ret, inh = r["source"], r["retrained"], r["inherited_test_acc"]
        rows.append({"run": src["run"], "arch": src["label"], "weights": r["architecture"]["weights"],
                     "inherited, %": None if inh is None else 100 * inh,
                     "retrained, %": 100 * ret["final_test_acc"],
                     "best epoch, %": 100 * ret["best_test_acc"],
                     "gain, points": None if inh is None else 100 * (ret["final_test_acc"] - inh),
                     "epochs": f"{r['protocol']['epochs_run']} of {r['protocol']['epochs']}",
                     "this run, h": r["cost"]["measured_wall_s"] / 3600,
                     "100 epochs, est. h": r["cost"]["paper_protocol_estimate_h"]})
    return pd.DataFrame(rows)


def provenance_table(files):
    """Where each retraining ran: one row per results file with its commit (marked when
    dirty), device, each segment (the epoch it started or resumed at, threads, commit) and
    its wall time (training and per-epoch tests, all segments)."""
    import pandas as pd

    from . import seeds
    rows = []
    for r in files:
        p, src = r["provenance"], r["source"]
        segs = "; ".join(f"from epoch {s['from_epoch']}: {s['threads']} thread(s), "
                         f"commit {seeds.commit_text(s['commit'])}" for s in p["segments"])
        rows.append({"retraining": f"{src['run']}-{src['label']}", "epochs": r["protocol"]["epochs_run"],
                     "device": p["device"], "commit": seeds.commit_text(p["commit"]), "segments": segs,
                     "wall, h": round(r["cost"]["measured_wall_s"] / 3600, 2), "finished": p["finished"]})
    return pd.DataFrame(rows)


def versus_published(files, epochs_run=None) -> list:
    """The retrained architectures of Tables 1-3 (labels A-D with an inherited accuracy)
    beside the published accuracy of their column: one ``{run, arch, published, inherited,
    retrained, closer}`` per file, accuracies in %, ``closer`` naming the protocol whose
    accuracy is nearer the published one (a tie counts as ``"retrained"``).  Only one
    protocol at a time: the full one (``epochs_run=None``) or the one run for
    ``epochs_run`` epochs (e.g. :data:`SHORT_EPOCHS`).  Family members are left out: they
    have no published column."""
    from .report import ARCHS, PUBLISHED
    out = []
    for r in files:
        src = r["source"]
        want = r["protocol"]["epochs"] if epochs_run is None else epochs_run
        if src["label"] not in ARCHS or r["inherited_test_acc"] is None or r["protocol"]["epochs_run"] != want:
            continue
        pub = PUBLISHED[src["experiment"]]["Test accuracy, %"][ARCHS.index(src["label"])]
        inh, ret = 100 * r["inherited_test_acc"], 100 * r["retrained"]["final_test_acc"]
        out.append(dict(run=src["run"], arch=src["label"], published=pub, inherited=inh, retrained=ret,
                        closer="inherited" if abs(inh - pub) < abs(ret - pub) else "retrained"))
    return out


def kendall_by_run(files, min_members=2, epochs_run=None, by="inherited") -> dict:
    """``{run: (tau, n)}``: Kendall's tau-b between a predictor and the retrained (last
    epoch) accuracy over the distinct architectures retrained from one run
    (``n >= min_members``; the issue asks for 8 or more for a meaningful value).  The
    predictor is the inherited accuracy (``by="inherited"``) or, as a baseline that needs
    no training at all, the weight count (``by="weights"``): inherited weights are worth
    their cost as a ranking only where they beat it.  Only files of one protocol count:
    the full one (``epochs_run=None``), or the one run for ``epochs_run`` epochs (e.g.
    :data:`SHORT_EPOCHS`); the two are never mixed in one tau."""
    from .family import kendall_tau
    if by not in ("inherited", "weights"):
        raise ValueError(f"by must be 'inherited' or 'weights', not {by!r}")
    by_run = {}
    for r in files:
        want = r["protocol"]["epochs"] if epochs_run is None else epochs_run
        if r["inherited_test_acc"] is None or r["protocol"]["epochs_run"] != want:
            continue
        g = r["architecture"]["genotype"]
        x = r["inherited_test_acc"] if by == "inherited" else r["architecture"]["weights"]
        by_run.setdefault(r["source"]["run"], {})[(tuple(g["normal"]), tuple(g["reduce"]))] = (
            x, r["retrained"]["final_test_acc"])
    out = {}
    for run, pairs in by_run.items():
        if len(pairs) >= min_members:
            a, b = zip(*pairs.values())
            out[run] = (kendall_tau(list(a), list(b)), len(pairs))
    return out


def kendall_with_baseline(files, epochs_run=None) -> dict:
    """``{run: (tau, n, tau_weights)}``: :func:`kendall_by_run` of the inherited accuracy
    beside the weight count's tau over the same architectures (NaN when their weight
    counts are all equal)."""
    size = kendall_by_run(files, epochs_run=epochs_run, by="weights")
    return {run: (tau, n, size[run][0]) for run, (tau, n) in kendall_by_run(files, epochs_run=epochs_run).items()}


def kendall_sentences(files) -> list:
    """One sentence per run and protocol with a Kendall tau (:func:`kendall_by_run`),
    the full protocol first, then the short proxy; fewer than 8 architectures is said to
    be indicative only, and the weight count's tau over the same architectures is the
    baseline beside it.  The README block and the results chapter both print these."""
    out = []
    for label, e in (("the authors' protocol", None), (f"the {SHORT_EPOCHS}-epoch proxy", SHORT_EPOCHS)):
        out += [f"Kendall's tau, inherited vs retrained with {label}, `{run}`: {tau:.2f} over {n:,} distinct "
                "architectures" + (" (fewer than 8: indicative only)" if n < 8 else "")
                + "; the weight count alone ranks them with tau "
                + (f"{tw:.2f}." if math.isfinite(tw) else "undefined (all weight counts equal).")
                for run, (tau, n, tw) in kendall_with_baseline(files, epochs_run=e).items()]
    return out
