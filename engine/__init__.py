"""s2d.engine: the job's logic, in layers that import downwards only (checked by `make lint`, see .importlinter):

- core/    pure decisions: the job spec, tasks, methods as prompt programs, answers, votes and criteria,
           perturbations. No Ray, no vLLM, no I/O but reading its own prompt files.
- data/    the output's layout: sources, input partitioning, table schemas, shards, manifest and commits, lease,
           storage, accounting, samples, curation into tables.
- stages/  what runs a job: generate (Ray Data), evaluate, report, card, export, inspect; the Python API.
- cli.py   the `s2d` command, a thin wrapper over stages.api.
"""
