"""The one exception type for mistakes a user can fix.

:class:`UserError` is raised by the library's checks of what it is given -- a
configuration (:func:`hypernas.presets.config`), a complexity vector
(:func:`hypernas.complexity.check_complexity`), a model file
(:func:`hypernas.train.load_model`), a data directory (:func:`hypernas.data.load`), an
output folder -- and by training when it cannot go on (a run already in progress,
a loss that diverged).  Its message says what is wrong and how to fix it.  The
``hypernas`` command prints it as ``hypernas: error: <message>`` without a traceback
(``--debug`` shows one) and exits with the error's :attr:`~UserError.exit_code`: 2 for
a bad argument or input file (as argparse does), 1 for a run that could not be done.

It is a ``ValueError``, so code that caught the library's ``ValueError`` before still
catches it.
"""
from __future__ import annotations

import os
from pathlib import Path


class UserError(ValueError):
    """A mistake in what was asked for or given; the message names the fix."""

    #: the command's exit status: 2 = bad input (argument, file, folder)
    exit_code = 2


class RunLocked(UserError):
    """Another process is training the same run (its folder is locked) or retraining the
    same architecture (its lock file is held)."""

    exit_code = 1


class Diverged(UserError):
    """Training met a non-finite loss or parameter; nothing after the last good
    checkpoint was saved."""

    exit_code = 1


def check_writable_folder(folder, what="output folder") -> Path:
    """Raise :class:`UserError` unless ``folder`` is, or could be created as, a folder
    this process may write to.  Creates nothing."""
    folder = Path(folder).expanduser()
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise UserError(f"cannot write the {what} {folder}: {probe} is a file, not a folder; "
                        "choose another folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the {what} {folder}: no permission to write in {probe}; "
                        "choose a folder you can write to")
    return folder
