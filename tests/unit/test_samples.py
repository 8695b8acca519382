"""The samples table: from the replica's chains through curation to the shard writer and the accounting check."""

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from s2d.engine.core.criteria import GeneratedInput
from s2d.engine.core.methods import get_method
from s2d.engine.core.program import Chain, Completion, SamplingRequest
from s2d.engine.core.tasks import get_task
from s2d.engine.data.accounting import check_accounting
from s2d.engine.data.curation import curate_generated
from s2d.engine.data.generated import generate_for_curation, pack_generated
from s2d.engine.data.samples import SAMPLES_SCHEMA, flatten_samples, sample_count_problems
from s2d.engine.data.shards import ShardWriter, curated_table, read_committed

BASE = {"input_id": "i1", "shard_id": 0, "prompt": "P"}


def _curated(generated_input, keep_samples=True, **criterion):
    """One input's chains as the replica packs them, through curation."""
    return curate_generated(pack_generated([BASE], [generated_input], keep_samples), **criterion)


def test_majority_rows_carry_every_sample_with_steps_answers_and_tokens():
    chains = [
        Chain({"rephrase": "R1", "respond": "Answer: abcd."}, 3),
        Chain({"rephrase": "R2", "respond": "?"}, 5),
    ]
    samples = flatten_samples(_curated(GeneratedInput([chains]), task="last_letter", method="rar2", model="m"))
    assert samples.schema == SAMPLES_SCHEMA
    first, second = samples.to_pylist()
    assert first == {
        "input_id": "i1",
        "shard_id": 0,
        "variant": None,
        "sample": 0,
        "steps": [
            {"name": "rephrase", "item": None, "text": "R1"},
            {"name": "respond", "item": None, "text": "Answer: abcd."},
        ],
        "extracted": "abcd",
        "answer": "abcd",
        "tokens": 3,
    }
    assert (second["sample"], second["extracted"], second["answer"], second["tokens"]) == (1, "?", None, 5)


def test_without_sample_steps_no_samples_travel():
    chains = [Chain({"respond": "Answer: abcd"}, 3)]
    curated = _curated(GeneratedInput([chains]), keep_samples=False, task="last_letter", method="rar2", model="m")
    assert curated.column("samples").to_pylist() == [None] and flatten_samples(curated).num_rows == 0


def test_perturbation_samples_are_numbered_per_variant_and_mapped_back():
    texts, tokens = [["Answer: A", "Answer: A"], ["Answer: B", "Answer: tie"]], [[10, 10], [20, 21]]
    chains = [[Chain({"judge": text}, count) for text, count in zip(*variant)] for variant in zip(texts, tokens)]
    generated = GeneratedInput(chains, [{}, {"A": "B", "B": "A"}])
    samples = flatten_samples(_curated(generated, task="pairwise_judge", method="bsm", model="m", rule="perturbation"))
    got = [(s["variant"], s["sample"], s["extracted"], s["answer"], s["tokens"]) for s in samples.to_pylist()]
    assert got == [(0, 0, "A", "A", 10), (0, 1, "A", "A", 10), (1, 0, "B", "A", 20), (1, 1, "tie", "tie", 21)]


def test_fan_out_steps_keep_one_entry_per_call():
    chain = Chain({"plan": "p", "score": ["s1", "s2"], "respond": "Answer: 7"}, 9)
    generated = GeneratedInput([[chain]], judge_choice=0, judge_tokens=2)
    steps = flatten_samples(_curated(generated, task="arithmetic", method="cot", model="m", rule="usc")).to_pylist()[0][
        "steps"
    ]
    assert [(s["name"], s["item"], s["text"]) for s in steps] == [
        ("plan", None, "p"),
        ("score", 0, "s1"),
        ("score", 1, "s2"),
        ("respond", None, "Answer: 7"),
    ]


class Scripted:
    def generate(self, prompts, request, adapter=None):
        return [[Completion(f"Answer: {index}", 2) for index in range(request.n)] for _ in prompts]


