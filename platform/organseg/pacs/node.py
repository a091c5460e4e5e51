"""The node's core, free of networking: take quiet series from the spool, segment, deliver, record.

Everything that can go wrong with a series (unreadable instance, wrong modality, a refused prediction)
quarantines that series with the reason and leaves the node serving the next one; a destination that is
down leaves the results in the outbox and is retried. Log lines name series by a UID hash only.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from organseg.ensemble.prediction import Prediction
from organseg.ensemble.results import build_results, from_bytes, to_bytes
from organseg.errors import OrgansegError
from organseg.io.naming import series_label
from organseg.io.privacy import redact, short_uid
from organseg.io.received import ReceivedSeries, read_received_series, series_phi
from organseg.io.volume import Modality
from organseg.pacs import grouping
from organseg.pacs.delivery import DeliveryError, Destination
from organseg.pacs.spool import CHANNELS_FILE, Spool
from organseg.pacs.stacking import ModelFacts, Segmenter, Stacking, make_backend

__all__ = ["Outcome", "Segmenter", "SeriesNode", "make_backend"]

log = logging.getLogger("organseg.pacs")


@dataclass
class Outcome:
    """What happened to one series (for logs, tests and the CLI)."""

    key: str
    status: str  # delivered | quarantined | waiting
    detail: str = ""
    files: list[str] = field(default_factory=list)


class SeriesNode:
    """Processes the spool: one series (or one stacked group) at a time, in arrival order.

    With ``stacking`` (a model that reads a study's T1 phases as channels) a series of a stacked
    sequence waits for its study's companions (see :mod:`organseg.pacs.grouping`), at most
    ``companion_wait_s`` after the first of them is complete.
    """

    def __init__(
        self,
        spool: Spool,
        segment: Segmenter,
        destinations: Sequence[Destination],
        outputs: tuple[str, ...] = ("seg",),
        quiet_s: float = 5.0,
        retry_s: float = 30.0,
        stacking: Stacking | None = None,
        companion_wait_s: float = 120.0,
    ) -> None:
        self.spool = spool
        self.segment = segment
        self.destinations = list(destinations)
        self.outputs = outputs
        self.quiet_s = quiet_s
        self.retry_s = retry_s
        self.stacking = stacking
        self.companion_wait_s = companion_wait_s
        self._retry_after: dict[str, float] = {}
        self._unknown_logged = 0.0

    def poll(self, now: float | None = None) -> list[Outcome]:
        """Process every series that is ready now; returns what happened to each."""
        now = time.time() if now is None else now
        facts = self._stacked()
        if facts is None:
            return []
        stacked = facts.stacked
        if not stacked:
            keys = self.spool.ready(self.quiet_s, now)
            return [self.process(k) for k in keys if self._retry_after.get(k, 0.0) <= now]
        outcomes = []
        for key in sorted(p.name for p in (self.spool.root / "outbox").iterdir()):
            if self._retry_after.get(key, 0.0) <= now:  # results built: deliver (resume) first
                outcomes.append(self.process(key))
        plan = grouping.plan(self._spooled(), stacked, self.quiet_s, self.companion_wait_s, now)
        outcomes += [self.process(key) for key in plan.alone]
        for group in plan.ready:
            outcomes += self.process_group(group)
        for group in plan.expired:
            reason = grouping.missing_reason(group, facts.ensemble, self.companion_wait_s)
            outcomes += [self._quarantine(key, reason, set()) for key in group.keys]
        return outcomes

    def _stacked(self) -> ModelFacts | None:
        """What the model stacks; None while a served model cannot be asked (series stay spooled)."""
        if self.stacking is None:
            return ModelFacts()
        try:
            return self.stacking.known()
        except OrgansegError as exc:
            if time.time() - self._unknown_logged > self.retry_s:
                self._unknown_logged = time.time()
                log.warning("cannot learn which series the model stacks, retrying: %s", exc)
            return None

    def _spooled(self) -> list[grouping.SpooledSeries]:
        found = []
        for entry in self.spool.series():
            sequence = entry.info.get("sequence") or None
            try:
                kind = Modality.parse(sequence) if sequence else None
            except Exception:  # an unknown value in an old spool: segmented alone
                kind = None
            study = str(entry.info.get("study", ""))
            found.append(grouping.SpooledSeries(entry.key, study, kind, entry.arrived, entry.done))
        return found

    def process_group(self, group: grouping.Group) -> list[Outcome]:
        """Claim the group's series, segment them in one call, write the results to the primary's
        outbox (naming the others as channels), then deliver: the primary's outcome, or one
        quarantine per series. A channel series of a sequence the model also segments alone gets
        its own results in the same outbox, so the group is still delivered as one unit."""
        primary = group.primary or group.keys[0]
        works = [self.spool.claim(key) for key in group.keys]
        if any(w is None for w in works):
            return [Outcome(primary, "waiting")]
        labels = ", ".join(m.label for m in group.members)
        phi: set[str] = set()
        try:
            folders = [w for w in works if w is not None]
            for folder in folders:
                phi |= series_phi(folder)
            started = time.perf_counter()
            series = [read_received_series(folder) for folder in folders]
            if self.stacking is None:
                raise OrgansegError("this node does not stack series")
            prediction, index = self.stacking.segment_group(series, folders)
            main = group.keys[index]
            files = self._result_files(series[index], prediction)
            others = [k for k in group.keys if k != main]
            alone: dict[str, dict] = {}
            also_alone = self.stacking.known().also_alone
            for member, item in zip(group.members, series, strict=True):
                if member.key != main and member.sequence in also_alone:
                    alone[member.key], own = self._segment_alone(member.key, item, phi)
                    files.update(own)
            channels = {"channels": others, **({"alone": alone} if alone else {})}
            files[CHANNELS_FILE] = json.dumps(channels).encode()
            outbox = self.spool.put_outbox(main, files)
            log.info(
                "%s with %s as channels: %s segmented in %.1f s (%s)",
                series_label(uid_hash=main),
                ", ".join(series_label(uid_hash=k) for k in others),
                prediction.modality.value,
                time.perf_counter() - started,
                ", ".join(f"{o} {v:.0f} mL" for o, v in prediction.volumes_ml.items()),
            )
        except Exception as exc:  # the whole group is quarantined, the node lives on
            if not isinstance(exc, OrgansegError):
                log.debug("group %s failed", primary, exc_info=True)
            reason = f"stacked group {labels}: {_reason(exc)}"
            return [self._quarantine(key, reason, phi) for key in group.keys]
        return [self._deliver(main, outbox)]

    def _segment_alone(
        self, key: str, series: ReceivedSeries, phi: set[str]
    ) -> tuple[dict, dict[str, bytes]]:
        """A channel series segmented by itself, as a lone series is: ``({"files": names}, files)``,
        or ``({"refused": reason}, {})`` - a refusal must not cost the group its valid answer, and
        its reason is kept for the series' done record."""
        try:
            started = time.perf_counter()
            prediction = self.segment(series.volume, None)
            files = self._result_files(series, prediction, prefix=f"{key}-")
        except Exception as exc:
            reason = redact(_reason(exc), phi)
            if not isinstance(exc, OrgansegError):
                log.debug("%s alone failed", series_label(uid_hash=key), exc_info=True)
            label = series_label(uid_hash=key)
            log.warning("%s (a channel) was not segmented alone: %s", label, reason)
            return {"refused": reason}, {}
        log.info(
            "%s (a channel) also segmented alone: %s in %.1f s (%s)",
            series_label(uid_hash=key),
            prediction.modality.value,
            time.perf_counter() - started,
            ", ".join(f"{o} {v:.0f} mL" for o, v in prediction.volumes_ml.items()),
        )
        return {"files": sorted(files)}, files

    def _result_files(
        self, series: ReceivedSeries, prediction: Prediction, prefix: str = ""
    ) -> dict[str, bytes]:
        results = build_results(
            series.volume, prediction, series.datasets, series.label, self.outputs
        )
        return {f"{prefix}{n:03d}-{r.Modality}.dcm": to_bytes(r) for n, r in enumerate(results)}

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
                phi = series_phi(work)
                started = time.perf_counter()
                series = read_received_series(work)
                prediction = self.segment(series.volume, None)
                files = self._result_files(series, prediction)
                outbox = self.spool.put_outbox(key, files)
                log.info(
                    "%s: %d slices, %s segmented in %.1f s (%s)",
                    series_label(uid_hash=key),
                    len(series.datasets),
                    prediction.modality.value,
                    time.perf_counter() - started,
                    ", ".join(f"{o} {v:.0f} mL" for o, v in prediction.volumes_ml.items()),
                )
            except Exception as exc:  # any failure of this series is quarantined, the node lives on
                if not isinstance(exc, OrgansegError):
                    log.debug("%s failed", series_label(uid_hash=key), exc_info=True)
                return self._quarantine(key, _reason(exc), phi)
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
                "%s: delivery failed, retrying in %.0f s: %s",
                series_label(uid_hash=key),
                self.retry_s,
                exc,
            )
            return Outcome(key, "waiting", str(exc))
        sent = {
            p.name: f"{ds.Modality} {short_uid(ds.SOPInstanceUID)}"
            for p, ds in zip(paths, datasets, strict=True)
        }
        facts = self.spool.channel_facts(key)
        channels = [str(k) for k in facts.get("channels", [])]
        alone: dict = facts.get("alone", {})
        own = {name for entry in alone.values() for name in entry.get("files", [])}
        group = [label for name, label in sent.items() if name not in own]
        for other in channels:  # before the primary: a crash here re-delivers the same results
            self.spool.finish(other, _channel_record(key, alone.get(other), sent, group))
        self.spool.finish(
            key,
            {
                "delivered_at": time.time(),
                "results": group,
                "destinations": [d.describe() for d in self.destinations],
                **({"channels": [series_label(uid_hash=k) for k in channels]} if channels else {}),
            },
            keep_results=not self.destinations,
        )
        self._retry_after.pop(key, None)
        where = ", ".join(d.describe() for d in self.destinations) or "results/ (no destination)"
        log.info(
            "%s: delivered %s to %s", series_label(uid_hash=key), ", ".join(sent.values()), where
        )
        return Outcome(key, "delivered", where, [p.name for p in paths])

    def _quarantine(self, key: str, reason: str, phi: set[str]) -> Outcome:
        reason = redact(reason, phi)
        quarantined = self.spool.quarantine(key, reason)
        log.error(
            "%s quarantined in %s: %s", series_label(uid_hash=key), quarantined.folder.name, reason
        )
        return Outcome(key, "quarantined", reason)


def _reason(exc: Exception) -> str:
    """An error as the quarantine and done records state it (our own errors say what to do)."""
    return str(exc) if isinstance(exc, OrgansegError) else f"{type(exc).__name__}: {exc}"


def _channel_record(
    primary: str, alone: dict | None, sent: dict[str, str], group: list[str]
) -> dict:
    """The done record of a series used as a channel of ``primary``: segmented alone too (its own
    results), refused alone (the reason; the group's results), or a channel only."""
    of = series_label(uid_hash=primary)
    record: dict = {"delivered_at": time.time(), "used_as_channel_of": of}
    if alone is None:
        return {**record, "outcome": f"used as channel of {of}", "results": group}
    if "files" in alone:
        return {
            **record,
            "outcome": f"segmented alone and used as channel of {of}",
            "segmented_alone": True,
            "results": [sent[name] for name in alone["files"] if name in sent],
        }
    reason = str(alone.get("refused", "not recorded"))
    return {
        **record,
        "outcome": f"used as channel of {of}; segmenting it alone was refused",
        "segmented_alone": False,
        "refused_alone": reason,
        "results": group,
    }
