"""Watching and comparing runs: TensorBoard event files and, when asked, MLflow runs (Ray-free).

Rank 0 of every member run writes one TensorBoard event file per (re)start into ``<run>/tensorboard``
and, with an MLflow server configured, each epoch's metrics into that member's MLflow run. The driver
(``organseg train`` / ``organseg tune``) opens the parent run, one child run per member or trial, and
logs the artifacts at the end. Run ids are kept in ``mlflow-run.json`` beside the runs, so a restarted
worker or a rerun command continues the same MLflow runs instead of starting duplicates.

A tracker that is down or slow must never fail or stall training: every MLflow call runs in a daemon
thread bounded by :data:`CALL_TIMEOUT_S`; the first one that fails or times out logs a warning naming
the server and turns MLflow off for the rest of that process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from organseg.errors import ConfigError
from organseg.train import storage
from organseg.uri import is_uri

log = logging.getLogger("organseg.tracking")

TENSORBOARD_DIR = "tensorboard"
MLFLOW_RUN_FILE = "mlflow-run.json"
#: Longest one MLflow call may hold up training (the HTTP timeout below is shorter, with no retries).
CALL_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = "5"

#: Metrics of an epoch that are bookkeeping, not curves.
_NOT_CURVES = frozenset(
    {"epoch", "epochs", "start_epoch", "world_size", "worker_started_at", "finished_at"}
)


# -- what to log --------------------------------------------------------------------------------------
def curve_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The numeric metrics of one epoch worth a curve (losses, Dice, learning rate, throughput)."""
    return {
        k: float(v)
        for k, v in metrics.items()
        if k not in _NOT_CURVES and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def tensorboard_tag(key: str) -> str:
    """Groups TensorBoard's scalars into sections: ``loss/``, ``dice/``, ``optim/``, ``throughput/``."""
    if "loss" in key:
        return f"loss/{key}"
    if "dice" in key:
        return f"dice/{key}"
    if key == "lr":
        return "optim/lr"
    return f"throughput/{key}"


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params: dotted keys, lists as JSON, None as ``null``."""
    out: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if not isinstance(value, str) else value
    return out


def dataset_fingerprint(sample_ids: Iterable[str], preprocess: dict[str, Any]) -> str:
    """Which data a model saw: the cached samples and how they were preprocessed."""
    blob = json.dumps({"samples": sorted(sample_ids), "preprocess": preprocess}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def git_commit() -> str | None:
    """The commit of the working directory's checkout, when there is one (None otherwise)."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None


def shown_uri(uri: str) -> str:
    """The tracking URI without a password, for warnings and logs."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


# -- what travels to the workers ----------------------------------------------------------------------
@dataclass
class TrackingPlan:
    """Where rank 0 of one member run logs to (plain data inside ``TrainPayload.extra``)."""

    run_dir: str
    tensorboard: bool = True
    mlflow_uri: str | None = None
    mlflow_run_id: str | None = None

    KEY = "tracking"

    def attach(self, extra: dict[str, Any]) -> None:
        extra[self.KEY] = asdict(self)

    @classmethod
    def of(cls, extra: dict[str, Any]) -> TrackingPlan | None:
        data = extra.get(cls.KEY)
        return cls(**data) if data else None


# -- MLflow, bounded ----------------------------------------------------------------------------------
def require_mlflow(uri: str) -> None:
    """A clear error when MLflow tracking is asked for but the client is not installed."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError(
            f"MLflow tracking at {shown_uri(uri)} was asked for (tracking.mlflow_uri or --mlflow), "
            "but the mlflow client is not installed: pip install mlflow-skinny (organseg's tracking extra)"
        ) from None


