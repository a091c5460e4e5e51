"""Several series in one request: which is which, and the stacked input the model directory needs.

A model trained with ``preprocess.t1_mode: stack`` reads a patient's T1 in-phase and out-of-phase series
as channels (and, with ``t2_channel``, the T2-SPIR registered onto T1). A request then carries those
series together: a zip of the patient's DICOM series (grouped by SeriesInstanceUID when decoded), or
named parts (``file`` + ``out_phase`` + ``t2``) for volumes without headers. This module decides each
series' modality with the router's rule (:func:`~organseg.ensemble.routing.decide_modality`: headers,
or an explicit request the headers must not contradict), checks that the series belong to one
examination and fit together, and names what is missing, doubled or left over. Nothing is guessed: a
series whose sequence is not established is refused by its SeriesNumber/InstanceNumbers.
Pure (no Ray, no torch), so the rules are tested without a server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from organseg.ensemble.modality_classifier import ModalityClassifier
from organseg.ensemble.routing import ModalityError, ModalityPolicy, decide_modality
from organseg.ensemble.spec import EnsembleSpec
from organseg.errors import DataError
from organseg.io.modality import ModalityDecision
from organseg.io.naming import series_label as name_series
from organseg.io.volume import Modality, Volume

#: Request parts that carry a series beside ``file``, and the modality each one is.
PART_MODALITIES: dict[str, Modality] = {
    "out_phase": Modality.MR_T1_OUT,
    "t2": Modality.MR_T2SPIR,
}
#: How messages name each stacked sequence (in channel order), and CT.
KIND_NAMES: dict[Modality, str] = {
    Modality.MR_T1_IN: "T1 in-phase",
    Modality.MR_T1_OUT: "T1 out-of-phase",
    Modality.MR_T2SPIR: "T2-SPIR",
    Modality.CT: "CT",
}
#: The sequence whose grid a stacked answer lies on (and whose series a SEG references).
PRIMARY = Modality.MR_T1_IN
#: The T1 phases: stacked, they are only ever read as a pair.
T1_PHASES = frozenset({Modality.MR_T1_IN, Modality.MR_T1_OUT})


def stacked_modalities(t1_mode: str | None, t2_channel: bool | None) -> frozenset[Modality]:
    """The sequences a model directory reads together as channels of one input (empty when it
    segments each series alone): the one rule for which series go together, for requests, the
    DICOM node's study groups and CHAOS folders alike."""
    if t1_mode != "stack":
        return frozenset()
    kinds = set(T1_PHASES)
    if t2_channel:
        kinds.add(Modality.MR_T2SPIR)
    return frozenset(kinds)


def missing_sequences(stacked: frozenset[Modality], present: Iterable[Modality]) -> list[Modality]:
    """The stacked sequences not among ``present``, in channel order."""
    have = set(present)
    return [k for k in KIND_NAMES if k in stacked and k not in have]


@dataclass(frozen=True)
class StackRule:
    """What :func:`assemble` needs of a model directory: its name (for messages), its ``t1_mode``
    and whether it stacks T2-SPIR as a third channel. Made from an :class:`EnsembleSpec`
    in-process, or from what a served model lists (``GET /v1/models``, ListModels)."""

    ensemble: str
    t1_mode: str | None
    t2_channel: bool = False
    #: What the model's ensembles serve (None: not known, e.g. a served listing), for routing to a
    #: generic MR ensemble (:func:`served_modalities`).
    served: frozenset[Modality] | None = None

    @classmethod
    def of(cls, spec: EnsembleSpec | StackRule) -> StackRule:
        if isinstance(spec, StackRule):
            return spec
        return cls(
            spec.name,
            spec.preprocess.t1_mode,
            bool(spec.preprocess.t2_channel),
            # a stand-in that only carries name and preprocess (tests) serves no generic MR
            served_modalities(spec) if hasattr(spec, "modalities") else None,
        )

    @property
    def sequences(self) -> frozenset[Modality]:
        return stacked_modalities(self.t1_mode, self.t2_channel)