def test_generation_sends_each_samples_chain_only_when_asked():
    task = get_task("last_letter")
    rows = [
        {
            "input_id": item.input_id,
            "shard_id": 0,
            "question": item.question,
            "prompt": task.system1_prompt(item.question),
        }
        for item in task.generate(2, 0, "train")
    ]
    request = SamplingRequest(n=3, max_tokens=8)
    plain = generate_for_curation(Scripted(), get_method("rar2"), task, rows, request)
    assert pc.list_flatten(plain["samples"].combine_chunks()).field("steps").null_count == 2 * 3  # no chains
    kept = generate_for_curation(Scripted(), get_method("rar2"), task, rows, request, keep_samples=True)
    per_input = [[sample["steps"] for sample in row["samples"]] for row in kept.to_pylist()]
    assert [len(chains) for chains in per_input] == [3, 3] and all(steps for chains in per_input for steps in chains)
    assert [step["name"] for step in per_input[0][1]] == [step.name for step in get_method("rar2").steps]


def _row(input_id, shard, status="accepted", samples=2):
    sample = {
        "variant": None,
        "steps": [{"name": "respond", "item": None, "text": "Answer: x"}],
        "extracted": "x",
        "answer": "x",
        "tokens": 4,
    }
    return {
        "input_id": input_id,
        "shard_id": shard,
        "prompt": "p",
        "status": status,
        "answer": "x",
        "votes": samples,
        "num_samples": samples,
        "agreement": 1.0,
        "criterion": "majority",
        "method": "m",
        "model": "m",
        "system2_tokens": 4.0,
        "reason": None if status == "accepted" else "tie",
        "samples": [{**sample, "sample": index} for index in range(samples)],
    }


def test_writer_commits_samples_with_their_shard_exactly_once(tmp_path):
    writer = ShardWriter.open(tmp_path, 2, "fp", {0: 2, 1: 1}, keep_samples=True)
    writer.add(curated_table([_row("a", 0), _row("c", 1, "rejected", samples=3)]))
    writer.add(curated_table([_row("a", 0)]))  # a retried batch: its samples must not be doubled
    assert (tmp_path / "samples" / "shard-00001.parquet").exists()
    assert not (tmp_path / "samples" / "shard-00000.parquet").exists()
    writer.add(curated_table([_row("b", 0)]))
    manifest = writer.finish()
    assert manifest.counts.samples == 7 and manifest.shards[0].samples == 4
    assert pq.read_table(tmp_path / "samples" / "shard-00000.parquet").column("input_id").to_pylist() == [
        "a",
        "a",
        "b",
        "b",
    ]
    accounting = check_accounting(tmp_path)
    assert accounting.ok and accounting.samples == 7
    assert read_committed(tmp_path, "samples", shards=[1]).column("input_id").to_pylist() == ["c"] * 3


def test_an_output_without_samples_has_an_empty_samples_table(tmp_path):
    writer = ShardWriter.open(tmp_path, 1, "fp", {0: 1})
    writer.add(curated_table([_row("a", 0)]))
    writer.finish()
    assert not (tmp_path / "samples").exists() and read_committed(tmp_path, "samples").num_rows == 0
    assert check_accounting(tmp_path).samples is None


def test_sample_count_problems_name_missing_and_doubled_samples():
    inputs = pa.table({"input_id": ["a", "b"], "num_samples": pa.array([2, 1], pa.int64())})
    good = pa.table(
        {
            "input_id": ["a", "a", "b"],
            "variant": pa.array([None] * 3, pa.int32()),
            "sample": pa.array([0, 1, 0], pa.int32()),
        }
    )
    assert sample_count_problems(inputs, good) == []
    doubled = pa.concat_tables([good, good.slice(2)])
    assert any("more than once" in problem for problem in sample_count_problems(inputs, doubled))
    missing = sample_count_problems(inputs, good.slice(0, 2))
    assert len(missing) == 1 and "first: b has 0, expected 1" in missing[0]
