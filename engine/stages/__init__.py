"""What runs a job: generate, evaluate, report, card, export, inspect, and the Python API over them."""
