"""The five CHAOS tasks: which modalities an ensemble sees and which organs it segments.

CT in CHAOS is annotated for the liver only, so CT members predict the liver even in the all-organ tasks.
"""

from __future__ import annotations

from dataclasses import dataclass

from organseg.errors import ConfigError
from organseg.modalities import Modality

MR_MODALITIES = (Modality.MR_T1_IN, Modality.MR_T1_OUT, Modality.MR_T2SPIR)
ALL_ORGANS = ("liver", "right_kidney", "left_kidney", "spleen")


@dataclass(frozen=True)
class ChaosTask:
    number: int
    title: str
    modalities: tuple[Modality, ...]
    organs: tuple[str, ...]

    def organs_for(self, modalities: list[Modality] | tuple[Modality, ...]) -> tuple[str, ...]:
        """Organs a member trained on ``modalities`` can learn: CT ground truth only has the liver."""
        if any(m is Modality.CT for m in modalities):
            return tuple(o for o in self.organs if o == "liver")
        return self.organs


CHAOS_TASKS: dict[int, ChaosTask] = {
    1: ChaosTask(1, "liver, CT and MR", (Modality.CT, *MR_MODALITIES), ("liver",)),
    2: ChaosTask(2, "liver, CT", (Modality.CT,), ("liver",)),
    3: ChaosTask(3, "liver, MR", MR_MODALITIES, ("liver",)),
    4: ChaosTask(4, "abdominal organs, CT and MR", (Modality.CT, *MR_MODALITIES), ALL_ORGANS),
    5: ChaosTask(5, "abdominal organs, MR", MR_MODALITIES, ALL_ORGANS),
}


def unknown_task_message(number: object) -> str:
    return f"task must be one of {sorted(CHAOS_TASKS)} (CHAOS tasks), got {number}"


def get_task(number: int) -> ChaosTask:
    """The CHAOS task numbered ``number``, or a ConfigError listing the valid numbers."""
    if number not in CHAOS_TASKS:
        raise ConfigError(unknown_task_message(number))
    return CHAOS_TASKS[number]
