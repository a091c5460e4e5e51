"""The ensemble: preprocess once, run the modality's members, average, threshold, postprocess, restore.

:class:`EnsemblePredictor` runs everything in-process (``organseg predict --local``, evaluation,
benchmarks). The Serve graph runs members in their own deployments but calls the same
:func:`prepare_input` and :func:`assemble_prediction`, so both paths give identical masks.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from organseg.ensemble.assembly import check_channel_names, decide_channels, served_modalities
from organseg.ensemble.members import MemberRunner
from organseg.ensemble.modality_classifier import ModalityClassifier
from organseg.ensemble.postprocess import labels_from_member_maps
from organseg.ensemble.prediction import Prediction
from organseg.ensemble.routing import ModalityError, ModalityPolicy, decide_modality
from organseg.ensemble.sliding import feet_first
from organseg.ensemble.spec import EnsembleSpec, load_spec
from organseg.ensemble.version import model_version
from organseg.io.modality import ModalityDecision
from organseg.io.validate import validate_volume
from organseg.io.volume import Modality, Volume
from organseg.preprocess.pipeline import PreparedVolume, prepare_channels, prepare_volume


def prepare_input(
    spec: EnsembleSpec,
    image: Volume,
    modality: Modality | str | None = None,
    partner: Volume | None = None,
    t2: Volume | None = None,
    classifier: ModalityClassifier | None = None,
    policy: ModalityPolicy | None = None,
    decision: ModalityDecision | None = None,
    channels: Mapping[str, Volume] | None = None,
) -> tuple[ModalityDecision, PreparedVolume]:
    """Decide the modality (:func:`decide_modality`, with the model directory's classifier for volumes
    whose headers do not say) and build the network input exactly as training did; ``t2`` is the
    patient's T2-SPIR series when the ensemble stacks it as a third T1 channel (``t2_channel``).
    ``decision``: the one already made for ``image`` with its evidence (the served graph's router
    decides once, in :func:`organseg.ensemble.assembly.assemble`); it is not decided again.
    ``channels``: channel name → volume, for a model that stacks a dataset's channels
    (``preprocess.channels``, :func:`prepare_channels_input`)."""
    if spec.preprocess.channels or channels:
        return prepare_channels_input(spec, channels or {}, classifier, policy)
    validate_volume(image, "the image")  # NaN voxels or a broken geometry never reach a network
    if partner is not None:
        validate_volume(partner, "the partner series")
    if t2 is not None:
        validate_volume(t2, "the T2-SPIR series")
    if decision is None:
        decision = decide_modality(image, modality, classifier, policy, served_modalities(spec))
    spec.members_for(decision.modality)  # fail early when no member serves this modality
    image.modality = decision.modality
    stacking = spec.preprocess.t1_mode == "stack" and decision.modality in (
        Modality.MR_T1_IN,
        Modality.MR_T1_OUT,
    )
    if stacking:
        if partner is None:
            raise ModalityError(
                f"ensemble {spec.name!r} stacks T1 in- and out-phase as channels; send both series",
                ask=False,
            )
        if decision.modality is Modality.MR_T1_OUT:  # channel order is always (in, out)
            image, partner = partner, image
            image.modality, partner.modality = Modality.MR_T1_IN, Modality.MR_T1_OUT
        partner.modality = Modality.MR_T1_OUT
        if spec.preprocess.t2_channel and t2 is None:
            raise ModalityError(
                f"ensemble {spec.name!r} stacks T1 in-phase, out-phase and the registered T2-SPIR "
                "as channels; the T2-SPIR series is missing, send it too",
                ask=False,
            )
        decision = ModalityDecision(
            Modality.MR_T1_IN,
            decision.reason + "; T1 in+out stacked",
            decision.conflicts,
            decision.source,
            decision.confidence,
        )
    prepared = prepare_volume(
        image,
        spec.preprocess,
        partner if stacking else None,
        t2 if stacking and spec.preprocess.t2_channel else None,
    )
    # float16 like the training cache: what members see is bit-identical in-process and when served
    prepared.array = prepared.array.astype(np.float16)
    return decision, prepared


def prepare_channels_input(
    spec: EnsembleSpec,
    channels: Mapping[str, Volume],
    classifier: ModalityClassifier | None = None,
    policy: ModalityPolicy | None = None,
) -> tuple[ModalityDecision, PreparedVolume]:
    """The input of a model that stacks a dataset's channels (``preprocess.channels``): every
    channel by name, none missing or extra (a :class:`ModalityError` naming them, a 4xx when
    served). Naming a channel states its modality, as an explicit modality does: headers that
    contradict it are refused by the router's rule (:func:`decide_modality`). Channels must share
    the first channel's grid (:func:`prepare_channels`); the answer lies on it."""
    names = check_channel_names(spec, channels)
    for name in names:
        validate_volume(channels[name], f"channel {name!r}")
    decided = decide_channels(spec, dict(channels), classifier, policy, served_modalities(spec))
    for channel in spec.preprocess.channels or ():
        channels[channel.name].modality = channel.modality
    decisions = [decided[n] for n in names]
    first = decisions[0]
    decision = ModalityDecision(
        first.modality,
        f"{first.reason}; channels {', '.join(names)} stacked",
        first.conflicts,
        first.source,
        first.confidence,
    )
    spec.members_for(decision.modality)  # fail early when no member serves this modality
    prepared = prepare_channels([channels[n] for n in names], spec.preprocess, names)
    prepared.array = prepared.array.astype(np.float16)  # as the training cache (see prepare_input)
    return decision, prepared


