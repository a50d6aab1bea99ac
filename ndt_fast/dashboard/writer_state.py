"""Is a run file's writer still alive? Decided from the outside, without touching the writer.

Two facts, both readable by anyone:

1. A live ``FastTracker(output=...)`` holds a shared ``flock`` on its file for as long as it
   writes (``ndt_fast.storage.hdf5``). Linux lists every flock in ``/proc/locks`` with the
   holder's pid and the file's device and inode. Other readers of the file may hold one too
   (HDF5's own file locking), so the holder must be the pid the run recorded as its writer
   (``metadata["host"]["pid"]``, or the last resume's). A run without a recorded pid counts any
   holder other than this process.
2. HDF5 sets the superblock's "file consistency flags" when a file is opened for writing and
   clears them on a clean close (HDF5 File Format Specification, superblock versions 2 and 3:
   the byte after the sizes of offsets and lengths; bit 0 = write access, bit 2 = SWMR write).
   A set flag with no live holder means the writer died without closing: ``kill -9``, a crash,
   a power cut.

States: ``writing`` (1 holds), ``stopped`` (writer gone, flags still set: the file holds what it
flushed), ``closed`` (clean close), ``unknown`` (no ``/proc/locks``, e.g. not Linux, and the
flags set — the page then shows only how long ago the file changed).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_FLAG_WRITE, _FLAG_SWMR_WRITE = 0x1, 0x4


def _recorded_writer_pid(metadata: Mapping[str, Any]) -> int | None:
    """The pid of the process that last opened the run for writing, as the run recorded it."""
    latest: Any = metadata
    resumes = metadata.get("resumes")
    if isinstance(resumes, list) and resumes and isinstance(resumes[-1], Mapping):
        latest = resumes[-1]
    host = latest.get("host") if isinstance(latest, Mapping) else None
    pid = host.get("pid") if isinstance(host, Mapping) else None
    return pid if isinstance(pid, int) else None


def flock_holders(path: str, locks_file: str = "/proc/locks") -> list[int] | None:
    """Pids holding a flock on ``path``'s inode, from ``/proc/locks``; None if that is unreadable."""
    try:
        st = os.stat(path)
        with open(locks_file) as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    holders = []
    for line in lines:
        # "1: FLOCK  ADVISORY  READ 11642 fe:00:2146933 0 EOF"; blocked waiters have "->" after the id.
        fields = line.split()
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            same = (int(inode) == st.st_ino and int(major, 16) == os.major(st.st_dev)
                    and int(minor, 16) == os.minor(st.st_dev))
            pid = int(fields[4])
        except ValueError:
            continue
        if same:
            holders.append(pid)
    return holders


def open_for_writing_flag(path: str) -> bool | None:
    """The superblock's write-access flags (True if set); None for a superblock version < 2
    (whose flags HDF5 does not use this way) or an unreadable file."""
    try:
        with open(path, "rb") as f:
            offset = 0
            size = os.fstat(f.fileno()).st_size
            while offset + 12 <= size:  # the superblock sits at 0, 512, 1024, 2048, ... (user block)
                f.seek(offset)
                head = f.read(12)
                if head[:8] == _SIGNATURE:
                    if head[8] < 2:
                        return None
                    return bool(head[11] & (_FLAG_WRITE | _FLAG_SWMR_WRITE))
                offset = 512 if offset == 0 else offset * 2
    except OSError:
        return None
    return None


def writer_state(path: str, metadata: Mapping[str, Any]) -> dict[str, Any]:
    """``{"state": "writing" | "stopped" | "closed" | "unknown", "pid": int | None, "why": str}``
    for the run file at ``path`` (see the module docstring for how it is decided)."""
    holders = flock_holders(path)
    recorded = _recorded_writer_pid(metadata)
    flagged = open_for_writing_flag(path)
    if holders is not None:
        live = [p for p in holders if p == recorded] if recorded is not None else \
            [p for p in holders if p != os.getpid()]
        if live:
            return {"state": "writing", "pid": live[0], "why": f"process {live[0]} holds the writer's lock"}
        if flagged:
            return {"state": "stopped", "pid": recorded,
                    "why": "no process holds the writer's lock, and the file was never closed (killed or crashed)"}
        return {"state": "closed", "pid": recorded, "why": "the writer closed the file"}
    if flagged is False:
        return {"state": "closed", "pid": recorded, "why": "the writer closed the file"}
    return {"state": "unknown", "pid": recorded, "why": "cannot see file locks on this system"}
