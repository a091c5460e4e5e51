"""Which modality each case of an nnU-Net or MSD dataset is: the evidence the router routes on.

Three sources, each explicit, in this order:

1. a **case map** (``organseg_case_modalities`` in ``dataset.json``, or ``dataset.case_modalities`` in
   the config): case-id patterns (``fnmatch``: ``*``, ``?``, ``[0-4]``) → modality, tried in order,
   the first match deciding. For datasets that mix CT and MR cases under one channel, as AMOS does
   (``amos_0001``–``amos_0500`` CT, ``amos_0501``+ MR). Single-channel datasets only; every case must
   match a pattern and every pattern a case.
2. a **channel map** (``organseg_channel_modalities`` in ``dataset.json``, or
   ``dataset.channel_modalities`` in the config): channel number (``"0"``) or channel name → modality.
3. the channel name itself, when it *is* a modality value (``CT``, ``MR``, ``MR-T2SPIR``...).

The config's map, when given, replaces the dataset's (a team can route a dataset it may not edit).
Nothing is aliased: a ``T2`` channel is not known to be T2-SPIR until someone says so, so it stays
unresolved and training refuses it naming the key to set.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from organseg.modalities import Modality, unknown_modality_message

#: The ``dataset.json`` keys of the two maps (organseg's own; nnU-Net ignores keys it does not know).
CHANNEL_MAP_KEY = "organseg_channel_modalities"
CASE_MAP_KEY = "organseg_case_modalities"


@dataclass(frozen=True)
class ModalityMap:
    """The explicit maps of one dataset: ``channels`` (channel number → modality), ``cases``
    (pattern → modality, in order) and where each came from (named in messages)."""

    channels: Mapping[int, Modality]
    cases: tuple[tuple[str, Modality], ...] = ()
    channels_from: str = CHANNEL_MAP_KEY
    cases_from: str = CASE_MAP_KEY


EMPTY = ModalityMap({})


def channel_modality(channel: str) -> Modality:
    """The modality a channel name states exactly (``CT``, ``MR``, ``MR-T1-in``...), else ``unknown``.

    No aliases: a dataset's ``T2`` channel is not known to be T2-SPIR, and routing never guesses.
    """
    key = channel.strip().lower()
    return next((m for m in Modality.known() if m.value.lower() == key), Modality.UNKNOWN)


def _modality(value: Any, where: str, problems: list[tuple[str, str]]) -> Modality | None:
    """A known modality written exactly as its value (no aliases here: these maps *are* the
    evidence), else a problem at ``where``."""
    if isinstance(value, str):
        found = channel_modality(value)
        if found is not Modality.UNKNOWN:
            return found
    problems.append((where, unknown_modality_message(value)))
    return None


def parse_channel_map(
    raw: Any, channel_names: tuple[str, ...], key: str, problems: list[tuple[str, str]]
) -> dict[int, Modality]:
    """``{"0": "MR-T2SPIR"}`` or ``{"T2": "MR-T2SPIR"}`` → channel number → modality; a key that is
    neither a channel number nor a channel name, or a value that is no modality, is a problem at
    ``key.<entry>``."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.append((key, 'must map channel numbers or names to modalities, e.g. {"0": "MR"}'))
        return {}
    found: dict[int, Modality] = {}
    for entry, value in raw.items():
        where = f"{key}.{entry}"
        text = str(entry)
        if text.isdigit():
            index = int(text)
        elif channel_names.count(text) == 1:
            index = channel_names.index(text)
        else:
            index = -1
        if not 0 <= index < len(channel_names):
            names = {str(i): n for i, n in enumerate(channel_names)}
            problems.append((where, f"no channel {text!r}; the channels are {names}"))
            continue
        modality = _modality(value, where, problems)
        if modality is not None:
            if index in found:
                problems.append((where, f"channel {index} is mapped twice"))
            found[index] = modality
    return found


def parse_case_map(
    raw: Any, channels: int, key: str, problems: list[tuple[str, str]]
) -> tuple[tuple[str, Modality], ...]:
    """``{"amos_0[0-4]??": "CT", "amos_0500": "CT", "amos_*": "MR"}`` → ordered (pattern, modality)."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping) or not raw:
        problems.append((key, 'must map case-id patterns to modalities, e.g. {"amos_05*": "MR"}'))
        return ()
    if channels > 1:
        problems.append(
            (
                key,
                f"applies to single-channel datasets; this one has {channels} channels (give "
                "their modalities by channel instead)",
            )
        )
        return ()
    found = []
    for pattern, value in raw.items():
        modality = _modality(value, f"{key}.{pattern}", problems)
        if modality is not None:
            found.append((str(pattern), modality))
    return tuple(found)


def resolve(
    channel_names: tuple[str, ...], case_ids: list[str], mapping: ModalityMap
) -> tuple[dict[str, tuple[Modality, ...]], list[tuple[str, str]]]:
    """Each case's channel modalities (``unknown`` where nothing establishes one) and the problems of
    the case map (a case no pattern matches, a pattern no case matches), each at its key."""
    by_channel = tuple(
        mapping.channels.get(i, channel_modality(name)) for i, name in enumerate(channel_names)
    )
    result: dict[str, tuple[Modality, ...]] = {}
    problems: list[tuple[str, str]] = []
    used: set[str] = set()
    unmatched: list[str] = []
    for case_id in case_ids:
        if not mapping.cases:
            result[case_id] = by_channel
            continue
        match = next(((p, m) for p, m in mapping.cases if fnmatchcase(case_id, p)), None)
        if match is None:
            unmatched.append(case_id)
            result[case_id] = (Modality.UNKNOWN,)
        else:
            used.add(match[0])
            result[case_id] = (match[1],)
    if unmatched:
        shown = ", ".join(unmatched[:5]) + (
            f" and {len(unmatched) - 5} more" if len(unmatched) > 5 else ""
        )
        problems.append(
            (mapping.cases_from, f"no pattern matches case(s) {shown}; every case needs a modality")
        )
    for pattern, _ in mapping.cases:
        if case_ids and pattern not in used:
            problems.append(
                (
                    f"{mapping.cases_from}.{pattern}",
                    "matches no case (or only cases an earlier pattern already decided)",
                )
            )
    return result, problems
