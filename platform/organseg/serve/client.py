"""Clients of the served graph: HTTP and gRPC, used by ``organseg predict --endpoint/--grpc`` and tests.

Volumes go over the wire in their own dtype (a 96-slice 512² CT is ~50 MB as int16); DICOM folders are
zipped as they are so the server reads the real headers. Raw volumes are zlib-compressed only when the
server is on another machine: zlib level 1 encodes CT at ~120 MB/s (0.4 s for that volume, and 0.2 s to
decode it on the server), slower than a gigabit link and pure cost over loopback.
Requests are idempotent, so both clients retry what a restarting or overloaded service answers (HTTP
502/503/504 and dropped connections, gRPC UNAVAILABLE and RESOURCE_EXHAUSTED, and a 500/INTERNAL that is
not one of organseg's own error answers, i.e. a dead ingress replica) with bounded exponential backoff,
waiting at least what ``Retry-After`` asks. They send ``$ORGANSEG_API_TOKEN`` (or a token file's
content) as a bearer token when one is set.
"""

from __future__ import annotations

import base64
import io
import logging
import random
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import tenacity

from organseg.ensemble.inputs import InputPlan, PredictInput, plan_inputs
from organseg.ensemble.prediction import Prediction
from organseg.errors import OrgansegError
from organseg.io.slice_order import restack_like
from organseg.io.volume import Geometry, Modality, Volume
from organseg.serve.ops.auth import client_token
from organseg.serve.ops.retry import backoff
from organseg.serve.wire import decode_labels, encode_raw
from organseg.uri import is_uri

T = TypeVar("T")
logger = logging.getLogger(__name__)

MAX_GRPC_MESSAGE = 2**31 - 1  # CT volumes exceed gRPC's 4 MiB client default by far


class ServiceError(OrgansegError):
    """The service answered with an error; the message is the server's."""


