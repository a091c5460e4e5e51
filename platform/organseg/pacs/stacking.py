"""How the node segments: one series alone, or a study's stacked series together.

In-process the model directory's spec says what it stacks and :func:`~organseg.ensemble.assembly.assemble`
applies the same rules as a multi-series request (missing, doubled or undecidable series are refused
naming them); served, ``GET /v1/models`` (gRPC ListModels) says it and the server assembles the
series (sent as voxels and geometry, never headers). The served answer is learned lazily: a node may
start before its server. Both also say which modalities the model segments by themselves
(``spec.modalities()``; the served ``ensembles``): a stacked sequence among them (T2-SPIR with a T2
member) is segmented alone too, so its series gets its own result besides serving as a channel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from organseg.ensemble.assembly import (
    PRIMARY,
    T1_PHASES,
    RequestHints,
    SeriesInput,
    StackRule,
    assemble,
    stacked_modalities,
    with_stacked,
)
from organseg.ensemble.prediction import Prediction
from organseg.errors import DataError, OrgansegError
from organseg.io.received import ReceivedSeries
from organseg.io.volume import Modality, Volume
from organseg.serve.connect import DEFAULT_TIMEOUT_S, BackendChoice, open_backend

if TYPE_CHECKING:
    from organseg.ensemble.predictor import EnsemblePredictor
    from organseg.ensemble.routing import ModalityPolicy

#: How the node words a refusal of a study's stacked series: a C-STORE sender states no modality
#: and has no request parts, so the headers must say the sequence and a missing series is sent to the node.
NODE_HINTS = RequestHints(
    undecided="a C-STORE sender states no modality, so the series' headers must say the sequence "
    "(SeriesDescription, or EchoTime with MagneticFieldStrength)",
    add_to="to this node (send the study's missing series)",
    named_parts=False,
)
#: ``(volume, modality or None) → Prediction``: in-process, or a served endpoint over HTTP/gRPC.
Segmenter = Callable[[Volume, str | None], Prediction]
#: ``(series, their spool folders) → (prediction, index of the series the answer lies on)``.
GroupSegmenter = Callable[[list[ReceivedSeries], list[Path]], tuple[Prediction, int]]


log = logging.getLogger("organseg.pacs")

#: Seconds between two questions to a served model about what it stacks and serves.
REFRESH_S = 60.0


@dataclass(frozen=True)
class ModelFacts:
    """What the node must know of the model: its ensemble name (for messages), the sequences it reads
    together, and every modality it segments (stacked or alone)."""

    ensemble: str = ""
    stacked: frozenset[Modality] = frozenset()
    serves: frozenset[Modality] = frozenset()

    @property
    def rule(self) -> StackRule:
        """What :func:`~organseg.ensemble.assembly.assemble` applies to a group of this model."""
        t2 = Modality.MR_T2SPIR in self.stacked
        return StackRule(
            self.ensemble,
            "stack" if self.stacked else None,
            t2,
            with_stacked(self.serves, self.stacked),
        )

    @property
    def also_alone(self) -> frozenset[Modality]:
        """Stacked sequences the model also segments by themselves: a series of one is segmented
        alone too, so the PACS gets its own result (a model with a T2-SPIR member that also stacks
        T2-SPIR as a channel)."""
        return (self.stacked & self.serves) - T1_PHASES


@dataclass
class Stacking:
    """What the model reads together and serves (``learn``) and how it segments a group."""

    learn: Callable[[], ModelFacts]
    segment_group: GroupSegmenter
    #: a served model is asked again this often (a live model switch may change what it stacks);
    #: None: asked once (an in-process model directory does not change under the node)
    refresh_s: float | None = None
    _known: ModelFacts | None = field(default=None, repr=False)
    _learned_at: float = field(default=0.0, repr=False)

    def known(self, now: float | None = None) -> ModelFacts:
        """The model's facts. While none are known an unreachable server raises (the node keeps the
        series spooled and retries on its next poll); once known, a failed refresh keeps the last
        answer until the server answers again."""
        now = time.monotonic() if now is None else now
        due = self.refresh_s is not None and now - self._learned_at >= self.refresh_s
        if self._known is None or due:
            try:
                self._known = self.learn()
            except OrgansegError as exc:
                if self._known is None:
                    raise
                log.warning("cannot ask the model what it stacks, keeping its last answer: %s", exc)
            self._learned_at = now
        return self._known


@dataclass
class NodeBackend:
    """The node's segmenter, its description for the log, and its stacking (None: never stacks)."""

    segment: Segmenter
    describe: str
    stacking: Stacking | None = None
    #: the in-process predictor (``--local``): its policy is the node's modality gate
    predictor: EnsemblePredictor | None = None


