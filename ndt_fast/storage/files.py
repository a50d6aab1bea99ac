"""Files shared by the exports and the run file: the writable-path check, and replacement through
a temporary file beside the target renamed over it, so no half-written file is ever visible."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable


def check_writable_file(path: str, label: str) -> None:
    """Raise ValueError, starting with ``label`` (e.g. ``output='run.h5'``), unless a file can be
    created at ``path``: not a directory, in a folder that exists and is writable. The one check
    of the run file and of every export."""
    folder = os.path.dirname(os.path.abspath(path)) or "."
    if os.path.isdir(path):
        raise ValueError(f"{label} is a directory; give a file path (such as run.h5)")
    if not os.path.isdir(folder):
        raise ValueError(f"{label}: folder {folder!r} does not exist")
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{label}: folder {folder!r} is not writable")


def give_default_permissions(path: str) -> None:
    """Set ``path`` to the mode a newly created file gets under the process umask (a file made
    with ``tempfile.mkstemp`` is 0600; renamed into place it would keep that)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def replace_via_temporary(path: str, write: Callable[[str], None], suffix: str = "") -> None:
    """Call ``write(tmp)`` on a new temporary file in ``path``'s folder, give it the umask's
    permissions and rename it to ``path``. On any failure the temporary file is removed and the
    error (OSError from creating it, or whatever ``write`` raised) propagates."""
    fd, tmp = tempfile.mkstemp(prefix=".ndt_fast-", suffix=suffix, dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    try:
        write(tmp)
        give_default_permissions(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
