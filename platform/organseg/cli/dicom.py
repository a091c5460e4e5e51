"""`organseg dicom listen`: organseg as a DICOM node in front of the served graph (or a local model)."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from organseg.cli._gate import (
    gate_policy,
    min_accuracy_option,
    min_accuracy_per_modality_option,
    min_confidence_option,
    min_series_option,
)

if TYPE_CHECKING:
    from organseg.pacs.listener import Listener
    from organseg.pacs.stacking import NodeBackend

app = typer.Typer(
    help="Hospital integration: a DICOM node (C-STORE in, DICOM-SEG out).", no_args_is_help=True
)


def configure_logging(verbose: bool = False) -> None:
    """One line per event on stderr; the libraries' chatter (association details, highdicom's
    per-attribute copies) stays quiet."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for name in ("pynetdicom", "highdicom"):
        logging.getLogger(name).setLevel(logging.WARNING)


@app.command("listen")
def listen_command(
    ae_title: str = typer.Option("ORGANSEG", "--ae-title", help="This node's AE title."),
    port: int = typer.Option(11112, "--port", help="DICOM port to listen on (0: any free port)."),
    host: str = typer.Option("0.0.0.0", "--host", help="Address to bind."),
    local: Path | None = typer.Option(None, "--local", help="Model directory to run in-process."),
    endpoint: str | None = typer.Option(None, "--endpoint", help="Served HTTP endpoint."),
    grpc_target: str | None = typer.Option(None, "--grpc", help="Served gRPC endpoint HOST:PORT."),
    send_to: list[str] = typer.Option(
        [], "--send-to", help="Deliver results by C-STORE to AE@HOST:PORT (repeatable)."
    ),
    stow: list[str] = typer.Option(
        [], "--stow", help="Deliver results by STOW-RS to this DICOMweb root URL (repeatable)."
    ),
    outputs: str = typer.Option(
        "seg", "--outputs", help="seg, overlay-sc or both (comma-separated)."
    ),
    store: Path | None = typer.Option(
        None,
        "--store",
        help="Spool folder (received series, outbox, quarantine). Default ./organseg-spool",
    ),
    quiet_period: float = typer.Option(
        5.0,
        "--quiet-period",
        help="Seconds without a new instance after which a series is complete.",
    ),
    companion_wait: float = typer.Option(
        120.0,
        "--companion-wait-s",
        help="For a model that stacks a study's T1 in- and out-of-phase (and T2-SPIR) series: "
        "seconds a complete series waits for the other series of its study before it is "
        "quarantined naming what is missing (it is never segmented alone).",
    ),
    device: str | None = typer.Option(None, "--device", help="torch device for --local."),
    timeout: float = typer.Option(
        300.0, "--timeout", help="Seconds to wait for a served endpoint."
    ),
    verbose: bool = typer.Option(False, "--verbose", help="Debug logging."),
    min_confidence: float | None = min_confidence_option("quarantined"),
    min_accuracy: float | None = min_accuracy_option(),
    min_series: int | None = min_series_option(),
    min_accuracy_per_modality: float | None = min_accuracy_per_modality_option(),
) -> None:
    """Receive CT/MR series by C-STORE, segment each complete series (or a study's stacked series
    together), send back a DICOM-SEG."""
    from organseg.ensemble.results import parse_outputs
    from organseg.errors import OrgansegError
    from organseg.pacs.delivery import CStoreDestination, StowDestination
    from organseg.pacs.listener import Listener, spool_path
    from organseg.pacs.node import SeriesNode, make_backend
    from organseg.pacs.spool import Spool

    policy = gate_policy(
        min_confidence,
        min_accuracy,
        min_series,
        in_process=local is not None,
        min_accuracy_per_modality=min_accuracy_per_modality,
    )
    configure_logging(verbose)
    if quiet_period <= 0:
        raise OrgansegError("--quiet-period must be positive")
    if companion_wait < 0:
        raise OrgansegError("--companion-wait-s must not be negative")
    chosen = parse_outputs(outputs)
    destinations = [CStoreDestination.parse(t, ae_title) for t in send_to]
    destinations += [StowDestination(u, timeout) for u in stow]
    backend = make_backend(local, endpoint, grpc_target, device, timeout, policy)
    spool = Spool(spool_path(store))
    node = SeriesNode(
        spool,
        backend.segment,
        destinations,
        chosen,
        quiet_s=quiet_period,
        stacking=backend.stacking,
        companion_wait_s=companion_wait,
    )
    serve_node(Listener(node, ae_title, host, port), backend)


def serve_node(listener: Listener, backend: NodeBackend) -> None:
    """Start the listener, log where it listens, and block until SIGTERM/SIGINT (the process ends
    here: everything is on disk)."""
    bound = listener.start()
    log = logging.getLogger("organseg.pacs")
    log.info(
        "listening as %s on %s:%d; segmenting with %s; results to %s; spool %s",
        listener.ae_title,
        listener.host,
        bound,
        backend.describe,
        ", ".join(d.describe() for d in listener.node.destinations)
        or "the spool's results/ folder",
        listener.node.spool.root,
    )

    def _stop(signum, frame) -> None:
        log.info("stopping (signal %d)", signum)
        listener._stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    listener.wait()
    listener.stop()
    log.info("stopped")
    logging.shutdown()
    # Everything is on disk (the spool is fsynced); skip the interpreter's module teardown, which
    # takes seconds with torch loaded and delays a service manager's restart.
    os._exit(0)