def served_modalities(spec: EnsembleSpec) -> frozenset[Modality]:
    """The modalities a model directory's ensembles serve, and the sequences it stacks as channels
    (an out-of-phase series of a stacking model is claimed by its in-phase ensemble): what routing
    to a generic MR ensemble is decided against."""
    return with_stacked(
        frozenset(spec.modalities()),
        stacked_modalities(spec.preprocess.t1_mode, spec.preprocess.t2_channel),
    )


def with_stacked(serves: frozenset[Modality], stacked: frozenset[Modality]) -> frozenset[Modality]:
    """``serves`` and, when an in-phase ensemble stacks them, the sequences stacked with it."""
    return serves | stacked if PRIMARY in serves else serves


@dataclass(frozen=True)
class RequestHints:
    """How refusals tell the sender to fix a request: the segment routes take a zip or named parts
    (whose modality the request may state); a STOW-RS body has neither."""

    undecided: str  # what to do about a series whose sequence is not established
    add_to: str  # where a missing series goes
    named_parts: bool = True  # whether the request may carry 'out_phase' / 't2' parts


#: The segment routes (HTTP form and gRPC): a DICOM zip, or named parts with an explicit modality.
SEGMENT_HINTS = RequestHints(
    undecided="send that series in a named part (file, out_phase or t2) with an explicit "
    "modality, or fix its SeriesDescription/EchoTime",
    add_to="to the DICOM zip",
)


@dataclass
class SeriesInput:
    """One decoded series of a request: ``label`` names it in messages (SeriesNumber and
    InstanceNumbers, or the request part), ``part`` is the request part it came in, ``requested``
    the modality the request states for it (None: the headers decide)."""

    volume: Volume
    label: str
    part: str = "file"
    requested: str | None = None


@dataclass
class Assembled:
    """What the ensemble of ``modality`` segments: ``image`` (the grid of the answer), the T1
    ``partner`` and ``t2`` channels when the model stacks them, and the decision per series."""

    image: Volume
    modality: Modality
    reason: str
    #: the decision for ``image`` with its evidence (source, confidence): handed to the ensemble,
    #: which does not decide again
    decision: ModalityDecision
    partner: Volume | None = None
    t2: Volume | None = None
    series: list[dict[str, Any]] = field(default_factory=list)
    answers_for: str = ""
    #: channel name → volume, for a model that stacks a dataset's channels
    channels: dict[str, Volume] | None = None


def series_label(volume: Volume, fallback: str) -> str:
    """The name of a decoded series in messages (:func:`organseg.io.naming.series_label`): the one
    its decoder gave it, else its SeriesNumber and InstanceNumbers; ``fallback`` (the request part)
    for a volume without DICOM headers."""
    meta = volume.meta
    if meta.get("series_label"):
        return meta["series_label"]
    if not meta.get("SeriesInstanceUID"):
        return fallback
    return name_series(
        number=meta.get("SeriesNumber"),
        first=meta.get("first_instance"),
        last=meta.get("last_instance"),
    )


def _decide(
    item: SeriesInput,
    several: bool,
    classifier: ModalityClassifier | None,
    policy: ModalityPolicy | None,
    hints: RequestHints,
    served: frozenset[Modality] | None = None,
) -> ModalityDecision:
    try:
        return decide_modality(item.volume, item.requested, classifier, policy, served)
    except ModalityError as exc:
        if not several:
            raise
        hint = f"; {hints.undecided}" if exc.ask else ""
        raise ModalityError(f"{item.label}: {exc.problem}{hint}", ask=False) from None


#: What the series of one request share: one study of one patient (keyword, singular, plural).
EXAMINATION_KEYS = (("StudyInstanceUID", "study", "studies"), ("PatientID", "patient", "patients"))


