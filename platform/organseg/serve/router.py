"""The ingress: HTTP (FastAPI) and gRPC on one deployment, routing each volume to its modality's ensemble.

The modality is decided once per series, by :func:`organseg.ensemble.assembly.assemble` with
:func:`organseg.ensemble.routing.decide_modality` (the rule local prediction uses too), and handed to the
ensemble with its evidence: the DICOM header, an explicit request field the header must not contradict,
the file's own record, then the model directory's modality classifier when it was validated and is
confident; every answer names the evidence that decided, and unknown or contradictory modalities are a
422 / INVALID_ARGUMENT, never a guess. Bad input of any kind is answered with a message and leaves the replica
healthy for the next request. Request ids, auth, body-read timeouts, logs and metrics are applied to every
route and method by ``organseg.serve.ops.edge``; a server error answers with its request id only.
"""

# No `from __future__ import annotations` here: FastAPI must see real annotation objects.

import asyncio
import base64
import math
import time
from dataclasses import replace
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve.handle import DeploymentHandle

from organseg import __version__
from organseg.ensemble.assembly import (
    PART_MODALITIES,
    SEGMENT_HINTS,
    Assembled,
    RequestHints,
    SeriesInput,
    assemble,
    assemble_channels,
    series_label,
)
from organseg.ensemble.describe import describe, served_view
from organseg.ensemble.modality_classifier import ModalityClassifier
from organseg.ensemble.prediction import Prediction
from organseg.ensemble.spec import EnsembleSpec, load_spec
from organseg.ensemble.version import model_version
from organseg.errors import DataError, ModelError, RequestTooLarge
from organseg.io.modality import ModalityDecision
from organseg.io.volume import Volume
from organseg.serve.app_args import AppArgs
from organseg.serve.errors import grpc_status, http_status
from organseg.serve.forms import read_form
from organseg.serve.http_schema import (
    MODELS_RESPONSES,
    READY_RESPONSES,
    SEGMENT_REQUEST_BODY,
    segment_responses,
)
from organseg.serve.ops import edge, requests, tempdirs
from organseg.serve.ops.auth import TokenCheck
from organseg.serve.ops.retry import with_retries
from organseg.serve.stow import STOW_HINTS, STOW_REQUEST_BODY, series_inputs, stow_responses
from organseg.serve.wire import (
    OUTPUT_FORMATS,
    RELEASE_AFTER_BYTES,
    WireLimits,
    bounded_request,
    decode_dicom_zip_series,
    decode_raw,
    decode_upload,
    encode_labels,
    png_zip_problem,
    release_memory,
)

api = FastAPI(
    title="organseg",
    version=__version__,
    description="Abdominal organ segmentation ensembles (CHAOS) served by Ray Serve. "
    "POST a NIfTI/MHA/NRRD file, a zip of one DICOM series (or of a patient's T1 in-phase, "
    "out-of-phase and T2-SPIR series for models that stack them), or raw voxels to /v1/segment.",
)
api.add_middleware(edge.EdgeMiddleware)


def _seg_bytes(received: Any, prediction: Prediction) -> bytes:
    from organseg.ensemble.results import build_results, to_bytes

    (seg,) = build_results(received.volume, prediction, received.datasets, received.label)
    return to_bytes(seg)


def _stow_report(received: Any, assembled: Assembled, prediction: Prediction) -> dict[str, Any]:
    """The JSON answer of a STOW-RS request: the report, the slices of the series the labels lie
    on, and how each posted series was used (named by the hash of its UID and its modality)."""
    return {
        "slices": len(received.datasets),
        **prediction.report(),
        "series": assembled.series,
        "answers_for": assembled.answers_for,
    }


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
    if any(
        abs(v) >= 2**31 for v in values
    ):  # no image axis is that long; 1e30 is a typo or a probe
        raise DataError(f"field {name!r} holds a number of 2^31 or more, got {text!r}")
    return [int(v) for v in values]


