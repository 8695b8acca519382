"""Distillation training: LoRA (PEFT) or full fine-tuning of the base model on curated System 2 answers.

`s2d.training.trainer.train_model` runs Ray Train workers (`s2d.training.worker`) under DeepSpeed ZeRO
(`training/configs/*.json`), checkpoints through Ray Train and resumes from the last checkpoint; `s2d.training.plan` is
the pure arithmetic (micro-batch plan, lr schedule, run fingerprint); `s2d.training.sft` turns (prompt, answer) rows
into masked causal-LM examples. Heavy dependencies (ray, torch, deepspeed, transformers, peft) are imported only where
used.
"""