class Mlflow:
    """An MLflow client whose calls never fail or stall the caller.

    Each call runs in a daemon thread and is waited for at most ``timeout_s``; the first failure or
    timeout logs one warning naming the server and turns this client off (later calls return None at
    once), so a tracker that goes away costs training one bounded wait at most.
    """

    def __init__(
        self,
        uri: str,
        timeout_s: float = CALL_TIMEOUT_S,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        # MLflow reads these at every request: a short HTTP timeout and no retry loop (5 retries with
        # backoff by default), so a dead server frees the calling thread in seconds, not minutes
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_S)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        # stdout is the command's answer; where the runs are is said once, on the console
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.timeout_s = timeout_s
        self.warn = warn or log.warning
        self.alive = True
        self.client = MlflowClient(tracking_uri=uri)

    def call(self, what: str, fn: Callable[..., Any], *args: Any, missing_ok: bool = False) -> Any:
        """``fn(*args)``, or None when the server failed, timed out, or (``missing_ok``) has no such
        resource."""
        if not self.alive:
            return None
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["value"] = fn(*args)
            except BaseException as exc:  # reported below, in the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=run, name="mlflow-call", daemon=True)
        thread.start()
        thread.join(self.timeout_s)
        if thread.is_alive():
            self._off(what, f"no answer within {self.timeout_s:g} s")
            return None
        error = box.get("error")
        if error is not None:
            if missing_ok and getattr(error, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
                return None
            self._off(what, f"{type(error).__name__}: {_first_line(error)}")
            return None
        return box.get("value")

    def _off(self, what: str, why: str) -> None:
        self.alive = False
        self.warn(
            f"MLflow tracking at {shown_uri(self.uri)} failed to {what} ({why}); training goes on "
            "without MLflow"
        )

    # -- runs --------------------------------------------------------------------------------------
    def experiment_id(self, name: str) -> str | None:
        found = self.call("look up the experiment", self.client.get_experiment_by_name, name)
        if found is not None:
            return found.experiment_id
        if not self.alive:
            return None
        return self.call("create the experiment", self.client.create_experiment, name)

    def open_run(
        self,
        state_file: str,
        experiment_id: str,
        name: str,
        tags: dict[str, str],
        parent_id: str | None = None,
    ) -> str | None:
        """The run recorded in ``state_file`` (set running again), or a new one recorded there."""
        if storage.exists(state_file):
            state = json.loads(storage.read_text(state_file))
            if state.get("uri") == self.uri and state.get("run_id"):
                run = self.call(
                    "find the run", self.client.get_run, state["run_id"], missing_ok=True
                )
                if run is not None:
                    self.call("resume the run", self.client.update_run, run.info.run_id, "RUNNING")
                    return run.info.run_id
        if not self.alive:
            return None
        all_tags = dict(tags)
        if parent_id is not None:
            all_tags["mlflow.parentRunId"] = parent_id
        run = self.call("create a run", self.client.create_run, experiment_id, None, all_tags, name)
        if run is None:
            return None
        storage.write_text(state_file, json.dumps({"uri": self.uri, "run_id": run.info.run_id}))
        return run.info.run_id

    def log_params(self, run_id: str, params: dict[str, str]) -> None:
        """Params the run does not have yet (a resumed run keeps its first values: MLflow forbids
        changing one)."""
        from mlflow.entities import Param

        run = self.call("read the run", self.client.get_run, run_id)
        if run is None:
            return
        new = [Param(k, v[:6000]) for k, v in params.items() if k not in run.data.params]
        for start in range(0, len(new), 100):  # MLflow takes at most 100 params per batch
            self.call("log params", self.client.log_batch, run_id, [], new[start : start + 100])

    def log_metrics(self, run_id: str, step: int, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, step) for k, v in metrics.items()]
        self.call("log metrics", self.client.log_batch, run_id, batch)

    def last_step(self, run_id: str, key: str = "val_dice") -> int:
        """The last epoch the run has metrics of (-1: none)."""
        history = self.call("read the metric history", self.client.get_metric_history, run_id, key)
        return max((m.step for m in history or []), default=-1)

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        self.call(f"upload {path.name}", self.client.log_artifact, run_id, str(path), folder)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.call(
            "set tags",
            self.client.log_batch,
            run_id,
            [],
            [],
            [RunTag(k, v) for k, v in tags.items()],
        )

    def finish(self, run_id: str, ok: bool) -> None:
        status = "FINISHED" if ok else "FAILED"
        self.call("close the run", self.client.set_terminated, run_id, status)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:300] if text else "no message"