class _Retryable(Exception):
    def __init__(self, error: ServiceError, retry_after_s: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff with jitter; ``Retry-After`` from the server is a lower bound."""

    attempts: int = 10
    first_delay_s: float = 0.25
    max_delay_s: float = 8.0
    budget_s: float = 180.0

    def delays(self) -> Iterator[float]:
        delay = self.first_delay_s
        for _ in range(self.attempts - 1):
            yield delay * (0.75 + random.random() / 2)
            delay = min(delay * 2, self.max_delay_s)

    def run(self, attempt: Callable[[], T], what: str) -> T:
        """``attempt()``; on :class:`_Retryable`, wait and try again until attempts or budget run out
        (:func:`organseg.serve.ops.retry.backoff`, the graph's own retry policy, with jitter)."""
        delays = self.delays()

        def wait(state: tenacity.RetryCallState) -> float:
            failure = state.outcome.exception() if state.outcome else None
            after = failure.retry_after_s if isinstance(failure, _Retryable) else None
            return max(next(delays, 0.0), after or 0.0)

        def note(state: tenacity.RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            logger.info("%s: %s; retrying in %.1f s", what, failure, delay)

        retrying = backoff(
            lambda exc: isinstance(exc, _Retryable),
            budget_s=self.budget_s,
            first_delay_s=self.first_delay_s,
            max_delay_s=self.max_delay_s,
            attempts=self.attempts,
            wait=wait,
            before_sleep=note,
        )
        try:
            return retrying(attempt)
        except _Retryable as exc:
            raise exc.error from None


NO_RETRY = RetryPolicy(attempts=1)


def _retry_after(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


def zip_dicom_series(folder: Path) -> bytes:
    """The DICOM files of one series folder as an in-memory zip (what /v1/segment and dicom_zip
    accept).
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
            archive.write(path, arcname=path.name)
    return buffer.getvalue()


def zip_dicom_studies(folders: list[Path]) -> bytes:
    """Several DICOM series folders of one patient (e.g. T1 in-phase, out-of-phase, T2-SPIR) as one
    in-memory zip, each series under its own numbered folder (the server groups the files by
    SeriesInstanceUID, not by these names)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for k, folder in enumerate(folders, start=1):
            for path in sorted(p for p in Path(folder).iterdir() if p.is_file()):
                archive.write(path, arcname=f"series-{k}/{path.name}")
    return buffer.getvalue()


def volume_file_bytes(volume: Volume, compress: bool = False) -> bytes:
    """``volume`` as MetaImage (.mha) bytes: its own dtype and full-precision geometry, written by
    SimpleITK (what a named request part such as ``out_phase`` or ``t2`` carries)."""
    import tempfile

    import SimpleITK as sitk

    with tempfile.TemporaryDirectory(prefix="organseg-client-") as tmp:
        path = Path(tmp) / "series.mha"
        sitk.WriteImage(volume.to_sitk(), str(path), useCompression=compress)
        return path.read_bytes()


def _dicom_folder(volume: Volume | None) -> Path | None:
    """The folder a volume was read from when it is a DICOM series (its files travel as they are)."""
    if volume is None:
        return None
    source = volume.meta.get("source")
    if volume.meta.get("SeriesInstanceUID") and source and Path(source).is_dir():
        return Path(source)
    return None


def is_loopback(target: str) -> bool:
    """Whether ``target`` (a URL or ``host:port``) names this machine."""
    import ipaddress
    from urllib.parse import urlsplit

    host = urlsplit(target if is_uri(target) else f"//{target}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _payload_for(item: PredictInput, compress: bool = True) -> tuple[str, bytes, dict[str, Any]]:
    """DICOM input travels as a zip of the original files (headers intact); everything else as raw voxels."""
    folder = _dicom_folder(item.image)
    if folder is not None:
        return "dicom_zip", zip_dicom_series(folder), {}
    raw = encode_raw(item.image, compress=compress)
    return "raw", raw.pop("data"), raw


def _prediction(result: dict[str, Any], labels: bytes) -> Prediction:
    geometry = Geometry(result["spacing"], result["origin"], result["direction"])
    volume = decode_labels(
        labels, result["output_format"], result["shape"], geometry, result["modality"]
    )
    volume.geometry = geometry
    volume.modality = Modality.parse(result["modality"])
    # gRPC maps carry no order: the labels come back in the model's order (by their voxel value)
    values = result.get("label_values") or {}
    organs = (
        sorted(result["volumes_ml"], key=lambda name: (values.get(name, 1 << 16), name))
        if values
        else list(result["volumes_ml"])
    )
    return Prediction(
        labels=volume,
        modality=volume.modality,
        modality_reason=result["modality_reason"],
        modality_source=result.get("modality_source", ""),
        modality_confidence=result.get("modality_confidence"),
        organs=organs,
        members=list(result["members"]),
        volumes_ml={name: result["volumes_ml"][name] for name in organs},
        uncertainty=dict(result["uncertainty"]),
        timings=dict(result["timings_s"]),
        model_version=result.get("model_version", ""),
        registration=dict(result["registration"]) if result.get("registration") else None,
    )


def _known_modality(volume: Volume) -> str | None:
    return volume.modality.value if volume.modality is not Modality.UNKNOWN else None


class HttpClient:
    def __init__(
        self,
        endpoint: str,
        timeout: float = 300.0,
        compress: bool | None = None,
        token: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``compress``: zlib the raw voxels (default: only when the server is not on this machine)."""
        self.base = endpoint.rstrip("/")
        self.compress = not is_loopback(endpoint) if compress is None else compress
        token = token if token is not None else client_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(timeout=timeout, headers=headers)
        self.retry = retry or RetryPolicy()
        self.last_request_id: str | None = None

    def _check(self, response: httpx.Response) -> dict[str, Any]:
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:500]}
        if not isinstance(body, dict):
            body = {"error": str(body)[:500]}
        self.last_request_id = response.headers.get("x-request-id") or body.get("request_id")
        if response.status_code != 200:
            error = ServiceError(
                f"{self.base} answered {response.status_code}: {body.get('error', body)}"
                + (f" (request id {self.last_request_id})" if self.last_request_id else "")
            )
            ours = "request_id" in body  # organseg's own answer, not a proxy's
            if response.status_code in (502, 503, 504) or (
                response.status_code == 500 and not ours
            ):
                raise _Retryable(error, _retry_after(response.headers.get("retry-after")))
            raise error
        return body

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        def attempt() -> dict[str, Any]:
            try:
                response = self.http.request(method, f"{self.base}{path}", **kwargs)
            except (
                httpx.ConnectError,
                httpx.RemoteProtocolError,
                httpx.ReadError,
                httpx.WriteError,
            ) as exc:
                raise _Retryable(ServiceError(f"cannot reach {self.base}: {exc}")) from None
            except httpx.HTTPError as exc:
                raise ServiceError(f"cannot reach {self.base}: {exc}") from None
            return self._check(response)

        return self.retry.run(attempt, f"{method} {self.base}{path}")

    def segment_bytes(
        self,
        data: bytes,
        filename: str = "volume",
        fields: dict[str, Any] | None = None,
        parts: dict[str, bytes] | None = None,
    ) -> dict[str, Any]:
        """POST ``data`` (a volume file, DICOM zip or raw voxels named ``filename``) with the form
        ``fields`` and the file ``parts`` (``out_phase``, ``t2``); the JSON answer, or an
        OrgansegError carrying the server's message.
        """
        form = {
            k: (",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
            for k, v in (fields or {}).items()
            if v is not None
        }
        files = {"file": (filename, data)}
        files.update({name: (f"{name}.mha", content) for name, content in (parts or {}).items()})
        return self._call("POST", "/v1/segment", files=files, data=form)

    def segment(
        self,
        volume: Volume,
        modality: str | None = None,
        output_format: str = "raw",
        partner: Volume | None = None,
        t2: Volume | None = None,
    ) -> Prediction:
        """Send raw voxels; the modality defaults to the one the volume records (raw voxels carry no
        header). For models that stack T1: ``volume`` is T1 in-phase, ``partner`` the out-of-phase
        series and ``t2`` the T2-SPIR series (sent as the ``out_phase`` and ``t2`` parts)."""
        modality = modality or _known_modality(volume)
        raw = encode_raw(volume, compress=self.compress)
        data = raw.pop("data")
        parts = {
            name: volume_file_bytes(part, self.compress)
            for name, part in (("out_phase", partner), ("t2", t2))
            if part is not None
        }
        result = self.segment_bytes(
            data,
            "volume.raw",
            {**raw, "modality": modality, "output_format": output_format},
            parts,
        )
        return _prediction(result, base64.b64decode(result["labels"]))

    def segment_channels(
        self, channels: dict[str, Volume], output_format: str = "raw"
    ) -> Prediction:
        """Send every channel of a case to a model that stacks a dataset's channels, each as a
        ``channels`` file part whose file name is the channel's name; the answer lies on the
        first channel's grid."""
        files = [
            ("channels", (name, volume_file_bytes(volume, self.compress)))
            for name, volume in channels.items()
        ]
        result = self._call(
            "POST", "/v1/segment", files=files, data={"output_format": output_format}
        )
        return _prediction(result, base64.b64decode(result["labels"]))

    def segment_dicom(self, folders: list[Path], output_format: str = "raw") -> Prediction:
        """Send DICOM series folders of one patient together (one series, or the T1 in-phase,
        out-of-phase and T2-SPIR series a stacking model needs); the server tells them apart by
        their headers and answers on the T1 in-phase grid."""
        data = zip_dicom_studies(list(folders))
        result = self.segment_bytes(data, "series.zip", {"output_format": output_format})
        return _prediction(result, base64.b64decode(result["labels"]))

    def models(self) -> dict[str, Any]:
        """GET /v1/models: the served ensembles and members."""
        return self._call("GET", "/v1/models")


class GrpcClient:
    def __init__(
        self,
        target: str,
        timeout: float = 300.0,
        compress: bool | None = None,
        token: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``compress``: zlib the raw voxels (default: only when the server is not on this machine)."""
        import grpc

        from organseg.serve.proto import segmentation_pb2_grpc

        options = [
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE),
        ]
        self.channel = grpc.insecure_channel(target, options=options)
        self.stub = segmentation_pb2_grpc.SegmentationStub(self.channel)
        self.target = target
        self.timeout = timeout
        self.compress = not is_loopback(target) if compress is None else compress
        token = token if token is not None else client_token()
        self.metadata = [("authorization", f"Bearer {token}")] if token else []
        self.retry = retry or RetryPolicy()

    def call(self, method: str, request: Any) -> Any:
        """Call rpc ``method`` with ``request``; a failed call becomes an OrgansegError with the
        server's status and details.
        """
        import grpc

        def attempt() -> Any:
            try:
                return getattr(self.stub, method)(
                    request, timeout=self.timeout, metadata=self.metadata
                )
            except grpc.RpcError as exc:
                error = ServiceError(f"{self.target} answered {exc.code().name}: {exc.details()}")
                trailing = dict(exc.trailing_metadata() or ())
                # organseg's own answers end in [request_id=...]; the proxy's (a dead router replica,
                # a full router queue) do not. RESOURCE_EXHAUSTED is retried when it means "full"
                # (Retry-After, or the proxy's backpressure), never when a request is too large.
                ours = "[request_id=" in (exc.details() or "")
                code = exc.code()
                retryable = (
                    code == grpc.StatusCode.UNAVAILABLE
                    or (code == grpc.StatusCode.INTERNAL and not ours)
                    or (
                        code == grpc.StatusCode.RESOURCE_EXHAUSTED
                        and ("retry-after" in trailing or not ours)
                    )
                )
                if retryable:
                    raise _Retryable(error, _retry_after(trailing.get("retry-after"))) from None
                raise error from None

        return self.retry.run(attempt, f"{method} {self.target}")

    def segment_request(self, request: Any) -> dict[str, Any]:
        """The SegmentRequest for a volume file, DICOM zip or raw voxels (``raw``: dtype, shape,
        geometry).
        """
        from google.protobuf.json_format import MessageToDict

        reply = self.call("Segment", request)
        return {
            "labels": reply.labels,
            "output_format": reply.output_format,
            "shape": list(reply.shape),
            "spacing": list(reply.spacing),
            "origin": list(reply.origin),
            "direction": list(reply.direction),
            "modality": reply.modality,
            "modality_reason": reply.modality_reason,
            "modality_source": reply.modality_source,
            "modality_confidence": reply.modality_confidence
            if reply.HasField("modality_confidence")
            else None,
            "members": list(reply.members),
            "volumes_ml": dict(reply.volumes_ml),
            "uncertainty": dict(reply.uncertainty),
            "timings_s": dict(reply.timings_s),
            "ensemble": reply.ensemble,
            "model_version": reply.model_version,
            "series": [
                {
                    "role": d.role,
                    "series": d.series,
                    "modality": d.modality,
                    "modality_reason": d.modality_reason,
                    "shape": list(d.shape),
                }
                for d in reply.series
            ],
            "answers_for": reply.answers_for,
            "registration": (
                MessageToDict(reply.registration, preserving_proto_field_name=True)
                if reply.HasField("registration")
                else None
            ),
            "label_values": dict(reply.label_values),
        }

    def segment(
        self,
        volume: Volume,
        modality: str | None = None,
        output_format: str = "raw",
        partner: Volume | None = None,
        t2: Volume | None = None,
    ) -> Prediction:
        """Segment ``volume`` over gRPC (sent as raw voxels): a Prediction whose label map sits on the
        volume's grid; ``modality`` defaults to the one the volume records. For models that stack
        T1: ``volume`` is T1 in-phase, ``partner`` the out-of-phase and ``t2`` the T2-SPIR series."""
        from organseg.serve.proto import segmentation_pb2 as pb

        modality = modality or _known_modality(volume)
        parts = {
            name: pb.SeriesPart(raw=pb.RawVolume(**encode_raw(part, compress=self.compress)))
            for name, part in (("out_phase", partner), ("t2", t2))
            if part is not None
        }
        request = pb.SegmentRequest(
            raw=pb.RawVolume(**encode_raw(volume, compress=self.compress)),
            modality=modality or "",
            output_format=output_format,
            **parts,
        )
        result = self.segment_request(request)
        return _prediction(result, result["labels"])

    def segment_channels(
        self, channels: dict[str, Volume], output_format: str = "raw"
    ) -> Prediction:
        """The gRPC counterpart of :meth:`HttpClient.segment_channels` (the ``channels`` map)."""
        from organseg.serve.proto import segmentation_pb2 as pb

        request = pb.SegmentRequest(
            output_format=output_format,
            channels={
                name: pb.SeriesPart(raw=pb.RawVolume(**encode_raw(v, compress=self.compress)))
                for name, v in channels.items()
            },
        )
        result = self.segment_request(request)
        return _prediction(result, result["labels"])

    def segment_dicom(self, folders: list[Path], output_format: str = "raw") -> Prediction:
        """The gRPC counterpart of :meth:`HttpClient.segment_dicom` (one ``dicom_zip``)."""
        from organseg.serve.proto import segmentation_pb2 as pb

        request = pb.SegmentRequest(
            dicom_zip=zip_dicom_studies(list(folders)), output_format=output_format
        )
        result = self.segment_request(request)
        return _prediction(result, result["labels"])

    def models(self) -> Any:
        """The ListModels answer (the served ensembles and members)."""
        from organseg.serve.proto import segmentation_pb2 as pb

        return self.call("ListModels", pb.ListModelsRequest())


class _RemoteBackend:
    client: HttpClient | GrpcClient

    def plan(self, path: Path, modality: str | None) -> list[InputPlan]:
        """As the local backend plans: a CHAOS MR case's T1 phases (and T2-SPIR) go together when the
        served model stacks them."""
        listing = self._listing()
        return plan_inputs(
            path,
            modality,
            stack_t1=listing.get("t1_mode") == "stack",
            with_t2=bool(listing.get("t2_channel")),
            channels=tuple(
                (c["name"], Modality.parse(c["modality"])) for c in listing.get("channels") or ()
            ),
        )

    _cached: dict[str, Any] | None = None

    def _listing(self) -> dict[str, Any]:
        """The served model's listing, asked once (again only when a model switch shows)."""
        if self._cached is None:
            self._cached = self.models()
        return self._cached

    def modalities(self) -> list[Modality]:
        """What the served graph routes (asked once, before any series is sent)."""
        return [Modality.parse(e["modality"]) for e in self._listing()["ensembles"]]

    def model_info(self) -> dict[str, Any]:
        listing = self._listing()
        return {
            "endpoint": self.describe(),
            "name": listing.get("name"),
            "created": listing.get("created"),
            "version": listing.get("model_version") or None,
            "organseg_version": listing.get("organseg_version"),
        }

    def models(self) -> dict[str, Any]:
        """What the served graph serves now (``GET /v1/models`` / ListModels), asked afresh."""
        raise NotImplementedError

    def segment(self, volume: Volume, modality: str | None) -> Prediction:
        """Segment one volume read elsewhere (the DICOM node's received series)."""
        return self.attach_label_set(self.client.segment(volume, modality))

    def predict(self, item: PredictInput, modality: str | None) -> Prediction:
        if item.channels is not None:  # every channel of a case, each named
            return self.attach_label_set(self.client.segment_channels(item.channels))
        if item.partner is not None:
            prediction = self._send_stacked(item, modality)
        else:
            kind, data, raw = _payload_for(item, self.client.compress)
            prediction = self._send(kind, data, raw, modality)
        # the server stacks DICOM by slice position; a CHAOS folder was read here in file-name order
        prediction.labels = restack_like(prediction.labels, item.image)
        return self.attach_label_set(prediction)

    def attach_label_set(self, prediction: Prediction) -> Prediction:
        """The answer with the served model's label set, as a local prediction carries it: what its
        DICOM-SEG is coded and its overlay coloured with (None: CHAOS organ ids). The listing is
        asked again when it describes another model version than the one that answered (a model
        switch); while a switch rolls out, a listing whose labels name every label of the answer
        stands for it, anything else is an error rather than a guess."""
        from organseg.ensemble.describe import label_set_from_description
        from organseg.organs import ORGAN_LABELS

        listing = self._listing()
        if listing.get("model_version", "") != prediction.model_version:
            listing = self._cached = self.models()
        described = listing.get("label_set")  # absent: a server from before label sets (CHAOS)
        label_set = label_set_from_description(described) if described else None
        if listing.get("model_version", "") != prediction.model_version:
            names = set(label_set.names) if label_set is not None else set(ORGAN_LABELS)
            if not set(prediction.organs) <= names:
                raise ServiceError(
                    f"{self.describe()} answered with model {prediction.model_version} but now "
                    f"serves {listing.get('model_version')} with other labels: send again"
                )
        prediction.label_set = label_set
        return prediction

    def _send_stacked(self, item: PredictInput, modality: str | None) -> Prediction:
        """T1 in + out (+ T2-SPIR) together: DICOM series as one zip (the server decides each one's
        modality from its headers), other volumes as the named parts beside the in-phase image."""
        series = [item.image, item.partner, *([item.t2] if item.t2 is not None else [])]
        folders = [_dicom_folder(v) for v in series]
        if all(f is not None for f in folders):
            return self.client.segment_dicom([f for f in folders if f is not None])
        return self.client.segment(
            item.image, modality or _known_modality(item.image), "raw", item.partner, item.t2
        )


class HttpBackend(_RemoteBackend):
    def __init__(
        self,
        endpoint: str,
        timeout: float,
        token: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.client = HttpClient(endpoint, timeout, token=token, retry=retry)

    def describe(self) -> str:
        return f"HTTP {self.client.base}"

    def models(self) -> dict[str, Any]:
        return self.client.models()

    def _send(
        self, kind: str, data: bytes, raw: dict[str, Any], modality: str | None
    ) -> Prediction:
        name = "series.zip" if kind == "dicom_zip" else "volume.raw"
        result = self.client.segment_bytes(
            data, name, {**raw, "modality": modality, "output_format": "raw"}
        )
        return _prediction(result, base64.b64decode(result["labels"]))


class GrpcBackend(_RemoteBackend):
    def __init__(
        self,
        target: str,
        timeout: float,
        token: str | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.client = GrpcClient(target, timeout, token=token, retry=retry)

    def describe(self) -> str:
        return f"gRPC {self.client.target}"

    def models(self) -> dict[str, Any]:
        from google.protobuf.json_format import MessageToDict

        return MessageToDict(self.client.models(), preserving_proto_field_name=True)

    def _send(
        self, kind: str, data: bytes, raw: dict[str, Any], modality: str | None
    ) -> Prediction:
        from organseg.serve.proto import segmentation_pb2 as pb

        fields = {"modality": modality or "", "output_format": "raw"}
        if kind == "dicom_zip":
            request = pb.SegmentRequest(dicom_zip=data, **fields)
        else:
            request = pb.SegmentRequest(raw=pb.RawVolume(data=data, **raw), **fields)
        result = self.client.segment_request(request)
        return _prediction(result, result["labels"])
