"""The node's core, free of networking: take quiet series from the spool, segment, deliver, record.

Everything that can go wrong with a series (unreadable instance, wrong modality, a refused prediction)
quarantines that series with the reason and leaves the node serving the next one; a destination that is
down leaves the results in the outbox and is retried. Log lines name series by a UID hash only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from organseg.ensemble.prediction import Prediction
from organseg.errors import OrgansegError
from organseg.io.volume import Volume
from organseg.pacs.delivery import DeliveryError, Destination
from organseg.pacs.privacy import phi_values, redact, short_uid
from organseg.pacs.results import build_results, from_bytes, to_bytes
from organseg.pacs.series import read_headers, read_received_series
from organseg.pacs.spool import Spool

log = logging.getLogger("organseg.pacs")

#: ``(volume, modality or None) → Prediction``: in-process, or a served endpoint over HTTP/gRPC.
Segmenter = Callable[[Volume, str | None], Prediction]


def make_segmenter(
    local: Path | None = None,
    endpoint: str | None = None,
    grpc_target: str | None = None,
    device: str | None = None,
    timeout: float = 300.0,
) -> tuple[Segmenter, str]:
    """The segmenter for exactly one of ``local``/``endpoint``/``grpc_target``, and its description."""
    chosen = [x for x in (local, endpoint, grpc_target) if x]
    if len(chosen) != 1:
        raise OrgansegError(
            "choose exactly one of --local MODEL_DIR, --endpoint URL or --grpc HOST:PORT"
        )
    if local is not None:
        from organseg.ensemble.predictor import EnsemblePredictor

        predictor = EnsemblePredictor(local, device=device)
        return (lambda volume, modality: predictor.predict(volume, modality)), f"in-process {local}"
    if endpoint is not None:
        from organseg.serve.client import HttpClient

        http = HttpClient(endpoint, timeout)
        return (lambda volume, modality: http.segment(volume, modality)), f"HTTP {endpoint}"
    from organseg.serve.client import GrpcClient

    grpc = GrpcClient(str(grpc_target), timeout)
    return (lambda volume, modality: grpc.segment(volume, modality)), f"gRPC {grpc_target}"


@dataclass
class Outcome:
    """What happened to one series (for logs, tests and the CLI)."""

    key: str
    status: str  # delivered | quarantined | waiting
    detail: str = ""
    files: list[str] = field(default_factory=list)


class SeriesNode:
    """Processes the spool: one series at a time, in arrival order."""

    def __init__(
        self,
        spool: Spool,
        segment: Segmenter,
        destinations: Sequence[Destination],
        outputs: tuple[str, ...] = ("seg",),
        quiet_s: float = 5.0,
        retry_s: float = 30.0,
    ) -> None:
        self.spool = spool
        self.segment = segment
        self.destinations = list(destinations)
        self.outputs = outputs
        self.quiet_s = quiet_s
        self.retry_s = retry_s
        self._retry_after: dict[str, float] = {}

    def poll(self, now: float | None = None) -> list[Outcome]:
        """Process every series that is ready now; returns what happened to each."""
        now = time.time() if now is None else now
        outcomes = []
        for key in self.spool.ready(self.quiet_s, now):
            if self._retry_after.get(key, 0.0) > now:
                continue
            outcomes.append(self.process(key))
        return outcomes

    def process(self, key: str) -> Outcome:
        outbox = self.spool.outbox(key)
        if outbox is None:
            if self.spool.is_done(key) and self.spool.outbox(key) is None:
                self.spool.claim(key)
                return self._quarantine(
                    key,
                    "instances arrived after this series was segmented and delivered; "
                    "send the complete series again to segment it anew",
                    phi=set(),
                )
            work = self.spool.claim(key)
            if work is None:
                return Outcome(key, "waiting")
            phi: set[str] = set()
            try:
                phi = phi_values([ds for _, ds in read_headers(work)[:1]])
                started = time.perf_counter()
                series = read_received_series(work)
                prediction = self.segment(series.volume, None)
                results = build_results(
                    series.volume, prediction, series.datasets, series.label, self.outputs
                )
                files = {f"{n:03d}-{r.Modality}.dcm": to_bytes(r) for n, r in enumerate(results)}
                outbox = self.spool.put_outbox(key, files)
                log.info(
                    "series %s: %d slices, %s segmented in %.1f s (%s)",
                    short_uid(series.datasets[0].get("SeriesInstanceUID")),
                    len(series.datasets),
                    prediction.modality.value,
                    time.perf_counter() - started,
                    ", ".join(f"{o} {v:.0f} mL" for o, v in prediction.volumes_ml.items()),
                )
            except Exception as exc:  # any failure of this series is quarantined, the node lives on
                reason = (
                    str(exc) if isinstance(exc, OrgansegError) else f"{type(exc).__name__}: {exc}"
                )
                if not isinstance(exc, OrgansegError):
                    log.debug("series %s failed", key, exc_info=True)
                return self._quarantine(key, reason, phi)
        return self._deliver(key, outbox)

    def _deliver(self, key: str, outbox: Path) -> Outcome:
        paths = sorted(outbox.glob("*.dcm"))
        datasets = [from_bytes(p.read_bytes()) for p in paths]
        try:
            for destination in self.destinations:
                destination.send(datasets)
        except DeliveryError as exc:
            self._retry_after[key] = time.time() + self.retry_s
            log.warning(
                "series %s: delivery failed, retrying in %.0f s: %s", key[:10], self.retry_s, exc
            )
            return Outcome(key, "waiting", str(exc))
        sent = [f"{ds.Modality} {short_uid(ds.SOPInstanceUID)}" for ds in datasets]
        self.spool.finish(
            key,
            {
                "delivered_at": time.time(),
                "results": sent,
                "destinations": [d.describe() for d in self.destinations],
            },
            keep_results=not self.destinations,
        )
        self._retry_after.pop(key, None)
        where = ", ".join(d.describe() for d in self.destinations) or "results/ (no destination)"
        log.info("series %s: delivered %s to %s", key[:10], ", ".join(sent), where)
        return Outcome(key, "delivered", where, [p.name for p in paths])

    def _quarantine(self, key: str, reason: str, phi: set[str]) -> Outcome:
        reason = redact(reason, phi)
        quarantined = self.spool.quarantine(key, reason)
        log.error("series %s quarantined in %s: %s", key[:10], quarantined.folder.name, reason)
        return Outcome(key, "quarantined", reason)