def make_backend(
    local: Path | None = None,
    endpoint: str | None = None,
    grpc_target: str | None = None,
    device: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_S,
    policy: ModalityPolicy | None = None,
    token_file: Path | None = None,
) -> NodeBackend:
    """The node's backend for exactly one of ``local``/``endpoint``/``grpc_target``, opened by the one
    factory every caller uses (:func:`organseg.serve.connect.open_backend`); ``policy`` (the modality
    gate) applies in-process only: a served endpoint gates with its serve config."""
    from organseg.ensemble.backends import LocalBackend

    choice = BackendChoice(
        local=local,
        endpoint=endpoint,
        grpc_target=grpc_target,
        device=device,
        policy=policy,
        token_file=token_file,
        timeout=timeout,
    )
    backend = open_backend(choice)
    if isinstance(backend, LocalBackend):
        predictor = backend.predictor
        spec = predictor.spec
        known = ModelFacts(spec.name, StackRule.of(spec).sequences, frozenset(spec.modalities()))
        return NodeBackend(
            backend.segment,
            f"in-process {local}",
            Stacking(lambda: known, _local_group(predictor)),
            predictor,
        )
    remote: Any = backend
    stacking = Stacking(lambda: _listed(remote.models()), _no_group, REFRESH_S)
    stacking.segment_group = _served_group(remote, stacking.known)
    return NodeBackend(
        remote.segment,
        f"HTTP {endpoint}" if endpoint is not None else f"gRPC {grpc_target}",
        stacking,
    )


def _no_group(series: list[ReceivedSeries], folders: list[Path]) -> tuple[Prediction, int]:
    raise OrgansegError("this node does not stack series")


def _listed(listing: dict[str, Any]) -> ModelFacts:
    """The facts in a ``GET /v1/models`` (ListModels) answer; a modality this version does not know
    is left out (never segmented alone on a guess)."""
    found = (Modality.lookup(str(e.get("modality", ""))) for e in listing.get("ensembles", []))
    return ModelFacts(
        str(listing.get("name", "")),
        stacked_modalities(listing.get("t1_mode"), bool(listing.get("t2_channel"))),
        frozenset(m for m in found if m is not None and m is not Modality.UNKNOWN),
    )


def _local_group(predictor: EnsemblePredictor) -> GroupSegmenter:
    """Assemble the group as a multi-series request is, then predict in one call."""

    def run(series: list[ReceivedSeries], folders: list[Path]) -> tuple[Prediction, int]:
        items = [SeriesInput(s.volume, s.label) for s in series]
        assembled = assemble(
            items, predictor.spec, predictor.classifier, predictor.policy, NODE_HINTS
        )
        primary = next(i for i, s in enumerate(series) if s.volume is assembled.image)
        prediction = predictor.predict(
            assembled.image, assembled.modality, assembled.partner, assembled.t2, assembled.decision
        )
        return prediction, primary

    return run


def _served_group(backend: Any, known: Callable[[], ModelFacts]) -> GroupSegmenter:
    """The group as voxels and geometry only (no header leaves the node, as for a single series).

    The node assembles it by the same rules as in-process (:func:`assemble`, each series' sequence
    established by its headers here: a C-STORE sender states none, and the node has no classifier)
    and sends the in-phase image plus the ``out_phase`` (and ``t2``) parts; the server assembles
    them again from those parts and answers on the in-phase grid."""

    def run(series: list[ReceivedSeries], folders: list[Path]) -> tuple[Prediction, int]:
        items = [SeriesInput(s.volume, s.label) for s in series]
        assembled = assemble(items, known().rule, hints=NODE_HINTS)
        primary = next(i for i, s in enumerate(series) if s.volume is assembled.image)

        def bare(volume: Volume | None, kind: Modality) -> Volume | None:
            if volume is None:
                return None
            return Volume(volume.array, geometry=volume.geometry, modality=kind, meta={})

        prediction = backend.client.segment(
            bare(assembled.image, PRIMARY),
            PRIMARY.value,
            "raw",
            bare(assembled.partner, Modality.MR_T1_OUT),
            bare(assembled.t2, Modality.MR_T2SPIR),
        )
        backend.attach_label_set(prediction)  # its SEG is coded from the served model's labels
        if tuple(prediction.labels.shape) != tuple(series[primary].volume.shape):
            raise DataError(
                f"the served answer (shape {list(prediction.labels.shape)}) does not lie on "
                f"{series[primary].label} (shape {list(series[primary].volume.shape)})"
            )
        return prediction, primary

    return run
