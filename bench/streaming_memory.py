"""Bounded memory on a job whose inputs far exceed the object store: Ray Data streams and backpressures.

The plan has the generate stage's shape (`s2d.engine.stages.generate`): an input source read block by block, an actor
pool of replicas (two), the real curation function, and the driver consuming curated batches. The inputs are
made large on purpose (each carries `--pad-kib` of context) so their total is many times the object store
(`--object-store-mib`) and a sizeable part of RAM. The replica here is a stand-in with the replica's Arrow
contract (n sample texts + token counts per input) that answers instantly, so the run measures the data path,
not vLLM's speed. It reports the peak object-store use, the driver's peak RSS and the peak RSS of all Ray
processes together, sampled every 0.2 s.

    .venv/bin/python bench/streaming_memory.py --inputs 40000 --pad-kib 64 --object-store-mib 128
"""

from __future__ import annotations

import argparse
import os
import resource
import threading
import time

import numpy as np


class StandInReplica:
    """The replica's contract (s2d.engine.data.generated.GENERATED_SCHEMA, packed by the replica's own
    `pack_generated`): rows in, n sample texts per input out."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, batch: dict[str, np.ndarray]):
        from s2d.engine.core.criteria import GeneratedInput
        from s2d.engine.core.program import Chain
        from s2d.engine.data.generated import pack_generated

        answers = [f"The answer is {len(str(q)) % 3}." for q in batch["question"]]
        rows = [  # the padded prompt travels on, as a real prompt would
            {"input_id": input_id, "shard_id": shard, "prompt": prompt}
            for input_id, shard, prompt in zip(batch["input_id"], batch["shard_id"], batch["prompt"])
        ]
        generated = [GeneratedInput([[Chain({"answer": answer}, 5)] * self.n]) for answer in answers]
        return pack_generated(rows, generated, keep_samples=False)


def make_inputs(batch: dict[str, np.ndarray], pad: str) -> dict[str, list]:
    ids = [int(i) for i in batch["id"]]
    return {
        "input_id": [f"in-{i:08d}" for i in ids],
        "shard_id": [i // 1000 for i in ids],
        "question": [f"question {i}" for i in ids],
        "prompt": [f"{pad} question {i}" for i in ids],
    }


class Sampler(threading.Thread):
    """Peak summed RSS of the driver and of this Ray session's processes (its raylet, GCS and their children).

    Pages of the shared-memory object store count in every process that touched them, so the sum is an upper
    bound of the memory really used.
    """

    def __init__(self, root_pids: list[int]):
        super().__init__(daemon=True)
        self.root_pids, self.peak_rss, self.stop = root_pids, 0, threading.Event()

    def run(self) -> None:
        import psutil

        while not self.stop.is_set():
            seen, total = set(), 0
            for pid in self.root_pids:
                try:
                    root = psutil.Process(pid)
                    for proc in [root, *root.children(recursive=True)]:
                        if proc.pid not in seen:
                            seen.add(proc.pid)
                            total += proc.memory_info().rss
                except psutil.Error:
                    continue
            self.peak_rss = max(self.peak_rss, total)
            time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=40000)
    parser.add_argument("--pad-kib", type=int, default=64, help="context carried by each input")
    parser.add_argument("--object-store-mib", type=int, default=128)
    parser.add_argument("--n", type=int, default=4, help="samples per input")
    args = parser.parse_args()

    import ray

    from s2d.engine.data.shard_tasks import curate_generated_or_quarantine

    ray.init(num_cpus=2, object_store_memory=args.object_store_mib * 2**20, include_dashboard=False)
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    node = ray._private.worker.global_worker.node
    roots = [os.getpid(), *(info.process.pid for infos in node.all_processes.values() for info in infos)]
    sampler = Sampler(roots)
    sampler.start()
    pad = "x" * (args.pad_kib * 1024)
    input_bytes = args.inputs * len(pad)
    started = time.monotonic()
    dataset = ray.data.range(args.inputs, override_num_blocks=max(1, args.inputs // 64))
    dataset = dataset.map_batches(make_inputs, fn_kwargs={"pad": pad}, batch_size=64)
    generated = dataset.map_batches(
        StandInReplica,
        fn_constructor_kwargs={"n": args.n},
        batch_size=64,
        compute=ray.data.ActorPoolStrategy(size=2, max_tasks_in_flight_per_actor=2),
        num_cpus=0.5,
    )
    curated = generated.map_batches(
        curate_generated_or_quarantine,
        batch_format="pyarrow",
        batch_size=None,
        fn_kwargs={"criterion": {"task": "arithmetic", "threshold": 0.5, "method": "bench", "model": "stand-in"}},
    )
    rows = accepted = 0
    peak_store = 0
    for batch in curated.iter_batches(batch_format="pyarrow", batch_size=None):
        rows += batch.num_rows
        accepted += sum(1 for status in batch.column("status").to_pylist() if status == "accepted")
        if rows % 2048 < batch.num_rows:
            used = ray.available_resources().get("object_store_memory")
            total = ray.cluster_resources().get("object_store_memory")
            if used is not None and total:
                peak_store = max(peak_store, int(total - used))
    seconds = time.monotonic() - started
    sampler.stop.set()
    sampler.join()
    driver_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stats = curated.stats() if hasattr(curated, "stats") else ""
    spilled = [line.strip() for line in str(stats).splitlines() if "spill" in line.lower()][:3]
    gib = 2**30
    print(
        f"inputs: {rows}/{args.inputs} ({accepted} accepted) in {seconds:.0f} s; "
        f"input data {input_bytes / gib:.2f} GiB through an object store of {args.object_store_mib} MiB"
    )
    print(
        f"peak driver RSS {driver_peak / gib:.2f} GiB; peak RSS of all Ray processes + driver "
        f"{sampler.peak_rss / gib:.2f} GiB; object store in use at sampled points <= {peak_store / 2**20:.0f} MiB"
    )
    if spilled:
        print("spilling:", "; ".join(spilled))
    ray.shutdown()


if __name__ == "__main__":
    main()