def _remaining(limits: WireLimits, items: list[SeriesInput]) -> WireLimits:
    """The limits left for the next part: the voxel limit counts the whole request."""
    used = sum(int(np.prod(i.volume.shape, dtype=np.int64)) for i in items)
    if used >= limits.max_voxels:
        raise RequestTooLarge(
            f"the request's series hold {used} voxels together; the limit is {limits.max_voxels}"
        )
    return replace(limits, max_voxels=limits.max_voxels - used)


def _file_series(
    data: bytes,
    filename: str | None,
    modality: str | None,
    limits: WireLimits,
    zip_only: bool = False,
) -> list[SeriesInput]:
    """The ``file`` part: a zip of one or several DICOM series, one DICOM object or a volume file."""
    if zip_only or data[:4] == b"PK\x03\x04":
        volumes = decode_dicom_zip_series(data, limits)
        if len(volumes) > 1 and modality:
            raise DataError(
                f"the zip holds {len(volumes)} series and the modality field names one; each series "
                "of a zip is routed by its own headers: leave modality empty (or send the series as "
                "the named parts file, out_phase and t2)"
            )
    else:
        volumes = [decode_upload(data, filename, limits)]
    return [
        SeriesInput(v, series_label(v, "the uploaded 'file'"), "file", modality) for v in volumes
    ]


def _decode_named_part(kind: str, name: str, content: Any, budget: WireLimits) -> Volume:
    """One named request part: a volume file, a DICOM zip or object (HTTP bytes), or a gRPC
    ``SeriesPart``; its errors name the part (``kind`` ``name``)."""
    if not isinstance(content, bytes):  # gRPC SeriesPart
        return _decode_part_message(name, content, budget)
    if not content:
        raise DataError(f"{kind} {name!r} is empty")
    try:
        return decode_upload(content, None, budget)
    except DataError as exc:
        raise type(exc)(f"{kind} {name!r}: {exc}") from None


def _part_series(
    parts: dict[str, Any], items: list[SeriesInput], limits: WireLimits
) -> list[SeriesInput]:
    """The named parts beside ``file`` (``out_phase``, ``t2``): one series each, whose modality the
    part's name states (DICOM headers must agree). A part is a volume file, a DICOM zip or object, or
    (gRPC) raw voxels."""
    found: list[SeriesInput] = []
    for name, content in parts.items():
        volume = _decode_named_part("part", name, content, _remaining(limits, items + found))
        label = series_label(volume, f"the {name!r} part")
        if label != f"the {name!r} part":
            label += f" (part {name!r})"
        found.append(SeriesInput(volume, label, name, PART_MODALITIES[name].value))
    return found


def _channel_series(
    parts: dict[str, Any], spec: EnsembleSpec, limits: WireLimits
) -> list[SeriesInput]:
    """The channels of a model that stacks a dataset's channels, one request part each, named by
    the channel's name (HTTP file parts, or gRPC ``channels`` entries); the name states the
    channel's modality. Which are missing is :func:`assemble_channels`' to say."""
    modality = {c.name: c.modality.value for c in spec.preprocess.channels or ()}
    found: list[SeriesInput] = []
    for name, content in parts.items():
        volume = _decode_named_part("channel part", name, content, _remaining(limits, found))
        found.append(SeriesInput(volume, f"channel {name!r}", name, modality.get(name)))
    return found


def _decode_raw_message(raw: Any, limits: WireLimits) -> Volume:
    return decode_raw(
        raw.data,
        raw.dtype,
        list(raw.shape),
        list(raw.spacing),
        list(raw.origin),
        list(raw.direction),
        raw.compression,
        limits,
    )


def _decode_part_message(name: str, part: Any, limits: WireLimits) -> Volume:
    kind = part.WhichOneof("input")
    try:
        if kind in ("volume_file", "dicom_zip"):
            return decode_upload(getattr(part, kind), part.filename or None, limits)
        if kind == "raw":
            return _decode_raw_message(part.raw, limits)
    except DataError as exc:
        raise type(exc)(f"part {name!r}: {exc}") from None
    raise DataError(f"part {name!r} is empty: set one of volume_file, dicom_zip or raw")


