"""DeepSpeed's internals that s2d uses, each behind one function here and nowhere else.

Tested with deepspeed 0.19.8; pyproject pins `deepspeed>=0.19,<0.20`: a private method may change in any minor
release. `INTERNALS.check()` probes them; the train stage's driver asks before a run that needs them starts
(s2d.training.trainer.train_model), so an incompatible DeepSpeed fails in one line before training, not after it:

- `zero3_consolidated_state_dict`: `DeepSpeedEngine._zero3_consolidated_16bit_state_dict`, the collective that
  gathers a ZeRO-3 model's 16-bit weights, rank 0 receiving the whole state dict (what `save_16bit_model` calls,
  without its file). Used by a full fine-tune under ZeRO-3 only, to save a Hugging Face model. Off: no safe
  fallback (rank 0 would write sharded placeholders), so such a run is refused with one line; LoRA and ZeRO-0/1/2
  runs do not use it.

DeepSpeed is imported inside the functions only: importing s2d does not import DeepSpeed.
"""

from __future__ import annotations

from typing import Any

from s2d.engine.core.compat import Internal, Internals

_CONSOLIDATE = "_zero3_consolidated_16bit_state_dict"


def zero3_consolidated_state_dict(engine: Any) -> dict[str, Any] | None:
    """Every rank calls it (a collective): rank 0 gets the gathered 16-bit state dict (on CPU), the others None."""
    return getattr(engine, _CONSOLIDATE)()


def _has_consolidation() -> bool:
    from deepspeed.runtime.engine import DeepSpeedEngine

    return callable(getattr(DeepSpeedEngine, _CONSOLIDATE, None))


INTERNALS = Internals(
    "deepspeed",
    ("deepspeed",),
    {
        "zero3_consolidated_state_dict": Internal(
            f"DeepSpeedEngine.{_CONSOLIDATE}",
            "a full fine-tune under ZeRO-3 cannot save its model; use train.mode=lora, a ZeRO-2 config, "
            "or deepspeed>=0.19,<0.20",
            _has_consolidation,
            required=True,
        ),
    },
)
check = INTERNALS.check