def assemble_prediction(
    spec: EnsembleSpec,
    prepared: PreparedVolume,
    decision: ModalityDecision,
    member_probs: dict[str, np.ndarray],
    timings: dict[str, float] | None = None,
) -> Prediction:
    """Mean of member probabilities → thresholds and components → labels on the original grid."""
    timings = dict(timings or {})
    started = time.perf_counter()
    organs = spec.organs_for(decision.modality)
    entries = {m.name: m for m in spec.members_for(decision.modality)}
    per_organ: dict[str, list[np.ndarray]] = {o: [] for o in organs}
    for name, probs in member_probs.items():
        for k, organ in enumerate(entries[name].organs):
            if organ in per_organ:
                per_organ[organ].append(probs[:, k])  # uint8 p·255, views (no copies)
    _, h, w = prepared.shape
    # a recorded label set gives the values and per-label component rules; CHAOS directories keep the ids
    label_set = spec.label_set() if spec.labels is not None else None
    masks = labels_from_member_maps(
        per_organ, organs, spec.postprocess, grid=(h, w), label_set=label_set
    )
    volume = Volume(
        masks.labels,
        geometry=prepared.geometry,
        modality=decision.modality,
        meta={"organs": ",".join(organs)},
    )
    voxel_ml = prepared.geometry.voxel_volume_ml()
    volumes = {o: float(masks.voxels[o] * voxel_ml) for o in organs}
    timings["postprocess"] = time.perf_counter() - started
    return Prediction(
        labels=volume,
        modality=decision.modality,
        modality_reason=decision.reason,
        modality_source=decision.source,
        modality_confidence=decision.confidence,
        organs=organs,
        members=sorted(member_probs),
        volumes_ml=volumes,
        uncertainty=masks.uncertainty,
        timings=timings,
        registration=prepared.registration.summary() if prepared.registration else None,
        label_set=label_set,
    )


class EnsemblePredictor:
    """A model directory loaded for in-process prediction (members load on first use)."""

    def __init__(
        self,
        model_dir: Path | str,
        device: str | None = None,
        batch_size: int = 16,
        precision: str | None = None,
        compile: bool = False,
        policy: ModalityPolicy | None = None,
    ) -> None:
        self.model_dir = Path(model_dir)
        self.spec = load_spec(self.model_dir)
        #: decides volumes whose headers do not say their modality, when validated (``policy``)
        self.classifier = ModalityClassifier.load(self.model_dir)
        self.policy = policy or ModalityPolicy()
        self.device = device
        self.batch_size = batch_size
        self.precision = precision
        self.compile = compile
        self._runners: dict[str, MemberRunner] = {}
        self.version = model_version(self.model_dir).id

    def runner(self, name: str) -> MemberRunner:
        """The loaded network of member ``name`` (loaded on first use, then kept)."""
        if name not in self._runners:
            entry = next(m for m in self.spec.members if m.name == name)
            self._runners[name] = MemberRunner(
                self.model_dir,
                entry,
                self.device,
                self.batch_size,
                self.precision,
                self.compile,
                per_channel=self.spec.preprocess.channels is not None,
            )
        return self._runners[name]

    def predict(
        self,
        image: Volume,
        modality: Modality | str | None = None,
        partner: Volume | None = None,
        t2: Volume | None = None,
        decision: ModalityDecision | None = None,
        channels: Mapping[str, Volume] | None = None,
    ) -> Prediction:
        """Segment ``image`` in-process with every member that accepts its modality, exactly as the
        Serve graph does; ``partner`` is the other T1 phase when T1 in/out are stacked, ``t2`` the
        T2-SPIR series when the ensemble stacks it too; ``decision`` the modality already decided
        for ``image`` (by :func:`organseg.ensemble.assembly.assemble`), kept with its evidence;
        ``channels`` every named channel of a model that stacks a dataset's channels.
        """
        started = time.perf_counter()
        decision, prepared = prepare_input(
            self.spec,
            image,
            modality,
            partner,
            t2,
            self.classifier,
            self.policy,
            decision,
            channels,
        )
        timings = {"preprocess": time.perf_counter() - started}
        probs = {}
        for entry in self.spec.members_for(decision.modality):
            tick = time.perf_counter()
            runner = self.runner(entry.name)
            probs[entry.name] = runner.run(
                prepared.array, prepared.prepared_geometry.spacing, feet_first(prepared.geometry)
            )
            timings[f"member:{entry.name}"] = time.perf_counter() - tick
        prediction = assemble_prediction(self.spec, prepared, decision, probs, timings)
        prediction.timings["total"] = time.perf_counter() - started
        prediction.model_version = self.version
        return prediction
