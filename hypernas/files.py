"""Files written atomically: a temporary file beside the target, then ``os.replace``, so a
reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


def temp_beside(path: Path):
    """A temporary file in ``path``'s folder (so ``os.replace`` is atomic), with the
    permissions a new file gets there (``mkstemp`` makes it private); ``(fd, name)``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    return fd, tmp


@contextlib.contextmanager
def replacing(path):
    """A temporary path beside ``path`` (its folder is created) for the block to write;
    moved onto ``path`` when the block ends, removed when it raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_text(text: str, path) -> Path:
    """Write ``text`` to ``path`` atomically, synced to disk."""
    with replacing(path) as tmp, open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    return Path(path)


def write_json(data, path) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (its folder is created)."""
    return write_text(json.dumps(data, indent=1) + "\n", path)
