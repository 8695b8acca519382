"""`s2d export` (the training pairs as chat JSON Lines) and `s2d inspect` (inputs with their samples), on a
demo-sized output written by the shard writer."""

import json

from test_card import demo_sized_output
from test_sft import FakeTokenizer

from s2d.engine.cli import main
from s2d.training.sft import build_examples
from s2d.training.trainer import read_accepted_rows


def test_messages_export_round_trips_to_the_training_examples(tmp_path, capsys):
    out = tmp_path / "demo"
    demo_sized_output(out)
    to = tmp_path / "pairs.jsonl"
    assert main(["export", str(out), "--format", "messages", "--to", str(to)]) == 0
    assert "export: 4 pairs" in capsys.readouterr().out
    records = [json.loads(line) for line in to.read_text().splitlines()]
    assert all([turn["role"] for turn in record["messages"]] == ["user", "assistant"] for record in records)
    exported = [{"prompt": r["messages"][0]["content"], "answer": r["messages"][1]["content"]} for r in records]
    training = read_accepted_rows(out)
    assert exported == training
    tokenizer = FakeTokenizer()
    assert build_examples(exported, tokenizer, 64) == build_examples(training, tokenizer, 64)


def test_prompt_completion_export_and_bad_outputs(tmp_path, capsys):
    out = tmp_path / "demo"
    demo_sized_output(out, inputs=20)
    to = tmp_path / "pc.jsonl"
    assert main(["export", str(out), "--format", "prompt_completion", "--to", str(to)]) == 0
    record = json.loads(to.read_text().splitlines()[0])
    assert record["prompt"][0]["role"] == "user" and record["completion"][0]["role"] == "assistant"
    assert main(["export", str(tmp_path / "nothing"), "--to", str(to)]) == 1
    assert "no manifest.json" in capsys.readouterr().err


def test_inspect_shows_samples_votes_and_the_decision(tmp_path, capsys):
    out = tmp_path / "demo"
    demo_sized_output(out)
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "64 inputs, 4 accepted, 59 rejected (tie 31, no_answer 28), 1 quarantined; 504 samples" in text
    assert text.count("== accepted") == 2 and text.count("== rejected") == 2
    assert "kept: 'ab' has 5/8 votes" in text and "sample 7: 'ab', 30 tokens" in text
    assert "respond: Answer: ab" in text and "dropped by majority: " in text
    assert main(["inspect", str(out), "--reason", "no_answer", "-n", "5"]) == 0
    text = capsys.readouterr().out
    assert text.count("dropped by majority: no_answer") == 5 and "== accepted" not in text
    assert main(["inspect", str(out), "--id", "input-000"]) == 0
    assert "quarantined: empty" in capsys.readouterr().out
    assert main(["inspect", str(out), "--reason", "nonsense"]) == 0
    assert "no committed rejected or quarantine inputs with reason 'nonsense'" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "nothing")]) == 1


def test_export_never_replaces_a_file_unless_asked(tmp_path, capsys):
    out = tmp_path / "demo"
    demo_sized_output(out)
    to = tmp_path / "pairs.jsonl"
    to.write_text("the user's own pairs\n")
    assert main(["export", str(out), "--to", str(to)]) == 1
    assert "exists: choose another --to, or pass --overwrite" in capsys.readouterr().err
    assert to.read_text() == "the user's own pairs\n"
    assert main(["export", str(out), "--to", str(to), "--overwrite"]) == 0
    assert len(to.read_text().splitlines()) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo", "pairs.jsonl"]
