"""s2d's pure logic: job spec, tasks, methods, answer extraction, voting, shards, and the pipeline wiring.

Importable without Ray or vLLM; the functions that need them import them on call.
"""
