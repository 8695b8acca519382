"""The dataset card: `datasets.load_dataset(<out>)` reads a demo-sized output through the card's configs."""

import datetime

import pytest

from s2d.engine.core.spec import parse_spec
from s2d.engine.data.shards import ShardWriter, curated_table, shard_of
from s2d.engine.stages.card import write_card


def demo_sized_output(out, inputs=64, n=8, keep_samples=True):
    """What the demo job writes: 64 inputs over 3 shards, a few accepted, most rejected, one quarantined."""
    spec = parse_spec({"model": "smollm2-135m", "out": str(out), "output": {"keep_samples": keep_samples}})
    ids = [f"input-{index:03d}" for index in range(inputs)]
    shards = {input_id: shard_of(input_id, 3) for input_id in ids}
    writer = ShardWriter.open(
        out, 3, "fp", {shard: list(shards.values()).count(shard) for shard in range(3)}, keep_samples=keep_samples
    )
    rows = []
    for index, input_id in enumerate(ids):
        status = "quarantined" if index == 0 else "accepted" if index % 16 == 1 else "rejected"
        sample = {
            "variant": None,
            "steps": [
                {"name": "rephrase", "item": None, "text": "R"},
                {"name": "respond", "item": None, "text": "Answer: ab"},
            ],
            "extracted": "ab",
            "answer": "ab",
            "tokens": 30,
        }
        rows.append(
            {
                "input_id": input_id,
                "shard_id": shards[input_id],
                "status": status,
                "prompt": f"q{index}",
                "answer": "ab" if status == "accepted" else None,
                "votes": 5,
                "agreement": 5 / n,
                "criterion": "majority",
                "method": "rar2",
                "model": "smollm2-135m",
                "system2_tokens": 30.0,
                "answer_counts": [{"answer": "ab", "votes": 5}],
                "reason": {"accepted": None, "rejected": "no_answer" if index % 2 else "tie", "quarantined": "empty"}[
                    status
                ],
                "detail": "",
                "num_samples": 0 if status == "quarantined" else n,
                "samples": None if status == "quarantined" else [{**sample, "sample": s} for s in range(n)],
            }
        )
    writer.add(curated_table(rows))
    writer.finish()
    return spec


def test_card_configs_load_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    out = tmp_path / "demo"
    spec = demo_sized_output(out)
    card = write_card(spec, when=datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC))
    text = (out / "README.md").read_text()
    assert card == str(out / "README.md") and text.startswith("---\n")
    assert "2026-12-01" in text and "Given the above question, rephrase" in text, "provenance: date, prompts"
    assert "`no_answer` 28" in text and "fp" in text
    train = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert len(train) == 4 and set(train["answer"]) == {"ab"} and "prompt" in train.column_names
    rejected = datasets.load_dataset(str(out), "rejected", split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert len(rejected) == 59 and set(rejected["reason"]) == {"no_answer", "tie"}
    samples = datasets.load_dataset(str(out), "samples", split="train", cache_dir=str(tmp_path / "hf-cache"))
    assert len(samples) == 63 * 8 and samples[0]["steps"][1]["text"] == "Answer: ab"
    assert len(datasets.load_dataset(str(out), "quarantine", split="train", cache_dir=str(tmp_path / "hf-cache"))) == 1


def test_card_without_samples_declares_no_samples_config(tmp_path):
    spec = demo_sized_output(tmp_path / "demo", inputs=6, keep_samples=False)
    write_card(spec)
    text = (tmp_path / "demo" / "README.md").read_text()
    assert "config_name: samples" not in text and "config_name: rejected" in text
