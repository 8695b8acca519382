"""A tiny fixed distillation set committed the way the pipeline commits it (ShardWriter + manifest.json)."""

from __future__ import annotations

from pathlib import Path

WORDS = [
    ("apple", "river", "stone", "cloud"),
    ("green", "table", "music", "horse"),
    ("paper", "light", "ocean", "chair"),
    ("tiger", "bread", "glass", "mouse"),
    ("plant", "sugar", "night", "dream"),
    ("storm", "lemon", "piano", "field"),
    ("candy", "water", "brick", "smile"),
    ("queen", "metal", "frost", "honey"),
]


def last_letter_rows(count: int = len(WORDS)) -> list[dict[str, str]]:
    rows = []
    for index in range(count):
        words = WORDS[index % len(WORDS)]
        words = words if index < len(WORDS) else tuple(reversed(words))  # 16 distinct rows at most
        rows.append(
            {
                "prompt": f'Take the last letter of each word in "{" ".join(words)}" and concatenate them.',
                "answer": "".join(word[-1] for word in words),
            }
        )
    return rows


def commit_shards(
    out: Path, rows: list[dict[str, str]], num_shards: int = 2, committed: set[int] | None = None
) -> None:
    """Commit `rows` as accepted inputs of `num_shards` shards, with the manifest training reads; with `committed`,
    only those shards, as an unfinished `s2d generate` leaves its output."""
    from s2d.engine.data.shards import ShardWriter, curated_table

    full = [
        {
            "input_id": f"id{index:04d}",
            "shard_id": index % num_shards,
            "status": "accepted",
            "votes": 3,
            "num_samples": 4,
            "agreement": 0.75,
            "method": "rar2",
            "model": "smollm2-135m",
            "system2_tokens": 40.0,
            **row,
        }
        for index, row in enumerate(rows)
    ]
    expected = {shard: sum(row["shard_id"] == shard for row in full) for shard in range(num_shards)}
    writer = ShardWriter.open(Path(out), num_shards, "test-fingerprint", expected)
    if committed is not None:
        writer.add(curated_table([row for row in full if row["shard_id"] in committed]))
        return
    writer.add(curated_table(full))
    writer.finish()
