"""The ingress: HTTP (FastAPI) and gRPC on one deployment, routing each volume to its modality's ensemble.

The modality comes from :func:`organseg.ensemble.routing.decide_modality`, the rule local prediction uses
too: the DICOM header, an explicit request field the header must not contradict, the file's own record,
then the model directory's modality classifier when it was validated and is confident; every answer names
the evidence that decided, and unknown or contradictory modalities are a 422 / INVALID_ARGUMENT, never a
guess. Bad input of any kind is answered with a message and leaves the replica
healthy for the next request. Request ids, auth, body-read timeouts, logs and metrics are applied to every
route and method by ``organseg.serve.ops.edge``; a server error answers with its request id only.
"""

# No `from __future__ import annotations` here: FastAPI must see real annotation objects.

import asyncio
import base64
import math
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from organseg import __version__
from organseg.ensemble.modality_classifier import ModalityClassifier
from organseg.ensemble.prediction import Prediction
from organseg.ensemble.routing import ModalityPolicy, decide_modality
from organseg.ensemble.spec import EnsembleSpec, load_spec
from organseg.ensemble.version import model_version
from organseg.errors import DataError, ModelError
from organseg.io.volume import Volume
from organseg.pacs.stow import STOW_REQUEST_BODY, stow_responses
from organseg.serve.errors import grpc_status, http_status
from organseg.serve.http_schema import (
    READY_RESPONSES,
    SEGMENT_REQUEST_BODY,
    segment_responses,
)
from organseg.serve.ops import edge, requests, tempdirs
from organseg.serve.ops.auth import TokenCheck
from organseg.serve.ops.retry import with_retries
from organseg.serve.wire import (
    OUTPUT_FORMATS,
    RELEASE_AFTER_BYTES,
    WireLimits,
    bounded_request,
    decode_dicom_zip,
    decode_raw,
    decode_upload,
    encode_labels,
    release_memory,
)

api = FastAPI(
    title="organseg",
    version=__version__,
    description="Abdominal organ segmentation ensembles (CHAOS) served by Ray Serve. "
    "POST a NIfTI/MHA/NRRD file, a zip of one DICOM series, or raw voxels to /v1/segment.",
)
api.add_middleware(edge.EdgeMiddleware)


def _seg_bytes(received: Any, prediction: Prediction) -> bytes:
    from organseg.pacs.results import build_results, to_bytes

    (seg,) = build_results(received.volume, prediction, received.datasets, received.label)
    return to_bytes(seg)


def _content_length(request: Request) -> int:
    try:
        return max(0, int(request.headers.get("content-length") or 0))
    except ValueError:
        raise DataError("Content-Length is not a number") from None


