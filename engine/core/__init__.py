"""Pure decisions: job spec, tasks, methods, answers, votes and criteria, perturbations (no Ray, vLLM or I/O)."""
