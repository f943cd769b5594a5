"""One process per run: a lock file in the run folder.

Two processes training the same run folder would both read the checkpoint, both train,
and both append every log line (the log would hold each line twice) and overwrite each
other's checkpoints.  :func:`run_lock` makes the second one refuse at once, naming the
process that holds the run.

The lock is ``fcntl.flock`` on ``<run folder>/run.lock``, which also holds the holder's
pid (for the message).  The kernel releases a ``flock`` when its process ends, however it
ends, so a run whose process was killed (``kill -9``, a lost machine) is simply resumed
by the next one: a lock file left behind is not a held lock.  The file is removed when
the run is released; the next holder checks, after locking, that the file it locked is
still the one in the folder (else it locks the new one), so removing it races with
nobody.

Limits: ``flock`` is advisory and local: it does not protect a run folder shared over a
network file system by two machines (NFS maps it to byte-range locks only on some
setups), and on a system without ``fcntl`` (Windows) there is no lock.  Within one
process the lock is re-entrant (:func:`hypernas.experiments.run` holds it and
:meth:`hypernas.train.Trainer.fit` takes it again), and not meant for threads.
"""
from __future__ import annotations

import errno
import os
import time
from contextlib import contextmanager
from pathlib import Path

from .errors import RunLocked

LOCK_NAME = "run.lock"

#: run folders this process holds: resolved path -> depth
_held: dict = {}


def holder_pid(lock_file) -> int | None:
    """The pid written in a lock file (None when there is none)."""
    try:
        text = Path(lock_file).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


TRAINING_BUSY = ("the run in {folder} is being trained by {who}; wait for it to finish, stop it "
                 "(kill {pid}) and run again to resume, or train elsewhere (another --results-root or --seed)")


def _acquire(path: Path, busy: str) -> int:
    import fcntl
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            pid = None
            for _ in range(20):       # the holder writes its pid right after it locks
                pid = holder_pid(path)
                if pid is not None:
                    break
                time.sleep(0.05)
            who = f"process {pid}" if pid is not None else "another process"
            raise RunLocked(busy.format(folder=path.parent, name=path.stem, who=who,
                                        pid=pid if pid is not None else "<pid>")) from None
        try:
            current = os.stat(path).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)          # the holder removed the file between our open and lock
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@contextmanager
def run_lock(run_dir):
    """Hold ``run_dir`` for this process (created if needed, and removed again on release,
    with the parents this call created, if it stayed empty); raise :class:`~hypernas.errors.RunLocked`
    at once if another process holds it."""
    run_dir = Path(run_dir)
    created = run_dir        # the outermost folder this call creates (None: none)
    while not created.parent.exists() and created.parent != created:
        created = created.parent
    created = None if created.exists() else created
    run_dir.mkdir(parents=True, exist_ok=True)
    key = str(run_dir.resolve())
    if key in _held:
        _held[key] += 1
        try:
            yield
        finally:
            _held[key] -= 1
        return
    try:
        with file_lock(run_dir / LOCK_NAME, TRAINING_BUSY):
            _held[key] = 1
            try:
                yield
            finally:
                del _held[key]
    finally:
        _remove_if_empty(run_dir, created)


@contextmanager
def file_lock(path, busy: str):
    """Hold the lock file ``path`` (its folder must exist) for this process, removed on
    release; raise :class:`~hypernas.errors.RunLocked` with ``busy`` (a format string:
    ``{folder}``, ``{name}``, ``{who}``, ``{pid}``) at once if another process holds it.
    Not re-entrant.  :func:`run_lock` holds a run folder with it; ``hypernas retrain`` holds
    one retraining (its checkpoint and results file)."""
    try:
        import fcntl  # noqa: F401
    except ImportError:       # no flock on this system: no lock
        yield
        return
    path = Path(path)
    fd = _acquire(path, busy)
    try:
        yield
    finally:
        try:
            os.unlink(path)   # still locked by us: nobody else holds this file
        except FileNotFoundError:
            pass
        os.close(fd)


def _remove_if_empty(folder: Path, created: Path | None):
    """Remove ``folder`` and its parents up to ``created`` while they are empty."""
    if created is None:
        return
    while True:
        try:
            folder.rmdir()
        except OSError:
            return
        if folder == created:
            return
        folder = folder.parent