def examination_split(
    series: list[tuple[str, Callable[[str], Iterable[Any]]]],
) -> tuple[str, str, str, list[list[str]]] | None:
    """The one same-examination rule, for decoded series and STOW-RS headers alike: ``series`` are
    (label, the values of a keyword in it); the first of :data:`EXAMINATION_KEYS` whose values differ
    with the labels grouped by value (values are compared, never returned), or None."""
    for keyword, what, plural in EXAMINATION_KEYS:
        by_value: dict[Any, list[str]] = {}
        for label, values_of in series:
            for value in set(values_of(keyword)):
                by_value.setdefault(value, []).append(label)
        if len(by_value) > 1:
            return keyword, what, plural, list(by_value.values())
    return None


def _same_examination(items: list[SeriesInput]) -> None:
    """Series of one request come from one patient's one study (values are compared, never echoed)."""
    dicom = [i for i in items if i.volume.meta.get("SeriesInstanceUID")]
    split = examination_split(
        [(i.label, lambda key, meta=i.volume.meta: [meta.get(key, "")]) for i in dicom]
    )
    if split is not None:
        key, what, _, _ = split
        labels = ", ".join(i.label for i in dicom)
        raise DataError(
            f"the series are not from one {what}: {key} differs between {labels}; send the "
            f"series of one {what} per request"
        )


def _same_grid(image: SeriesInput, partner: SeriesInput) -> None:
    """T1 in- and out-of-phase are stacked voxel for voxel, so they must share one grid."""
    a, b = image.volume, partner.volume
    ga, gb = a.geometry, b.geometry
    tolerance = 0.1 * min(ga.spacing)
    same = (
        a.shape == b.shape
        and np.allclose(ga.spacing, gb.spacing, rtol=1e-3)
        and np.allclose(ga.direction, gb.direction, atol=1e-3)
        and float(np.max(np.abs(np.subtract(ga.origin, gb.origin)))) <= tolerance
    )
    if not same:
        raise DataError(
            f"T1 in-phase {image.label} (shape {list(a.shape)}) and out-of-phase {partner.label} "
            f"(shape {list(b.shape)}) do not share one grid; they are stacked voxel for voxel, so "
            "send the two echoes of one dual-echo acquisition"
        )


def _one_series_only(items: list[SeriesInput], decisions: list[ModalityDecision], why: str) -> None:
    dicom = all(i.volume.meta.get("SeriesInstanceUID") for i in items)
    listed = ", ".join(
        f"{i.label} ({d.modality.value})" for i, d in zip(items, decisions, strict=True)
    )
    raise DataError(
        f"the request holds {len(items)} {'DICOM ' if dicom else ''}series ({listed}); {why}, so "
        "send one series per request"
    )


def _describe(item: SeriesInput, role: str, decision: ModalityDecision) -> dict[str, Any]:
    return {
        "role": role,
        "series": item.label,
        "modality": decision.modality.value,
        "modality_reason": decision.reason,
        "shape": list(item.volume.shape),
    }


def _missing_series(
    name: str,
    with_t2: bool,
    by_modality: dict[Modality, SeriesInput],
    missing: list[Modality],
    hints: RequestHints,
) -> ModalityError:
    """The refusal of a stacking request without all its channels: what it holds, what it lacks,
    and where the missing series goes."""
    present = ", ".join(f"{KIND_NAMES[m]} {by_modality[m].label}" for m in by_modality)
    wanted = " and ".join(f"the {KIND_NAMES[m]} series" for m in missing)
    parts = {Modality.MR_T1_OUT: "out_phase", Modality.MR_T2SPIR: "t2"}
    named = " or ".join(f"'{parts[m]}'" for m in missing if m in parts)
    how = ""
    if hints.named_parts:
        how = f" (or send the {named} part)" if named else " (the in-phase series goes in 'file')"
    channels = (
        "T1 in-phase, out-of-phase and the registered T2-SPIR"
        if with_t2
        else "T1 in-phase and out-of-phase"
    )
    return ModalityError(
        f"ensemble {name!r} stacks {channels} as channels; the request holds {present} but not "
        f"{wanted}: add {'it' if len(missing) == 1 else 'them'} {hints.add_to}{how}",
        ask=False,
    )


