"""The replica actor on a real vLLM CPU engine: samples come from vLLM's `n`, chains continue one by one."""

from __future__ import annotations

import pytest

from actors.replica import GenerationReplica
from engine.program import SamplingRequest
from engine.spec import parse_spec
from engine.tasks import get_task

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
    contexts = [{"question": item.question, "system1_prompt": task.system1_prompt(item.question)}
                for item in task.generate(2, 0, "train")]
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


@pytest.mark.parametrize("method, task", [("rar1", "last_letter"), ("rar2", "coin_flip"), ("s2a", "sycophancy"),
                                          ("cot", "arithmetic")])
def test_every_method_runs_through_the_real_replica(replica, ray_session, method, task):
    from engine.curate import sample_answers
    from engine.methods import get_method

    items = get_task(task).generate(2, 0, "train")
    contexts = [{"question": item.question, "system1_prompt": get_task(task).system1_prompt(item.question)}
                for item in items]
    chains = ray_session.get(replica.run.remote(method, contexts, SamplingRequest(n=2, temperature=0.7, max_tokens=24)))
    step_names = [step.name for step in get_method(method).steps]
    assert [len(per_input) for per_input in chains] == [2, 2]
    for per_input in chains:
        assert all(list(chain.steps) == step_names and chain.num_tokens > 0 for chain in per_input)
        answers = sample_answers(task, [chain.final_text for chain in per_input])
        assert len(answers) == 2  # parsed (or None for an unparseable sample), never an exception