def _grpc_answer(result: dict[str, Any]) -> dict[str, Any]:
    """The router's answer as SegmentResponse fields (nested messages from plain dicts)."""
    from organseg.serve.proto import segmentation_pb2 as pb

    # an unset optional field (modality_confidence when the classifier did not decide) is absent
    answer = {
        k: v for k, v in result.items() if k not in ("series", "registration") and v is not None
    }
    answer["series"] = [pb.SeriesDecision(**s) for s in result.get("series") or []]
    if result.get("registration"):
        answer["registration"] = pb.Registration(**result["registration"])
    return answer


def _grpc_label_set(described: dict[str, Any]) -> Any:
    """:func:`organseg.ensemble.describe.describe_label_set` as a LabelSetInfo message."""
    from organseg.serve.proto import segmentation_pb2 as pb

    labels = [
        pb.LabelInfo(
            name=label["name"],
            value=label["value"],
            colour=label["colour"],
            code=pb.CodedConcept(**label["code"]),
            laterality=pb.CodedConcept(**label["laterality"]) if label["laterality"] else None,
            largest_component=label["largest_component"],
            category=pb.CodedConcept(**label["category"]),
        )
        for label in described["labels"]
    ]
    return pb.LabelSetInfo(name=described["name"], labels=labels, ignore=described["ignore"])


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=32)
@serve.ingress(api)
class Router:
    """HTTP routes and gRPC methods (same names as the rpcs in segmentation.proto) on one ingress."""

    def __init__(self, ensembles: dict[str, DeploymentHandle], options: AppArgs) -> None:
        self.policy = options.policy
        tempdirs.use_private_tempdir()  # and sweep what a killed replica left behind
        edge.configure(TokenCheck(options.api_token_file), options.body_timeout_s)
        self.retry_budget_s = options.retry_budget_s
        # Decoding is CPU work in threads: bound it so that many uploads cannot starve one another.
        self.decoding = asyncio.Semaphore(options.decode_concurrency)
        self.ensembles = ensembles
        self.limits = options.limits
        self._load(options.model_dir)

    def _load(self, model_dir: str) -> None:
        self.spec: EnsembleSpec = load_spec(model_dir)
        self.label_set = self.spec.label_set()
        self.version = model_version(model_dir)
        # decides volumes whose headers do not say their modality (when validated; None: none trained)
        self.classifier = ModalityClassifier.load(model_dir)

    async def reconfigure(self, config: dict[str, Any]) -> None:
        """``user_config``: ``model_dir`` switches what /v1/models describes (answers carry the version of
        the ensemble that computed them)."""
        if config.get("model_dir"):
            await asyncio.to_thread(self._load, str(config["model_dir"]))

    async def _decode(self, fn: Any, *args: Any) -> Any:
        tempdirs.sweep_now_and_then()  # what a replica killed after this one started left behind
        started = time.perf_counter()
        async with self.decoding:
            volume = await asyncio.to_thread(fn, *args)
        requests.record(decode_s=round(time.perf_counter() - started, 4))
        return volume

    # -- shared request path ------------------------------------------------------------------------
    async def _predict(
        self,
        volume: Volume,
        decision: ModalityDecision,
        partner: Volume | None = None,
        t2: Volume | None = None,
        channels: dict[str, Volume] | None = None,
    ) -> "Prediction":
        """The ensemble of the modality :func:`assemble` decided, given that decision with its
        evidence (it is not decided again, and the answer carries it as the ensemble reports it)."""
        handle = self.ensembles.get(decision.modality.value)
        if handle is None:
            raise ModelError(
                f"{decision.modality.value} ({decision.reason}) has no ensemble here; this server segments "
                f"{sorted(self.ensembles)}"
            )
        requests.record(modality=decision.modality.value)
        prediction: Prediction = await with_retries(
            lambda: handle.segment.remote(
                volume, decision.modality.value, partner, t2, decision, channels
            ),
            f"ensemble-{decision.modality.value}",
            self.retry_budget_s,
        )
        return prediction

    async def _predict_series(
        self, items: list[SeriesInput], hints: RequestHints = SEGMENT_HINTS
    ) -> tuple[Assembled, "Prediction"]:
        """The prediction for the series of one request: :func:`assemble` decides which series is
        the image (the answer's grid) and which are stacked with it; ``hints`` word its refusals."""
        if self.spec.preprocess.channels:  # one series per channel, each in its named part
            assembled = assemble_channels(items, self.spec, self.classifier, self.policy)
        else:
            assembled = assemble(items, self.spec, self.classifier, self.policy, hints)
        prediction = await self._predict(
            assembled.image, assembled.decision, assembled.partner, assembled.t2, assembled.channels
        )
        return assembled, prediction

    async def _segment(self, items: list[SeriesInput], output_format: str) -> dict[str, Any]:
        """Segment the series of one request (one series, or the T1 in/out (+ T2) a stacking model
        needs; :func:`organseg.ensemble.assembly.assemble` decides which is which)."""
        started = time.perf_counter()
        if output_format not in OUTPUT_FORMATS:
            raise DataError(f"output_format {output_format!r} is not one of {list(OUTPUT_FORMATS)}")
        label_set = self.label_set  # this request's, even if the model is switched meanwhile
        if output_format == "png-zip" and (problem := png_zip_problem(label_set)):
            raise DataError(problem)
        assembled, prediction = await self._predict_series(items)
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
            "series": assembled.series,
            "answers_for": assembled.answers_for,
            "registration": prediction.registration,
            # the legend of the label map: the model's values, not an assumed CHAOS vocabulary
            "label_values": {name: label_set[name].value for name in prediction.organs},
        }

    async def _models(self) -> dict[str, Any]:
        description = describe(self.spec, self.version, self.classifier, self.policy)
        return served_view(description, self.version, set(self.ensembles))

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
        ``origin``, ``direction``, ``compression`` (raw only). For models that stack T1 in/out (and
        T2-SPIR): one zip holding the patient's series, or ``file`` (T1 in-phase) plus the file parts
        ``out_phase`` and ``t2``. Labels come back base64-encoded."""
        data: list[bytes] = []
        form = None
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
            channel_names = [c.name for c in self.spec.preprocess.channels or ()]
            form = await read_form(
                request,
                self.limits,
                max_files=1 + len(PART_MODALITIES) + len(channel_names),
                max_fields=16,
            )
            if channel_names:  # a model stacking a dataset's channels: one part per channel
                if form.get("file") is not None:
                    raise DataError(
                        f"ensemble {self.spec.name!r} reads the channels "
                        f"{', '.join(channel_names)} of one case together: send each as a "
                        "'channels' file part whose file name is the channel's name, and no 'file'"
                    )
                parts = await self._read_channel_parts(form, channel_names, data)
                items = await self._decode(self._decode_channel_form, parts, channel_names)
                result = await self._segment(items, str(form.get("output_format") or "nifti"))
                result["labels"] = base64.b64encode(result["labels"]).decode()
                return JSONResponse(result)
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise DataError("missing 'file' field (the volume, DICOM zip or raw voxels)")
            data.append(await upload.read())
            self.limits.check_bytes(len(data[0]), "uploaded file")
            parts: dict[str, bytes] = {}
            for name in PART_MODALITIES:
                part = form.get(name)
                if part is None:
                    continue
                if isinstance(part, str):
                    raise DataError(f"field {name!r} must be a file part (a volume or DICOM zip)")
                parts[name] = await part.read()
                data.append(parts[name])
            self.limits.check_bytes(sum(map(len, data)), "uploaded files")
            fields = {k: str(v) for k, v in form.items() if k != "file" and k not in parts}
            items = await self._decode(self._decode_form, data[0], upload.filename, fields, parts)
            result = await self._segment(items, fields.get("output_format") or "nifti")
        except Exception as exc:
            return edge.error_response(exc, http_status(exc))
        finally:
            large = sum(map(len, data)) > RELEASE_AFTER_BYTES
            data.clear()  # the upload's bytes must be unreferenced before memory is handed back
            if form is not None:
                await form.close()
                form = None
            if large:
                await asyncio.to_thread(release_memory)
        result["labels"] = base64.b64encode(result["labels"]).decode()
        return JSONResponse(result)

    async def _read_channel_parts(
        self, form: Any, names: list[str], data: list[bytes]
    ) -> dict[str, bytes]:
        """The ``channels`` file parts, each keyed by its file name, which is the channel's name
        (a name that is no channel is counted, never echoed: it could be a patient's file name)."""
        parts: dict[str, bytes] = {}
        strangers = 0
        for part in form.getlist("channels"):
            if isinstance(part, str) or part.filename not in names:
                strangers += 1
                continue
            if part.filename in parts:
                raise DataError(f"channel {part.filename!r} is sent twice; send each channel once")
            parts[part.filename] = await part.read()
            data.append(parts[part.filename])
        if strangers:
            raise DataError(
                f"{strangers} 'channels' part(s) not named by a channel of ensemble "
                f"{self.spec.name!r}; each 'channels' part's file name is its channel's name, one "
                f"of {', '.join(names)}"
            )
        self.limits.check_bytes(sum(map(len, data)), "uploaded files")
        return parts

    def _decode_channel_form(self, parts: dict[str, bytes], names: list[str]) -> list[SeriesInput]:
        return _channel_series(parts, self.spec, self.limits)

    def _decode_form(
        self,
        data: bytes,
        filename: str | None,
        fields: dict[str, str],
        parts: dict[str, bytes] | None = None,
    ) -> list[SeriesInput]:
        if not data:
            raise DataError("the uploaded file is empty")
        modality = fields.get("modality") or None
        if fields.get("shape"):
            volume = decode_raw(
                data,
                fields.get("dtype") or "",
                _ints(fields.get("shape"), "shape"),
                _floats(fields.get("spacing"), "spacing"),
                _floats(fields.get("origin"), "origin"),
                _floats(fields.get("direction"), "direction"),
                fields.get("compression"),
                self.limits,
            )
            items = [SeriesInput(volume, "the raw volume ('file')", "file", modality)]
        else:
            items = _file_series(data, filename, modality, self.limits)
        return items + _part_series(parts or {}, items, self.limits)

    @api.post(
        "/v1/studies",
        summary="STOW-RS: a DICOM series (or the series a stacking model reads) in, its DICOM-SEG "
        "(or a report) out",
        response_model=None,
        responses=stow_responses(),
        openapi_extra=STOW_REQUEST_BODY,
    )
    async def stow_http(self, request: Request) -> Response:
        """``multipart/related; type="application/dicom"`` with the instances of one CT/MR series, or
        of the T1 in-phase, out-of-phase (and T2-SPIR) series of one study for a model that stacks
        them (any transfer syntax, any order). Answers the DICOM-SEG over the (T1 in-phase) series
        the labels lie on (``application/dicom``), or the JSON report when the request's Accept
        header asks for ``application/json``."""
        from organseg.io.privacy import phi_values, redact

        received: list[Any] = []
        try:
            received = await self._receive_stow(request)
            items = series_inputs(received, request.query_params.get("modality") or None)
            assembled, prediction = await self._predict_series(items, STOW_HINTS)
            primary = next(r for r in received if r.volume is assembled.image)
            if "application/json" in request.headers.get("accept", ""):
                return JSONResponse(_stow_report(primary, assembled, prediction))
            seg = await asyncio.to_thread(_seg_bytes, primary, prediction)
        except Exception as exc:
            phi = phi_values(r.datasets[0] for r in received)
            return edge.error_response(exc, http_status(exc), scrub=lambda text: redact(text, phi))
        return Response(seg, media_type="application/dicom")

    async def _receive_stow(self, request: Request) -> list[Any]:
        """The STOW-RS body's series, decoded within the byte limit (checked while the body streams
        in) and the voxel limit (over all its series, from the headers, before decoding)."""
        from organseg.serve.stow import series_from_parts, split_multipart

        self.limits.check_bytes(_content_length(request))
        body = await bounded_request(request, self.limits).body()
        self.limits.check_bytes(len(body))
        parts = split_multipart(body, request.headers.get("content-type", ""))
        large = len(body) > RELEASE_AFTER_BYTES
        del body  # the parts are copies; the body need not outlive the split
        preprocess = self.spec.preprocess
        single_only = None
        if preprocess.t1_mode != "stack":
            single_only = (
                f"ensemble {self.spec.name!r} does not stack series (t1_mode: {preprocess.t1_mode})"
            )
        received = await self._decode(series_from_parts, parts, self.limits.max_voxels, single_only)
        if large:  # the instances' bytes are unreferenced now: hand their memory back
            parts.clear()
            await asyncio.to_thread(release_memory)
        for series in received:
            self.limits.check_shape(series.volume.shape)
        return received

    @api.get(
        "/v1/models",
        summary="Ensembles, members, modalities, versions and the label set",
        response_model=None,
        responses=MODELS_RESPONSES,
    )
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
            items = await self._decode(self._decode_grpc, request)
            result = await self._segment(items, request.output_format or "nifti")
            return pb.SegmentResponse(**_grpc_answer(result))

        return await edge.grpc_call(
            "Segment", grpc_context, handle, pb.SegmentResponse, grpc_status
        )

    def _decode_grpc(self, request: Any) -> list[SeriesInput]:
        """The series of a SegmentRequest: ``volume_file``/``dicom_zip``/``raw``, then the
        ``out_phase`` and ``t2`` parts."""
        modality = request.modality or None
        kind = request.WhichOneof("input")
        if kind == "volume_file" or kind == "dicom_zip":
            data = getattr(request, kind)
            items = _file_series(
                data, request.filename or None, modality, self.limits, kind == "dicom_zip"
            )
        elif kind == "raw":
            volume = _decode_raw_message(request.raw, self.limits)
            items = [SeriesInput(volume, "the raw volume", "file", modality)]
        elif self.spec.preprocess.channels:
            return _channel_series(dict(request.channels), self.spec, self.limits)
        else:
            raise DataError("empty request: set one of volume_file, dicom_zip or raw")
        if self.spec.preprocess.channels:
            raise DataError(
                f"ensemble {self.spec.name!r} reads the channels "
                f"{', '.join(c.name for c in self.spec.preprocess.channels)} of one case together: "
                "send each in the channels map under its name, and no volume_file, dicom_zip or raw"
            )
        if len(request.channels):
            raise DataError(  # counted, not named: a key could be a patient's file name
                f"{len(request.channels)} 'channels' entr(y/ies): ensemble {self.spec.name!r} "
                "takes one series (and T1 stacking parts), not named channels"
            )
        parts = {}
        for name in PART_MODALITIES:
            if request.HasField(name):
                parts[name] = getattr(request, name)
        return items + _part_series(parts, items, self.limits)

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
                t1_mode=models["t1_mode"],
                t2_channel=models["t2_channel"],
                ensembles=[pb.EnsembleInfo(**e) for e in models["ensembles"]],
                members=[
                    pb.MemberInfo(**{**m, "val_dice": m["val_dice"] or 0.0})
                    for m in models["members"]
                ],
                label_set=_grpc_label_set(models["label_set"]),
                channels=[pb.InputChannelInfo(**c) for c in models.get("channels") or []],
            )

        return await edge.grpc_call(
            "ListModels", grpc_context, handle, pb.ListModelsResponse, grpc_status
        )

    async def Health(self, request: Any, grpc_context: Any = None) -> Any:
        """gRPC Health: what GET /readyz answers."""
        from organseg.serve.proto import segmentation_pb2 as pb

        result = await self._readiness()
        return pb.HealthResponse(status=result["status"], ensembles=result["ensembles"])
