"""The replica actor on a real vLLM CPU engine: samples come from vLLM's `n`, chains continue one by one."""

from __future__ import annotations

import pytest

from s2d.actors.replica import GenerationReplica
from s2d.engine.core.criteria import input_context
from s2d.engine.core.program import SamplingRequest
from s2d.engine.core.spec import parse_spec
from s2d.engine.core.tasks import get_task

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def replica(ray_session):
    spec = parse_spec({"model": "smollm2-135m", "out": "unused"})
    actor = ray_session.remote(GenerationReplica).options(num_cpus=1).remote(**GenerationReplica.for_job(spec))
    ray_session.get(actor.ready.remote())
    yield actor
    ray_session.kill(actor)


def test_samples_use_vllm_n_not_duplicated_prompts(replica, ray_session):
    task = get_task("last_letter")
    contexts = [
        {"question": item.question, "system1_prompt": task.system1_prompt(item.question)}
        for item in task.generate(2, 0, "train")
    ]
    before = ray_session.get(replica.stats.remote())
    chains = ray_session.get(replica.run.remote("rar2", contexts, SamplingRequest(n=3, temperature=0.7, max_tokens=24)))
    after = ray_session.get(replica.stats.remote())
    assert [len(per_input) for per_input in chains] == [3, 3]
    # step 1: 2 prompts with n=3; step 2: each of the 6 chains once
    assert after["prompts"] - before["prompts"] == 2 + 6
    assert after["completions"] - before["completions"] == 6 + 6
    for per_input in chains:
        for chain in per_input:
            assert set(chain.steps) == {"rephrase", "respond"}
            assert 0 < chain.num_tokens <= 2 * 24


def test_greedy_system1_is_deterministic(replica, ray_session):
    contexts = [{"question": "q", "system1_prompt": "Name a colour. Reply with one word."}]
    greedy = SamplingRequest(n=1, temperature=0.0, max_tokens=8)
    first = ray_session.get(replica.run.remote("system1", contexts, greedy))
    second = ray_session.get(replica.run.remote("system1", contexts, greedy))
    assert first[0][0].final_text == second[0][0].final_text


def _contexts(task_name, count):
    task = get_task(task_name)
    return [input_context(task, item) for item in task.generate(count, 0, "train")]


@pytest.mark.parametrize(
    "method, task",
    [
        ("rar1", "last_letter"),
        ("rar2", "coin_flip"),
        ("s2a", "sycophancy"),
        ("cot", "arithmetic"),
        ("cot", "multiple_choice"),
        ("cot_fewshot", "last_letter_one"),
    ],
)
def test_every_method_runs_through_the_real_replica(replica, ray_session, method, task):
    from s2d.engine.core.criteria import sample_answers
    from s2d.engine.core.methods import Extractor, get_method
    from s2d.engine.core.tasks import get_task

    chains = ray_session.get(
        replica.run.remote(method, _contexts(task, 2), SamplingRequest(n=2, temperature=0.7, max_tokens=24))
    )
    step_names = [step.name for step in get_method(method).steps]
    assert [len(per_input) for per_input in chains] == [2, 2]
    for per_input in chains:
        assert all(list(chain.steps) == step_names and chain.num_tokens > 0 for chain in per_input)
        answers = sample_answers(get_task(task), Extractor(), [chain.final_text for chain in per_input])
        assert len(answers) == 2  # parsed (or None for an unparseable sample), never an exception


def test_bsm_branches_solves_per_criterion_and_merges(replica, ray_session):
    before = ray_session.get(replica.stats.remote())
    chains = ray_session.get(
        replica.run.remote("bsm", _contexts("pairwise_judge", 2), SamplingRequest(n=2, temperature=0.7, max_tokens=32))
    )
    after = ray_session.get(replica.stats.remote())
    solve_calls = sum(len(chain.steps["solve"]) for per_input in chains for chain in per_input)
    assert all(len(chain.steps["solve"]) <= 5 for per_input in chains for chain in per_input)
    # branch: 2 prompts (n=2); solve: one prompt per criterion of each of the 4 chains; merge: no call
    assert after["prompts"] - before["prompts"] == 2 + solve_calls
    assert after["completions"] - before["completions"] == 2 * 2 + solve_calls
    for per_input in chains:
        for chain in per_input:
            assert list(chain.steps) == ["branch", "solve", "merge"]
            assert 0 < chain.num_tokens <= 32 * (1 + len(chain.steps["solve"]))
            assert get_task("pairwise_judge").normalize(chain.final_text.rsplit("Answer:", 1)[1]) in {
                "A",
                "B",
                "tie",
                None,
            }


def test_custom_method_from_the_job_spec(replica, ray_session):
    spec = parse_spec(
        {
            "model": "smollm2-135m",
            "task": {"name": "coin_flip"},
            "method": {
                "name": "custom",
                "steps": [
                    {"name": "track", "prompt": "{{ question }}\nWho flips the coin?"},
                    {
                        "name": "respond",
                        "prompt": "{{ question }}\nNotes: {{ track }}\nEnd with 'Final: yes' or 'Final: no'.",
                    },
                ],
                "extractor": {"kind": "regex", "pattern": "(?i)final\\s*:\\s*(yes|no)"},
            },
        }
    )
    chains = ray_session.get(
        replica.run.remote(
            spec.method.model_dump(), _contexts("coin_flip", 2), SamplingRequest(n=2, temperature=0.7, max_tokens=24)
        )
    )
    assert all(
        list(chain.steps) == ["track", "respond"] and chain.num_tokens > 0
        for per_input in chains
        for chain in per_input
    )