# -- rank 0 of a member run ---------------------------------------------------------------------------
class EpochLog:
    """TensorBoard scalars and MLflow metrics of one member run, written by its rank 0 each epoch.

    ``history`` is what the run's checkpoint remembers (empty on a fresh start). A restarted run purges
    TensorBoard's events from before the restart and writes the history again, so the curves are
    exactly the checkpoint's; MLflow gets the epochs it does not have yet.
    """

    def __init__(
        self,
        plan: TrackingPlan,
        history: list[dict[str, Any]],
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.plan = plan
        self.writer = None
        self.upload_to: str | None = None
        self.mlflow: Mlflow | None = None
        self.logged_step = -1
        if plan.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            folder = storage.join(plan.run_dir, TENSORBOARD_DIR)
            if is_uri(folder):  # event files are written here, then copied next to the run
                self.upload_to, folder = folder, tempfile.mkdtemp(prefix="organseg-tb-")
            self.writer = SummaryWriter(folder, purge_step=0 if history else None)
        if plan.mlflow_uri and plan.mlflow_run_id:
            self.mlflow = Mlflow(plan.mlflow_uri, warn=warn)
            if history:
                self.logged_step = self.mlflow.last_step(plan.mlflow_run_id)
        for entry in history:
            self._write(int(entry.get("epoch", 0)), entry)
        self._flush()

    def log_epoch(self, epoch: int, metrics: dict[str, Any]) -> None:
        self._write(epoch, metrics)
        self._flush()

    def _write(self, epoch: int, metrics: dict[str, Any]) -> None:
        curves = curve_metrics(metrics)
        if self.writer is not None:
            for key, value in curves.items():
                self.writer.add_scalar(tensorboard_tag(key), value, epoch)
        if self.mlflow is not None and self.plan.mlflow_run_id and epoch > self.logged_step:
            self.mlflow.log_metrics(self.plan.mlflow_run_id, epoch, curves)
            self.logged_step = epoch

    def _flush(self) -> None:
        if self.writer is None:
            return
        self.writer.flush()
        if self.upload_to is not None:
            for path in Path(self.writer.get_logdir()).iterdir():
                storage.write_bytes(storage.join(self.upload_to, path.name), path.read_bytes())

    def close(self) -> None:
        if self.writer is not None:
            self._flush()
            self.writer.close()


# -- the driver -----------------------------------------------------------------------------------------
class RunTracking:
    """What ``organseg train`` or ``organseg tune`` tracks: the TensorBoard folder to show, and the
    MLflow parent run with one child run per member (or trial)."""

    def __init__(
        self,
        runs_root: str,
        tensorboard: bool,
        mlflow: Mlflow | None,
        parent_id: str | None,
        experiment_id: str | None,
        tags: dict[str, str],
    ) -> None:
        self.runs_root = runs_root
        self.tensorboard = tensorboard
        self.mlflow = mlflow
        self.parent_id = parent_id
        self.experiment_id = experiment_id
        self.tags = tags
        self.children: dict[str, str] = {}

    @classmethod
    def start(
        cls,
        *,
        runs_root: str,
        tensorboard: bool,
        mlflow_uri: str | None,
        experiment: str,
        run_name: str,
        tags: dict[str, str],
        warn: Callable[[str], None] | None = None,
    ) -> RunTracking:
        """Opens (or, on a rerun, resumes) the parent run; without a reachable server, TensorBoard only."""
        if not mlflow_uri:
            return cls(runs_root, tensorboard, None, None, None, tags)
        require_mlflow(mlflow_uri)
        client = Mlflow(mlflow_uri, warn=warn)
        experiment_id = client.experiment_id(experiment)
        parent = None
        if experiment_id is not None:
            state = storage.join(runs_root, MLFLOW_RUN_FILE)
            parent = client.open_run(state, experiment_id, run_name, tags)
        if parent is None:
            return cls(runs_root, tensorboard, None, None, None, tags)
        return cls(runs_root, tensorboard, client, parent, experiment_id, tags)

    def to_dict(self) -> dict[str, Any] | None:
        """What a Tune trial needs to open its child run (None: no MLflow)."""
        if not self.on:
            return None
        assert self.mlflow is not None
        return {
            "runs_root": self.runs_root,
            "tensorboard": self.tensorboard,
            "uri": self.mlflow.uri,
            "parent_id": self.parent_id,
            "experiment_id": self.experiment_id,
            "tags": self.tags,
        }

    @classmethod
    def of(cls, data: dict[str, Any], warn: Callable[[str], None] | None = None) -> RunTracking:
        """The driver's tracking, inside a Tune trial (:meth:`to_dict`)."""
        return cls(
            data["runs_root"],
            data["tensorboard"],
            Mlflow(data["uri"], warn=warn),
            data["parent_id"],
            data["experiment_id"],
            data["tags"],
        )

    def log_final(self, run_dir: str, metrics: dict[str, float], ok: bool) -> None:
        """A trial's final metrics, and its child run closed (a trial ASHA stopped never closes it)."""
        run_id = child_run_id(run_dir)
        if not self.on or run_id is None:
            return
        assert self.mlflow is not None
        self.mlflow.log_metrics(run_id, 0, metrics)
        self.mlflow.finish(run_id, ok)

    @property
    def on(self) -> bool:
        return self.mlflow is not None and self.mlflow.alive and self.parent_id is not None

    def parent_url(self) -> str | None:
        """The parent run's page in the MLflow UI (its child runs are listed under it)."""
        if (
            not self.on
            or not self.mlflow
            or not self.mlflow.uri.startswith(("http://", "https://"))
        ):
            return None
        base = shown_uri(self.mlflow.uri).rstrip("/")
        return f"{base}/#/experiments/{self.experiment_id}/runs/{self.parent_id}"

    def tensorboard_command(self) -> str:
        return f"tensorboard --logdir {self.runs_root}"

    def child(
        self, name: str, run_dir: str, params: dict[str, Any], tags: dict[str, str] | None = None
    ) -> TrackingPlan:
        """The member's (or trial's) child run, opened or resumed, with its config as params."""
        plan = TrackingPlan(run_dir=run_dir, tensorboard=self.tensorboard)
        if not self.on:
            return plan
        assert self.mlflow is not None
        assert self.experiment_id is not None
        run_id = self.mlflow.open_run(
            storage.join(run_dir, MLFLOW_RUN_FILE),
            self.experiment_id,
            name,
            {**self.tags, **(tags or {})},
            parent_id=self.parent_id,
        )
        if run_id is None:
            return plan
        self.mlflow.log_params(run_id, flatten(params))
        self.children[name] = run_id
        plan.mlflow_uri, plan.mlflow_run_id = self.mlflow.uri, run_id
        return plan

    def finish_child(
        self,
        name: str,
        ok: bool,
        artifacts: Iterable[Path] = (),
        tags: dict[str, str] | None = None,
    ) -> None:
        run_id = self.children.get(name)
        if not self.on or run_id is None:
            return
        assert self.mlflow is not None
        if tags:
            self.mlflow.set_tags(run_id, tags)
        for path in artifacts:
            self.mlflow.log_artifact(run_id, path)
        self.mlflow.finish(run_id, ok)

    @contextlib.contextmanager
    def failed_on_error(self) -> Iterator[None]:
        """Closes the parent run as failed when the command fails inside (not left "running")."""
        try:
            yield
        except BaseException:
            self.finish(False)
            raise

    def finish(
        self, ok: bool, artifacts: Iterable[Path] = (), tags: dict[str, str] | None = None
    ) -> None:
        if not self.on:
            return
        assert self.mlflow is not None
        assert self.parent_id is not None
        if tags:
            self.mlflow.set_tags(self.parent_id, tags)
        for path in artifacts:
            self.mlflow.log_artifact(self.parent_id, path)
        self.mlflow.finish(self.parent_id, ok)


def child_run_id(run_dir: str) -> str | None:
    """The MLflow run id recorded in a member's (or trial's) run folder, if any."""
    state_file = storage.join(run_dir, MLFLOW_RUN_FILE)
    if not storage.exists(state_file):
        return None
    return json.loads(storage.read_text(state_file)).get("run_id")