def _floats(text: str | None, name: str) -> list[float] | None:
    if text in (None, ""):
        return None
    try:
        return [float(v) for v in str(text).replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise DataError(f"field {name!r} must be comma-separated numbers, got {text!r}") from None


def _ints(text: str | None, name: str) -> list[int]:
    values = _floats(text, name) or []
    if any(not math.isfinite(v) or v != int(v) for v in values):
        raise DataError(f"field {name!r} must be whole numbers, got {text!r}")
    return [int(v) for v in values]


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32)
@serve.ingress(api)
class Router:
    """HTTP routes and gRPC methods (same names as the rpcs in segmentation.proto) on one ingress."""

    def __init__(
        self,
        model_dir: str,
        ensembles: dict[str, DeploymentHandle],
        limits: dict[str, int],
        ops: dict[str, Any] | None = None,
        routing: dict[str, Any] | None = None,
    ) -> None:
        ops = ops or {}
        self.policy = ModalityPolicy(**(routing or {}))
        tempdirs.use_private_tempdir()  # and sweep what a killed replica left behind
        edge.configure(TokenCheck(ops.get("api_token_file")), ops.get("body_timeout_s", 30.0))
        self.retry_budget_s = float(ops.get("retry_budget_s", 60.0))
        # Decoding is CPU work in threads: bound it so that many uploads cannot starve one another.
        self.decoding = asyncio.Semaphore(int(ops.get("decode_concurrency", 2)))
        self.ensembles = ensembles
        self.limits = WireLimits(**limits)
        self._load(model_dir)

    def _load(self, model_dir: str) -> None:
        self.spec: EnsembleSpec = load_spec(model_dir)
        self.version = model_version(model_dir)
        # decides volumes whose headers do not say their modality (when validated; None: none trained)
        self.classifier = ModalityClassifier.load(model_dir)

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config``: ``model_dir`` switches what /v1/models describes (answers carry the version of
        the ensemble that computed them)."""
        if config.get("model_dir"):
            await asyncio.to_thread(self._load, str(config["model_dir"]))

    async def _decode(self, fn: Any, *args: Any) -> Volume:
        started = time.perf_counter()
        async with self.decoding:
            volume = await asyncio.to_thread(fn, *args)
        requests.record(decode_s=round(time.perf_counter() - started, 4))
        return volume

    # -- shared request path ------------------------------------------------------------------------
    async def _predict(self, volume: Volume, modality: str | None) -> "Prediction":
        decision = decide_modality(volume, modality or None, self.classifier, self.policy)
        handle = self.ensembles.get(decision.modality.value)
        if handle is None:
            raise ModelError(
                f"{decision.modality.value} ({decision.reason}) has no ensemble here; this server segments "
                f"{sorted(self.ensembles)}"
            )
        requests.record(modality=decision.modality.value)
        prediction: Prediction = await with_retries(
            lambda: handle.segment.remote(volume, decision.modality.value),
            f"ensemble-{decision.modality.value}",
            self.retry_budget_s,
        )
        prediction.modality_reason = decision.reason  # the router's decision, with its evidence
        prediction.modality_source = decision.source
        prediction.modality_confidence = decision.confidence
        return prediction

    async def _segment(
        self, volume: Volume, modality: str | None, output_format: str
    ) -> dict[str, Any]:
        started = time.perf_counter()
        if output_format not in OUTPUT_FORMATS:
            raise DataError(f"output_format {output_format!r} is not one of {list(OUTPUT_FORMATS)}")
        prediction = await self._predict(volume, modality)
        encoded = await asyncio.to_thread(encode_labels, prediction.labels, output_format)
        report = prediction.report()
        report["timings_s"]["router_total"] = round(time.perf_counter() - started, 4)
        labels = prediction.labels
        requests.record(
            model_version=prediction.model_version,
            slices=int(labels.shape[0]),
            timings_s=report["timings_s"],
            uncertainty=report["uncertainty"],
        )
        return {
            "labels": encoded,
            "output_format": output_format,
            "shape": list(labels.shape),
            "spacing": list(labels.spacing),
            "origin": list(labels.origin),
            "direction": list(labels.direction),
            "ensemble": f"{self.spec.name}/{prediction.modality.value}",
            "model_version": prediction.model_version,
            **{
                k: report[k]
                for k in (
                    "modality",
                    "modality_reason",
                    "modality_source",
                    "modality_confidence",
                    "members",
                    "volumes_ml",
                    "uncertainty",
                    "timings_s",
                )
            },
        }

    async def _models(self) -> dict[str, Any]:
        spec = self.spec
        return {
            "name": spec.name,
            "task": spec.task,
            "organseg_version": spec.organseg_version,
            "created": spec.created,
            "model_version": self.version.id,
            "version": self.version.as_dict(),
            "size": spec.preprocess.size,
            "t1_mode": spec.preprocess.t1_mode,
            "ensembles": [
                {
                    "modality": modality,
                    "members": [m.name for m in spec.members_for(modality)],
                    "organs": spec.organs_for(modality),
                }
                for modality in sorted(self.ensembles)
            ],
            "members": [
                {
                    "name": m.name,
                    "arch": m.arch,
                    "organs": m.organs,
                    "modalities": [x.value for x in m.modalities],
                    "in_channels": m.in_channels,
                    "val_dice": m.val_dice,
                }
                for m in spec.members
            ],
            "modality_classifier": self._classifier_status(),
        }

    def _classifier_status(self) -> dict[str, Any] | None:
        """Whether the modality classifier routes headerless volumes here, and its validation."""
        if self.classifier is None:
            return None
        policy, held = self.policy, self.classifier.held_out
        problem = self.classifier.validation_problem(
            policy.min_held_out_accuracy, policy.min_held_out_series
        )
        return {
            "used": problem is None,
            "why_not": problem,
            "held_out_accuracy": held.accuracy if held else None,
            "held_out_series": {c: n for c, (_, n) in held.per_class.items()} if held else {},
            "min_confidence": policy.min_confidence,
        }

    async def _readiness(self) -> dict[str, Any]:
        async def check(name: str, handle: DeploymentHandle) -> tuple[str, str]:
            try:
                await asyncio.wait_for(handle.health.remote(), timeout=30)
                return name, "ok"
            except Exception as exc:  # report, don't raise: this is a health check
                return name, f"unavailable: {type(exc).__name__}"

        results = dict(await asyncio.gather(*(check(n, h) for n, h in self.ensembles.items())))
        status = "ok" if all(v == "ok" for v in results.values()) else "degraded"
        return {"status": status, "ensembles": results}

    # -- HTTP -------------------------------------------------------------------------------------------
    @api.post(
        "/v1/segment",
        summary="Segment a volume; the ensemble is chosen by modality",
        response_model=None,
        responses=segment_responses(),
        openapi_extra=SEGMENT_REQUEST_BODY,
    )
    async def segment_http(self, request: Request) -> JSONResponse:
        """multipart/form-data with ``file`` (NIfTI/MHA/NRRD, DICOM zip, or raw bytes with ``shape`` and
        ``dtype``), and optional ``modality``, ``output_format`` (nifti | png-zip | raw), ``spacing``,
        ``origin``, ``direction``, ``compression`` (raw only). Labels come back base64-encoded."""
        data = b""
        try:
            declared = _content_length(request)
            self.limits.check_bytes(declared)
            if declared == 0 and not request.headers.get("transfer-encoding"):
                raise DataError("empty request body; send multipart/form-data with a 'file' field")
            if "multipart/form-data" not in request.headers.get("content-type", ""):
                raise DataError("send multipart/form-data with a 'file' field (see /docs)")
            if "boundary=" not in request.headers.get("content-type", ""):
                raise DataError("multipart/form-data without a boundary parameter")
            # the byte limit holds while the body streams in, not after it has been buffered
            form = await bounded_request(request, self.limits).form(max_files=1, max_fields=16)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise DataError("missing 'file' field (the volume, DICOM zip or raw voxels)")
            data = await upload.read()
            self.limits.check_bytes(len(data), "uploaded file")
            fields = {k: str(v) for k, v in form.items() if k != "file"}
            volume = await self._decode(self._decode_form, data, upload.filename, fields)
            result = await self._segment(
                volume, fields.get("modality"), fields.get("output_format") or "nifti"
            )
        except Exception as exc:
            return edge.error_response(exc, http_status(exc))
        finally:
            if len(data) > RELEASE_AFTER_BYTES:
                await asyncio.to_thread(release_memory)
        result["labels"] = base64.b64encode(result["labels"]).decode()
        return JSONResponse(result)

    def _decode_form(self, data: bytes, filename: str | None, fields: dict[str, str]) -> Volume:
        if not data:
            raise DataError("the uploaded file is empty")
        if fields.get("shape"):
            return decode_raw(
                data,
                fields.get("dtype") or "",
                _ints(fields.get("shape"), "shape"),
                _floats(fields.get("spacing"), "spacing"),
                _floats(fields.get("origin"), "origin"),
                _floats(fields.get("direction"), "direction"),
                fields.get("compression"),
                self.limits,
            )
        return decode_upload(data, filename, self.limits)

    @api.post(
        "/v1/studies",
        summary="STOW-RS: one DICOM series in, its DICOM-SEG (or a report) out",
        response_model=None,
        responses=stow_responses(),
        openapi_extra=STOW_REQUEST_BODY,
    )
    async def stow_http(self, request: Request) -> Response:
        """``multipart/related; type="application/dicom"`` with the instances of one CT/MR series (any
        transfer syntax). Answers the DICOM-SEG (``application/dicom``), or the JSON report when the
        request's Accept header asks for ``application/json``."""
        from organseg.pacs.privacy import phi_values, redact
        from organseg.pacs.stow import series_from_parts, split_multipart

        received = None
        try:
            self.limits.check_bytes(int(request.headers.get("content-length") or 0))
            body = await request.body()
            self.limits.check_bytes(len(body))
            parts = split_multipart(body, request.headers.get("content-type", ""))
            received = await asyncio.to_thread(series_from_parts, parts)
            self.limits.check_shape(received.volume.shape)
            prediction = await self._predict(received.volume, request.query_params.get("modality"))
            if "application/json" in request.headers.get("accept", ""):
                return JSONResponse({"slices": len(received.datasets), **prediction.report()})
            seg = await asyncio.to_thread(_seg_bytes, received, prediction)
        except Exception as exc:
            phi = phi_values(received.datasets[:1]) if received is not None else set()
            return edge.error_response(exc, http_status(exc), scrub=lambda text: redact(text, phi))
        return Response(seg, media_type="application/dicom")

    @api.get("/v1/models", summary="Ensembles, members, modalities and versions")
    async def models_http(self) -> dict[str, Any]:
        return await self._models()

    @api.get("/healthz", summary="Liveness of the router")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    @api.get(
        "/readyz",
        summary="Readiness: every ensemble and member answers",
        response_model=None,
        responses=READY_RESPONSES,
    )
    async def readyz(self) -> JSONResponse:
        result = await self._readiness()
        return JSONResponse(result, status_code=200 if result["status"] == "ok" else 503)

    # -- gRPC (method names equal the rpc names) -------------------------------------------------------
    async def Segment(self, request: Any, grpc_context: Any = None) -> Any:
        """gRPC Segment: the same request path and answer as POST /v1/segment (errors set the status
        code and details).
        """
        from organseg.serve.proto import segmentation_pb2 as pb

        async def handle() -> Any:
            kind = request.WhichOneof("input")
            if kind == "volume_file":
                volume = await self._decode(
                    decode_upload, request.volume_file, request.filename or None, self.limits
                )
            elif kind == "dicom_zip":
                volume = await self._decode(decode_dicom_zip, request.dicom_zip, self.limits)
            elif kind == "raw":
                raw = request.raw
                volume = await self._decode(
                    decode_raw,
                    raw.data,
                    raw.dtype,
                    list(raw.shape),
                    list(raw.spacing),
                    list(raw.origin),
                    list(raw.direction),
                    raw.compression,
                    self.limits,
                )
            else:
                raise DataError("empty request: set one of volume_file, dicom_zip or raw")
            result = await self._segment(
                volume, request.modality or None, request.output_format or "nifti"
            )
            # an unset optional field (modality_confidence when the classifier did not decide) is absent
            return pb.SegmentResponse(**{k: v for k, v in result.items() if v is not None})

        return await edge.grpc_call(
            "Segment", grpc_context, handle, pb.SegmentResponse, grpc_status
        )

    async def ListModels(self, request: Any, grpc_context: Any = None) -> Any:
        """gRPC ListModels: what GET /v1/models answers."""
        from organseg.serve.proto import segmentation_pb2 as pb

        async def handle() -> Any:
            models = await self._models()
            return pb.ListModelsResponse(
                name=models["name"],
                task=models["task"],
                organseg_version=models["organseg_version"],
                created=models["created"],
                model_version=models["model_version"],
                size=models["size"],
                ensembles=[pb.EnsembleInfo(**e) for e in models["ensembles"]],
                members=[
                    pb.MemberInfo(**{**m, "val_dice": m["val_dice"] or 0.0})
                    for m in models["members"]
                ],
            )

        return await edge.grpc_call(
            "ListModels", grpc_context, handle, pb.ListModelsResponse, grpc_status
        )

    async def Health(self, request: Any, grpc_context: Any = None) -> Any:
        """gRPC Health: what GET /readyz answers."""
        from organseg.serve.proto import segmentation_pb2 as pb

        result = await self._readiness()
        return pb.HealthResponse(status=result["status"], ensembles=result["ensembles"])
