"""Replace a result folder (`<out>/model/`, `<out>/eval/`) whole: a reader sees the old one or the new one, never
a mix, and never neither.

The new folder is written under a temporary sibling (`.model.<token>.tmp`, `ownership.swap_folder_name`) and then
swapped in. On Linux the swap is one `renameat2(RENAME_EXCHANGE)`: the two names trade places atomically, and the
old folder, now under the temporary name, is removed. Where the kernel or filesystem cannot exchange (another OS,
some network filesystems) the old folder is renamed aside (`.model.<token>.old`) and the new one renamed in: two
renames with a moment between them where `model/` is missing; a crash in that moment is repaired by the next
writer (`clear_leftovers` puts the old folder back). A crash anywhere else leaves the target whole and at most a
temporary folder, which `clear_leftovers` removes: it deletes only names s2d gives (`ownership.is_swap_folder_name`).

Callers hold the output's lease (s2d.engine.data.lease), so one writer at a time swaps a folder.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import uuid
from pathlib import Path

from s2d.engine.data.ownership import is_swap_folder_name, swap_folder_name

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def staging_folder(target: Path) -> Path:
    """A new, empty temporary sibling of `target` to write its replacement into."""
    staged = Path(target).parent / swap_folder_name(Path(target).name, uuid.uuid4().hex[:12], "tmp")
    staged.mkdir(parents=True)
    return staged


def replace_folder(staged: Path, target: Path) -> None:
    """Put `staged` (a folder from `staging_folder`) in the place of `target`, atomically where the system allows;
    the old `target`, if any, is removed afterwards."""
    staged, target = Path(staged), Path(target)
    if not target.exists():
        os.rename(staged, target)
        return
    if exchange(staged, target):
        shutil.rmtree(staged)  # now holds the old folder
        return
    aside = target.parent / swap_folder_name(target.name, uuid.uuid4().hex[:12], "old")
    os.rename(target, aside)
    os.rename(staged, target)
    shutil.rmtree(aside)


def clear_leftovers(target: Path) -> list[Path]:
    """Repair what an interrupted `replace_folder` left beside `target`: the old folder back in place if the crash
    fell between the two renames, then every other temporary folder of s2d's removed. Returns what was removed."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    leftovers = sorted(path for path in target.parent.iterdir() if is_swap_folder_name(path.name, target.name))
    aside = [path for path in leftovers if path.name.endswith(".old")]
    if aside and not target.exists():
        os.rename(aside[0], target)  # the whole old folder: what readers saw before the interrupted swap
        leftovers.remove(aside[0])
    for path in leftovers:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return leftovers


def exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # a libc without it (glibc before 2.28)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):  # the kernel or filesystem cannot exchange
        return False
    raise OSError(code, f"cannot swap {first} and {second}: {os.strerror(code)}")