def assemble(
    items: list[SeriesInput],
    spec: EnsembleSpec | StackRule,
    classifier: ModalityClassifier | None = None,
    policy: ModalityPolicy | None = None,
    hints: RequestHints = SEGMENT_HINTS,
) -> Assembled:
    """The input the model directory ``spec`` needs from the series of one request.

    One series: segmented on its own (the ensemble still refuses a T1 series of a stacking model,
    naming the missing one here). Several: they must be the T1 in-phase + out-of-phase (+ T2-SPIR)
    of one examination, exactly what ``spec`` stacks (its :class:`StackRule`); anything missing, doubled, unused
    or undecidable is refused naming the series. Each series' modality is decided by the router's
    rule (headers, an explicit part or field, then a validated ``classifier`` within ``policy``);
    ``hints`` word the refusals for the kind of request (segment route or STOW-RS).
    """
    if not items:
        raise DataError("the request holds no series")
    rule = StackRule.of(spec)
    several = len(items) > 1
    decisions = [_decide(item, several, classifier, policy, hints, rule.served) for item in items]
    stacked = rule.sequences
    stacking = bool(stacked)
    with_t2 = Modality.MR_T2SPIR in stacked
    t1 = (Modality.MR_T1_IN, Modality.MR_T1_OUT)
    by_modality: dict[Modality, SeriesInput] = {}
    chosen: dict[Modality, ModalityDecision] = {}
    if several and not stacking:
        _one_series_only(
            items,
            decisions,
            f"ensemble {rule.ensemble!r} does not stack series (t1_mode: {rule.t1_mode})",
        )
    for item, decision in zip(items, decisions, strict=True):
        other = by_modality.get(decision.modality)
        if other is not None:
            raise DataError(
                f"two {KIND_NAMES.get(decision.modality, decision.modality.value)} series: "
                f"{other.label} and {item.label}; send one series of each sequence"
            )
        by_modality[decision.modality] = item
        chosen[decision.modality] = decision
    if several:
        _same_examination(items)
    has_t1 = any(m in by_modality for m in t1)
    if not (stacking and has_t1):
        if several:
            _one_series_only(
                items, decisions, "only T1 in- and out-of-phase (and T2-SPIR) are stacked"
            )
        (item,), (decision,) = items, decisions
        return Assembled(
            item.volume,
            decision.modality,
            decision.reason,
            series=[_describe(item, "image", decision)],
            answers_for=f"{item.label} ({decision.modality.value}): the label map lies on its grid",
            decision=decision,
        )
    extra = [m for m in by_modality if m not in (*t1, Modality.MR_T2SPIR)]
    if extra:
        names = ", ".join(f"{by_modality[m].label} ({m.value})" for m in extra)
        raise DataError(f"{names} cannot be stacked with T1; send it in a request of its own")
    missing = missing_sequences(stacked, by_modality)
    if missing:
        raise _missing_series(rule.ensemble, with_t2, by_modality, missing, hints)
    if Modality.MR_T2SPIR in by_modality and not with_t2:
        raise DataError(
            f"ensemble {rule.ensemble!r} stacks T1 in- and out-of-phase only (t2_channel is off); "
            f"T2-SPIR {by_modality[Modality.MR_T2SPIR].label} is not used with them: send it in a "
            "request of its own"
        )
    image, partner = by_modality[PRIMARY], by_modality[Modality.MR_T1_OUT]
    _same_grid(image, partner)
    t2 = by_modality.get(Modality.MR_T2SPIR)
    series = [
        _describe(image, "image", chosen[Modality.MR_T1_IN]),
        _describe(partner, "out_phase", chosen[Modality.MR_T1_OUT]),
    ]
    answers = (
        f"T1 in-phase {image.label}: the label map lies on its grid; T1 out-of-phase "
        f"{partner.label} stacked as the second channel"
    )
    if t2 is not None:
        series.append(_describe(t2, "t2", chosen[Modality.MR_T2SPIR]))
        answers += f", T2-SPIR {t2.label} registered onto it as the third"
    in_reason = chosen[Modality.MR_T1_IN].reason
    return Assembled(
        image.volume,
        Modality.MR_T1_IN,
        in_reason,
        partner=partner.volume,
        t2=t2.volume if t2 is not None else None,
        series=series,
        answers_for=answers,
        decision=chosen[Modality.MR_T1_IN],
    )


