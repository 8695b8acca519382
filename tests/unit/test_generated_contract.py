"""The replica -> curation Arrow contract (s2d.engine.data.generated) against the contract it replaced (a dict of
Python lists with each kept chain as a JSON string): the same chains give the same curated table and the same
samples table, for every rule, with output.keep_samples on and off.

data/generated_contract_golden.json holds what the previous code (engine.consistency, before the Arrow contract)
produced for CASES with this scripted engine: curated rows (less prompt and samples) and the samples table.
"""

import json
import random
import zlib
from pathlib import Path

import pyarrow as pa
import pytest

from s2d.engine.core.methods import get_method
from s2d.engine.core.program import Completion, SamplingRequest
from s2d.engine.core.tasks import get_task
from s2d.engine.data.curation import curate_generated
from s2d.engine.data.generated import GENERATED_SCHEMA, generate_for_curation, with_input_errors
from s2d.engine.data.samples import flatten_samples
from s2d.engine.data.shard_tasks import curate_generated_or_quarantine

GOLDEN = json.loads((Path(__file__).parent / "data" / "generated_contract_golden.json").read_text())


class Scripted:
    """A stand-in engine whose every completion is a function of its prompt and sample index only, so that two
    implementations that send the same prompts get the same chains."""

    def __init__(self, answers):
        self.answers = answers

    def generate(self, prompts, request, adapter=None):
        return [[self.complete(prompt, index) for index in range(request.n)] for prompt in prompts]

    def complete(self, prompt, index):
        rng = random.Random(zlib.crc32(prompt.encode()) * 64 + index)
        if "most consistent response" in prompt:
            text = rng.choice(["The most consistent response is Response 1", "Response 2", "Response 3", "unsure"])
        elif "evaluation plan" in prompt:
            criteria = rng.sample(["Accuracy", "Helpfulness", "Style"], rng.randint(1, 3))
            text = "\n".join(f"{number}. {criterion}" for number, criterion in enumerate(criteria, 1))
        elif "one criterion only" in prompt:
            text = f"Score A: {rng.randint(1, 5)}, Score B: {rng.randint(1, 5)}"
        else:
            text = f"Thought {rng.randint(0, 99)}. Answer: {rng.choice(self.answers)}"
        return Completion(text, len(text) // 4 + rng.randint(0, 3))


# name: (rule, task, method, curate options, n, inputs, scripted answers)
CASES = {
    "majority": ("majority", "last_letter", "rar2", {"threshold": 0.5}, 4, 8, ["ab", "ab", "ab", "cd", "?", "?"]),
    "perturbation": (
        "perturbation",
        "multiple_choice",
        "cot",
        {"perturbation": "shuffle_options", "variants": 3, "threshold": 0.5},
        3,
        5,
        ["A", "A", "A", "B", "C"],
    ),
    "perturbation_fan_out": (
        "perturbation",
        "pairwise_judge",
        "bsm",
        {"perturbation": "swap_responses", "variants": 2, "threshold": 0.5, "per_variant_majority": True},
        2,
        4,
        [],
    ),
    "usc": ("usc", "arithmetic", "cot", {}, 3, 8, ["7", "12", "7", "x"]),
}


def input_rows(task, count):
    return [
        {
            "input_id": item.input_id,
            "shard_id": index % 2,
            "question": item.question,
            "prompt": task.system1_prompt(item.question),
            "fields": json.dumps(item.fields),
        }
        for index, item in enumerate(task.generate(count, 0, "train"))
    ]


def _generate_and_curate(name, keep_samples):
    rule, task_name, method, options, n, count, answers = CASES[name]
    task = get_task(task_name)
    rows = input_rows(task, count)
    generated = generate_for_curation(
        Scripted(answers),
        get_method(method),
        task,
        rows,
        SamplingRequest(n=n, temperature=0.7, max_tokens=32),
        rule=rule,
        perturbation=options.get("perturbation"),
        variants=options.get("variants", 2),
        seed=0,
        keep_samples=keep_samples,
    )
    criterion = {key: options[key] for key in ("threshold", "per_variant_majority") if key in options}
    curated = curate_generated(generated, task=task_name, method=method, model="m", rule=rule, **criterion)
    return rows, generated, curated, criterion


@pytest.mark.parametrize("keep_samples", [False, True])
@pytest.mark.parametrize("name", sorted(CASES))
def test_the_same_chains_give_the_same_tables_as_the_previous_contract(name, keep_samples):
    rows, generated, curated, _ = _generate_and_curate(name, keep_samples)
    assert generated.schema == GENERATED_SCHEMA
    got = curated.to_pylist()
    assert [row["prompt"] for row in got] == [row["prompt"] for row in rows]
    assert [{k: v for k, v in row.items() if k not in ("prompt", "samples")} for row in got] == GOLDEN[name]["curated"]
    samples = flatten_samples(curated).to_pylist()
    if keep_samples:
        assert samples == GOLDEN[name]["samples"]
    else:
        assert samples == [] and all(row["samples"] is None for row in got)


@pytest.mark.parametrize("name", sorted(CASES))
def test_rows_the_replica_could_not_run_are_quarantined_in_place(name):
    """The replica's merge of the rows it ran with those it refused (too long): order kept, the rest as before."""
    rows, generated, curated, criterion = _generate_and_curate(name, keep_samples=True)
    rule, task_name, method = CASES[name][:3]
    errors = [None] * len(rows)
    errors[1] = "too_long: the direct prompt has 9999 tokens"
    ran = generated.filter(pa.array([error is None for error in errors]))
    merged = with_input_errors(ran, rows, errors)
    assert merged.schema == GENERATED_SCHEMA
    assert merged["input_id"].to_pylist() == [row["input_id"] for row in rows]
    assert merged["input_error"].to_pylist() == errors and merged["samples"].to_pylist()[1] is None
    kwargs = dict(task=task_name, method=method, model="m", rule=rule, **criterion)
    out = {row["input_id"]: row for row in curate_generated_or_quarantine(merged, kwargs).to_pylist()}
    quarantined = out.pop(rows[1]["input_id"])
    assert (quarantined["status"], quarantined["reason"]) == ("quarantined", "too_long")
    expected = curated.to_pylist()
    assert list(out.values()) == expected[:1] + expected[2:]
