"""Which spooled series the node segments now, alone or together, and which waited in vain.

A model trained with ``preprocess.t1_mode: stack`` reads a study's T1 in-phase and out-of-phase series
(and with ``t2_channel`` its T2-SPIR) as channels of one input, but a PACS sends them as separate
series, in any order, seconds or minutes apart. So a series of a stacked sequence waits, once quiet,
for the other stacked series of the SAME study (matched by a hash of StudyInstanceUID) to be quiet
too; the group is then segmented in one call. A companion that has not arrived within the companion
wait makes the group expire: its series are quarantined naming what is missing, never segmented
alone (a stacking ensemble has no answer for one phase). Every other series is segmented alone as
before. Pure (no I/O, no clock), so the rules are tested without a spool or a network.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from organseg.ensemble.assembly import KIND_NAMES, PRIMARY, missing_sequences
from organseg.io.naming import series_label
from organseg.io.volume import Modality


@dataclass(frozen=True)
class SpooledSeries:
    """What the planner knows of one spooled series: its key (a UID hash), its study (a hash, empty
    when the header has none), the sequence its headers establish (None: not established, or not
    MR), when its last instance arrived, and whether it was already delivered."""

    key: str
    study: str
    sequence: Modality | None
    last_arrival: float
    done: bool = False

    @property
    def label(self) -> str:
        """``series uid:<hash> (MR-T1-in)`` (:func:`organseg.io.naming.series_label`): the key is the
        UID's hash, so this matches the log's tags."""
        kind = self.sequence.value if self.sequence is not None else "sequence not established"
        return series_label(uid_hash=self.key, sequence=kind)


@dataclass
class Group:
    """Series of one study read together; ``missing`` lists the stacked sequences not (yet) there."""

    study: str
    members: list[SpooledSeries]
    missing: list[Modality] = field(default_factory=list)
    #: when the first of its series became quiet: the companion wait counts from here
    first_quiet: float = 0.0

    @property
    def keys(self) -> list[str]:
        return [m.key for m in self.members]

    @property
    def primary(self) -> str | None:
        """The key of the series the SEG references (its T1 in-phase), if it is there exactly once."""
        found = [m.key for m in self.members if m.sequence is PRIMARY]
        return found[0] if len(found) == 1 else None


@dataclass
class Plan:
    """``alone``: segment each by itself (as without stacking); ``ready``: every stacked sequence is
    there and quiet; ``waiting``: not yet; ``expired``: a companion did not come in time."""

    alone: list[str] = field(default_factory=list)
    ready: list[Group] = field(default_factory=list)
    waiting: list[Group] = field(default_factory=list)
    expired: list[Group] = field(default_factory=list)


def plan(
    series: Iterable[SpooledSeries],
    stacked: frozenset[Modality],
    quiet_s: float,
    companion_wait_s: float,
    now: float,
) -> Plan:
    """Decide for every spooled series (in arrival order within each answer).

    A series counts as complete once no instance arrived for ``quiet_s``. A series already delivered
    (a late instance of it) always goes ``alone``: the node's "arrived after delivery" rule handles it.
    A doubled sequence is not decided here: the group is ready and the assembly names both series.
    """
    result = Plan()
    groups: dict[str, list[SpooledSeries]] = {}
    for entry in sorted(series, key=lambda s: (s.last_arrival, s.key)):
        quiet = now - entry.last_arrival >= quiet_s
        if entry.done or entry.sequence not in stacked:
            if quiet:
                result.alone.append(entry.key)
            continue
        # without a study the companions cannot be matched: the series waits alone, then expires
        groups.setdefault(entry.study or f"series:{entry.key}", []).append(entry)
    for study, members in groups.items():
        present = {m.sequence for m in members}
        missing = missing_sequences(stacked, present)
        quiet_at = [m.last_arrival + quiet_s for m in members]
        group = Group(study, members, missing, min(quiet_at))
        if not all(now >= t for t in quiet_at):
            if missing and now >= group.first_quiet + companion_wait_s:
                result.expired.append(group)  # a companion still arriving would not complete it
            else:
                result.waiting.append(group)
        elif not missing:
            result.ready.append(group)
        elif now >= group.first_quiet + companion_wait_s:
            result.expired.append(group)
        else:
            result.waiting.append(group)
    return result


def missing_reason(group: Group, ensemble: str, waited_s: float) -> str:
    """Why an expired group's series were not segmented, naming what is missing (never a UID)."""
    wanted = " and ".join(f"the {KIND_NAMES[k]} series" for k in group.missing)
    listed = ", ".join(m.label for m in group.members)
    where = "of this study" if group.study and not group.study.startswith("series:") else ""
    if not where:
        wanted += " (this series has no StudyInstanceUID, so none can be matched to it)"
    return (
        f"{listed}: ensemble {ensemble!r} stacks the study's "
        f"{_sequences(group)} as channels and needs {wanted}{' ' + where if where else ''}, "
        f"which did not arrive within {waited_s:g} s of the first series being complete; "
        "send the study's series together (the node segments them as one)"
    )


def _sequences(group: Group) -> str:
    kinds = {m.sequence for m in group.members if m.sequence} | set(group.missing)
    return ", ".join(name for k, name in KIND_NAMES.items() if k in kinds)


def series_info(ds: Dataset) -> dict[str, str]:
    """What the node groups series by, from one instance's header: the study as a hash (never the
    UID itself, which can embed site identifiers) and the MR sequence the header establishes
    (``""`` when it does not, or for CT). Stored once per series in the spool."""
    from organseg.io.modality import header_sequence
    from organseg.pacs.spool import key_of

    study = str(ds.get("StudyInstanceUID", "") or "")
    return {"study": key_of(study) if study else "", "sequence": header_sequence(ds)}
