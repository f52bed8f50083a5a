"""How a binary classifier turns its positive-class probability into a decision.

The catalog's ``training.decision_threshold`` either fixes the threshold or names a rule the trainer applies
on a validation split (the newest share of the training rows, never the holdout): maximise F1, or the
highest recall whose precision reaches a target, or the highest precision whose recall reaches a target.
Without it a binary classifier decides for the more probable class (threshold 0.5), as before.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ThresholdRule = Literal["fixed", "max_f1", "min_precision", "min_recall"]


class ThresholdPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rule: ThresholdRule = Field(
        description="fixed: use `value`; max_f1: the threshold with the best F1 on the validation split; "
        "min_precision: the lowest threshold whose precision reaches `value` (the most recall at that "
        "precision); min_recall: the highest threshold whose recall reaches `value`."
    )
    value: float | None = Field(
        None, gt=0, lt=1, description="The threshold (fixed) or the precision/recall target (min_*)."
    )

    @model_validator(mode="after")
    def _value(self) -> ThresholdPolicy:
        needs_value = self.rule != "max_f1"
        if needs_value and self.value is None:
            raise ValueError(f"decision_threshold rule {self.rule} needs a value")
        if not needs_value and self.value is not None:
            raise ValueError("decision_threshold rule max_f1 takes no value")
        return self