def channel_list(spec: EnsembleSpec) -> str:
    """The model's input channels as messages name them: ``arterial (CT), venous (CT)``."""
    return ", ".join(f"{c.name} ({c.modality.value})" for c in spec.preprocess.channels or ())


def check_channel_names(spec: EnsembleSpec, present: Iterable[str]) -> list[str]:
    """The model's channel names, in order, when ``present`` holds exactly them; otherwise a
    :class:`ModalityError` (a 4xx when served) naming the missing channels and counting the
    unknown names (counted, not named: a name could be a patient's file name)."""
    wanted = spec.preprocess.channels or ()
    names = [c.name for c in wanted]
    present = list(present)
    if not wanted:
        raise ModalityError(
            f"ensemble {spec.name!r} takes one series per input, not {len(present)} named "
            "channel(s); send the series alone",
            ask=False,
        )
    missing = [n for n in names if n not in present]
    unknown = [p for p in present if p not in names]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing channel(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"{len(unknown)} part(s) named by no channel of it")
        raise ModalityError(
            f"ensemble {spec.name!r} reads the channels {channel_list(spec)} of one case together; "
            f"{' and '.join(problems)}: send every channel, named by its channel name (POST "
            "/v1/segment: one 'channels' file part per channel, its file name the channel's name; "
            "gRPC Segment: the channels map; predict: the case's _0000, _0001, ... files)",
            ask=False,
        )
    return names


def decide_channels(
    spec: EnsembleSpec,
    volumes: dict[str, Volume],
    classifier: ModalityClassifier | None = None,
    policy: ModalityPolicy | None = None,
    served: Iterable[Modality] | None = None,
) -> dict[str, ModalityDecision]:
    """Each channel's modality decision: the channel's name states its modality, as an explicit
    modality does, and DICOM headers that contradict it are refused (:func:`decide_modality`);
    a refusal names the channel."""
    decisions = {}
    for channel in spec.preprocess.channels or ():
        try:
            decisions[channel.name] = decide_modality(
                volumes[channel.name], channel.modality.value, classifier, policy, served
            )
        except ModalityError as exc:
            raise ModalityError(f"channel {channel.name!r}: {exc.problem}", ask=False) from None
    return decisions


def assemble_channels(
    items: list[SeriesInput],
    spec: EnsembleSpec,
    classifier: ModalityClassifier | None = None,
    policy: ModalityPolicy | None = None,
) -> Assembled:
    """The input of a model that stacks a dataset's channels (``preprocess.channels``): one series
    per channel, each sent in the request part named by its channel name
    (:func:`check_channel_names`, :func:`decide_channels`). A channel on another grid than the
    first is refused (422) naming it. The answer lies on the first channel's grid;
    ``Assembled.channels`` maps each channel name to its volume."""
    by_part = {item.part: item for item in items}
    names = check_channel_names(spec, by_part)
    first = by_part[names[0]]
    for name in names:
        other = by_part[name].volume
        if other.shape != first.volume.shape or not other.geometry.isclose(first.volume.geometry):
            raise ModalityError(
                f"channel {name!r} (shape {list(other.shape)}) is not on the grid of "
                f"channel {names[0]!r} (shape {list(first.volume.shape)}); the channels of a case "
                "are stacked voxel for voxel and must share one grid",
                ask=False,
            )
    decisions = decide_channels(spec, {n: by_part[n].volume for n in names}, classifier, policy)
    head = decisions[names[0]]
    return Assembled(
        first.volume,
        head.modality,
        head.reason,
        decision=head,
        series=[_describe(by_part[n], n, decisions[n]) for n in names],
        answers_for=f"channel {names[0]!r}: the label map lies on its grid; channels "
        f"{', '.join(names)} stacked",
        channels={n: by_part[n].volume for n in names},
    )
