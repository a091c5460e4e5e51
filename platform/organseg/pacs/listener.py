"""The DICOM edge: a pynetdicom C-STORE/C-ECHO SCP feeding the spool, and the worker thread.

Each instance is written to the spool before the C-STORE is answered, so an acknowledged instance is never
lost. Instances of other modalities or non-image storage classes are acknowledged and dropped with one
log line per series (a PACS forwarding a whole study must not see failures for them).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from organseg.io.naming import series_label
from organseg.io.received import SEGMENTED_MODALITIES
from organseg.pacs.grouping import series_info
from organseg.pacs.node import SeriesNode
from organseg.pacs.spool import Spool

log = logging.getLogger("organseg.pacs")

#: Single-frame image storage classes the node segments (CT Image, MR Image).
IMAGE_SOP_CLASSES = ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.4")
#: C-STORE status codes (PS3.4 Annex B): success, out of resources, cannot understand.
SUCCESS, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC000


class StoreHandler:
    """Decides per instance: spool it, or acknowledge and ignore it (logged once per series)."""

    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._ignored: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, event) -> int:
        try:
            ds = event.dataset
            series_uid = str(ds.get("SeriesInstanceUID", ""))
            sop_uid = str(ds.get("SOPInstanceUID", ""))
            sop_class = str(ds.get("SOPClassUID", ""))
            modality = str(ds.get("Modality", ""))
        except Exception as exc:  # undecodable header
            log.warning("C-STORE refused: header cannot be decoded (%s)", type(exc).__name__)
            return CANNOT_UNDERSTAND
        if not series_uid or not sop_uid:
            log.warning("C-STORE refused: instance without SeriesInstanceUID/SOPInstanceUID")
            return CANNOT_UNDERSTAND
        if modality not in SEGMENTED_MODALITIES or sop_class not in IMAGE_SOP_CLASSES:
            with self._lock:
                first = series_uid not in self._ignored
                self._ignored.add(series_uid)
            if first:
                log.info(
                    "%s ignored: %s, %s (the node segments single-frame CT/MR images)",
                    series_label(uid=series_uid),
                    f"modality {modality}" if modality else "no modality",
                    _sop_name(sop_class),
                )
            return SUCCESS
        try:
            info = series_info(ds)
        except Exception:  # an odd header value: the series is still spooled, and segmented alone
            info = {}
        try:
            self.spool.add(series_uid, sop_uid, event.encoded_dataset(), info)
        except OSError as exc:
            log.error(
                "cannot spool an instance of %s (%s)", series_label(uid=series_uid), exc.strerror
            )
            return OUT_OF_RESOURCES
        return SUCCESS


def _sop_name(uid: str) -> str:
    from pydicom.uid import UID

    return UID(uid).name if uid else "unknown SOP class"


def make_ae(ae_title: str):
    """An AE accepting C-ECHO and every storage class in every transfer syntax pydicom knows
    (uncompressed, JPEG lossless, JPEG-LS, JPEG 2000, RLE, deflate, ...)."""
    from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title=ae_title)
    ae.add_supported_context(Verification)
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    ae.maximum_pdu_size = 0  # no limit on what we accept
    ae.network_timeout = 60
    ae.acse_timeout = 30
    return ae


class Listener:
    """The SCP plus the worker that polls the spool; ``start()`` returns the bound port."""

    def __init__(
        self,
        node: SeriesNode,
        ae_title: str = "ORGANSEG",
        host: str = "0.0.0.0",
        port: int = 11112,
        poll_s: float = 0.5,
    ) -> None:
        self.node = node
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self.poll_s = poll_s
        self._stop = threading.Event()
        self._server = None
        self._worker: threading.Thread | None = None

    def start(self) -> int:
        from pynetdicom import evt

        ae = make_ae(self.ae_title)
        handlers = [(evt.EVT_C_STORE, StoreHandler(self.node.spool))]
        self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        self.port = int(self._server.server_address[1])
        self._worker = threading.Thread(target=self._work, name="organseg-series", daemon=True)
        self._worker.start()
        return self.port

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                self.node.poll()
            except Exception:  # the worker must survive its own bugs; the series stays spooled
                log.exception("spool worker error")
            self._stop.wait(self.poll_s)

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        if self._worker is not None:
            self._worker.join(timeout=60)

    def wait(self) -> None:
        self._stop.wait()


def spool_path(store: Path | None) -> Path:
    return Path(store) if store is not None else Path.cwd() / "organseg-spool"
