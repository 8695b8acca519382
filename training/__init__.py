"""Distillation training: LoRA fine-tuning of the base model on curated System 2 answers.

`training.trainer.train_adapter` runs Ray Train workers that train a PEFT LoRA adapter under DeepSpeed ZeRO
(`training/configs/*.json`); `training.sft` turns (prompt, answer) rows into masked causal-LM examples.
Heavy dependencies (ray, torch, deepspeed, transformers, peft) are imported only where they are used.
"""