def _rows(task_name, count):
    import json

    task = get_task(task_name)
    return [
        {
            "input_id": item.input_id,
            "shard_id": 0,
            "question": item.question,
            "prompt": task.system1_prompt(item.question),
            "fields": json.dumps(item.fields),
        }
        for item in task.generate(count, 0, "train")
    ]


@pytest.mark.parametrize(
    "method, task, curate",
    [
        ("bsm", "pairwise_judge", {"rule": "perturbation", "perturbation": "swap_responses", "variants": 2}),
        ("system1", "multiple_choice", {"rule": "perturbation", "perturbation": "shuffle_options", "variants": 3}),
        ("rar1", "last_letter", {"rule": "perturbation", "perturbation": "rename_entities", "variants": 2}),
        ("cot", "arithmetic", {"rule": "usc"}),
    ],
)
def test_consistency_criteria_through_the_replica_stage(replica, ray_session, method, task, curate):
    """The Ray Data stage's contract on the real engine: generated rows -> curated rows with their criterion."""
    from collections import Counter

    from s2d.engine.data.curation import curate_generated
    from s2d.engine.data.generated import GENERATED_SCHEMA

    n = 1 if method == "bsm" else 2
    generated = ray_session.get(
        replica.generate_rows.remote(
            _rows(task, 2),
            method=method,
            task=task,
            curate=curate,
            request=SamplingRequest(n=n, temperature=0.7, max_tokens=24),
        )
    )
    assert generated.schema == GENERATED_SCHEMA
    rows = generated.to_pylist()
    assert len(rows) == 2
    curated_rows = curate_generated(
        generated, task=task, method=method, model="smollm2-135m", rule=curate["rule"], threshold=0.0
    ).to_pylist()
    for row, curated in zip(rows, curated_rows):
        assert curated["criterion"] == curate["rule"] and curated["status"] in {"accepted", "rejected"}
        assert curated["system2_tokens"] > 0 and (curated["status"] == "accepted") == (curated["reason"] is None)
        if curate["rule"] == "perturbation":
            samples_per_variant = Counter(sample["variant"] for sample in row["samples"])
            assert samples_per_variant == {variant: n for variant in range(curate["variants"])}
            assert curated["num_samples"] == n * curate["variants"]
        else:
            assert (row["judge_choice"] is None or 0 <= row["judge_choice"] < n) and row["judge_tokens"] > 0


def test_engine_runs_vllm_offline_batch_sizes_and_records_its_start(replica, ray_session):
    # AsyncLLM's default (server) context caps the running batch at 128 sequences on any device; a batch job
    # gets `vllm.LLM`'s offline defaults (256 on CPU, 1024 on an H100-class GPU).
    max_num_seqs = ray_session.get(
        replica.__ray_call__.remote(lambda actor: actor.generator._engine.vllm_config.scheduler_config.max_num_seqs)
    )
    assert max_num_seqs >= 256
    startup = ray_session.get(replica.__ray_call__.remote(lambda actor: actor.startup_s))
    assert set(startup) == {"imports", "resolve_model", "import_vllm", "engine_start"}
    assert all(seconds >= 0 for seconds in startup.values())


def test_concurrent_batches_run_by_priority_and_the_engine_occupancy_is_recorded(replica, ray_session):
    # The engine runs with vLLM's priority scheduling (each batch's arrival ticket): the oldest batch first,
    # the others filling the rest of the cap. Two batches at once must both come out whole, and the replica's
    # occupancy recorder sees them (busy samples, some with a batch waiting behind the other).
    import sys
    import time

    import ray.cloudpickle as cloudpickle  # Ray pickles with its own copy of cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Ray's workers cannot import this test module
    time.sleep(0.6)  # at least one idle sample first: idle time is not busy time
    outcome = ray_session.get(replica.__ray_call__.remote(_two_batches_at_once))
    assert outcome["rows"] == {"a": 8, "b": 8} and outcome["held"] == 0
    assert outcome["after"]["cap"] >= 256
    assert outcome["after"]["busy_samples"] > outcome["before"]["busy_samples"]
    figures = ray_session.get(replica.occupancy_figures.remote())
    assert 0 < figures["mean_pct"] <= 100 and figures["cap"] == outcome["after"]["cap"]
    policy = ray_session.get(
        replica.__ray_call__.remote(lambda actor: str(actor.generator._engine.vllm_config.scheduler_config.policy))
    )
    assert "priority" in policy.lower()


def _two_batches_at_once(actor) -> dict:
    """Inside the replica: two batches through __call__ in two threads, as Ray Data's pool sends them."""
    import threading

    import pyarrow as pa

    from s2d.engine.core.spec import parse_spec
    from s2d.engine.stages.generate import input_rows

    spec = parse_spec(
        {
            "model": "smollm2-135m",
            "out": "unused",
            "task": {"name": "last_letter", "num_inputs": 16, "seed": 3},
            "method": {"name": "system1"},
            "sampling": {"n": 4, "temperature": 0.7, "max_tokens": 24},
        }
    )
    from s2d.engine.core.methods import resolve_method

    rows = list(input_rows(spec, num_shards=1))
    job = actor.request, actor.method, actor.task  # the module's actor: put back for the other tests
    actor.request = SamplingRequest(n=4, temperature=0.7, max_tokens=24)
    actor.method, actor.task = resolve_method("system1"), get_task("last_letter")
    before = actor.occupancy.summary()
    results: dict[str, int] = {}

    def call(name: str, batch: list[dict]) -> None:
        table = actor(pa.Table.from_pylist(batch).to_pydict())
        results[name] = table.num_rows

    threads = [threading.Thread(target=call, args=(name, rows[i::2])) for i, name in enumerate("ab")]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        actor.request, actor.method, actor.task = job
    return {"rows": results, "before": before, "after": actor.occupancy.summary(), "held": actor._batches_held}
