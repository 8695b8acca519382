"""`s2d export`: the pairs `s2d train` trains on, in the formats fine-tuning tools read.

The rows are `s2d.training.trainer.read_accepted_rows` (the committed accepted shards, in manifest order, the
rows training skips left out) and each pair is `s2d.training.sft.chat_messages`, the turns training formats:
what is exported is exactly what `s2d train` learns from. Every file is verified as it is read
(s2d.engine.data.shards.read_committed): one changed after its commit stops the export, with one line naming it,
before anything is written.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

FORMATS = {
    "messages": 'one JSON object per line: {"messages": [user turn, assistant turn]} (TRL, axolotl, '
    "LLaMA-Factory, torchtune)",
    "prompt_completion": '{"prompt": [user turn], "completion": [assistant turn]}: TRL\'s conversational '
    "prompt-completion format, whose loss is on the completion only, as in s2d train",
}


def export_pairs(out: str | Path, to: str | Path, fmt: str = "messages", overwrite: bool = False) -> int:
    """Write the training pairs of `out` to the JSON Lines file `to`; returns how many. An existing `to` is the
    user's: refused (before the pairs are read) unless `overwrite`."""
    from s2d.engine.data.manifest import read_manifest
    from s2d.training.sft import chat_messages
    from s2d.training.trainer import read_accepted_rows

    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {sorted(FORMATS)}")
    if read_manifest(out) is None:
        raise FileNotFoundError(f"{out} has no manifest.json: not the output of `s2d generate`")
    to = Path(to)
    if (to.exists() or to.is_symlink()) and not overwrite:
        raise FileExistsError(f"{to} exists: choose another --to, or pass --overwrite to replace it")
    if to.is_dir():
        raise IsADirectoryError(f"{to} is a folder: --to names the JSON Lines file to write")
    rows = read_accepted_rows(Path(out))
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = to.with_name(f".{to.name}.{uuid.uuid4().hex[:8]}.tmp")  # a name of s2d's, never one of the user's
    try:
        with open(tmp, "x", encoding="utf-8") as handle:
            for row in rows:
                user, assistant = chat_messages(row["prompt"], row["answer"])
                record = (
                    {"messages": [user, assistant]}
                    if fmt == "messages"
                    else {"prompt": [user], "completion": [assistant]}
                )
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        tmp.replace(to)
    finally:
        tmp.unlink(missing_ok=True)
    return len(rows)
