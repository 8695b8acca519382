"""The `datasets` library's on-disk format as s2d reads it: a `save_to_disk` folder, read with pyarrow (s2d does
not import datasets), through this module only.

Tested with folders written by datasets 5.2.0; pyproject pins `datasets>=5.2,<6` (the test extra: the canary
tests/unit/test_compat.py writes a folder with it). The private key has been stable since datasets 2; a major
release may change the format. A folder is checked when a job reads it (`save_to_disk_files`); where the key is
missing, the path switches off with one warning line:

- `state_data_files`: `state.json`'s `_data_files` (a private key: the Arrow files of a Dataset, in order). Off:
  s2d reads the folder's `*.arrow` files in name order (datasets names them data-00000-of-0000N.arrow).

`dataset_dict.json`'s `splits` (a DatasetDict's split folders) is read here too; a folder without the split asked
for is refused with one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from s2d.engine.core.compat import Internal, Internals

STATE_FILE, DICT_FILE = "state.json", "dataset_dict.json"


class NotADatasetsFolder(ValueError):
    """The folder is not a `save_to_disk` layout, or lacks the split asked for."""


def is_save_to_disk_folder(path: Path) -> bool:
    return (path / STATE_FILE).is_file() or (path / DICT_FILE).is_file()


def save_to_disk_files(path: Path, split: str) -> list[Path]:
    """The Arrow files of a `save_to_disk` folder (a Dataset, or split `split` of a DatasetDict), in order."""
    if (path / DICT_FILE).is_file():
        splits = json.loads((path / DICT_FILE).read_text()).get("splits", [])
        if split not in splits:
            raise NotADatasetsFolder(f"{path} has splits {splits}, not {split!r}; set data.split")
        path = path / split
    state = path / STATE_FILE
    if not state.is_file():
        raise NotADatasetsFolder(f"{path} is not a datasets save_to_disk folder (no {STATE_FILE})")
    names = listed_data_files(json.loads(state.read_text()))
    if names is None:
        INTERNALS.switch_off("state_data_files", f"in {state}")
        return sorted(path.glob("*.arrow"))
    return [path / name for name in names]


def listed_data_files(state: dict) -> list[str] | None:
    """The file names `state.json` lists under `_data_files`; None where it lists none the way s2d knows."""
    entries = state.get("_data_files")
    if not entries or not all(isinstance(entry, dict) and "filename" in entry for entry in entries):
        return None
    return [entry["filename"] for entry in entries]


INTERNALS = Internals(
    "datasets",
    ("datasets",),
    {
        "state_data_files": Internal(
            f"{STATE_FILE}'s _data_files",
            "s2d reads the folder's *.arrow files in name order",
            lambda: True,  # a property of each folder, not of an installed library: checked as each is read
        ),
    },
)


def check(folder: Path, split: str = "train") -> dict[str, bool]:
    """Read `folder`'s file list as a job would, and say which paths are still on."""
    save_to_disk_files(Path(folder), split)
    return INTERNALS.check()
