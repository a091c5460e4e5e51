"""What the HTTP API says about itself: the OpenAPI description of ``POST /v1/segment`` and
``GET /v1/models``.

The router reads the multipart form by hand (it checks sizes before parsing, and decodes in a thread), so
FastAPI cannot infer the request body; it is declared here, field for field the same as the gRPC
``SegmentRequest``/``RawVolume`` in ``proto/segmentation.proto``, and the answers are pydantic models the
same as ``SegmentResponse``; ``GET /v1/models`` answers a :class:`ModelsResponse`, field for field
``ListModelsResponse`` plus the full version record and the modality classifier's status. Tests hold
the descriptions together and run schemathesis against the live application with this document.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from organseg.modalities import Modality
from organseg.serve.wire import OUTPUT_FORMATS, RAW_DTYPES

# The form's text fields as the router parses them (comma- or semicolon-separated decimals), with
# the ranges ``organseg.io.validate`` and ``WireLimits.check_shape`` enforce, so a request the schema
# allows is never refused for a field's form (only for its content, or a direction that is not
# orthonormal, which no pattern can say).
_SEP = r"\s*[,;]\s*"
_SIZE = r"0*[1-9][0-9]{0,9}"  # a positive whole number
# 0.001 ≤ x ≤ 1000 mm (SPACING_RANGE_MM), written without an exponent
_SPACING = r"(?:0*[1-9][0-9]{0,2}(?:\.[0-9]*)?|0*1000(?:\.0*)?|0*\.0{0,2}[1-9][0-9]*)"
_POSITION = r"[-+]?(?:[0-9]{1,6}(?:\.[0-9]*)?|\.[0-9]+)"  # |x| < 10⁶ mm (MAX_ORIGIN_MM)
_COSINE = r"[-+]?(?:0*1(?:\.0*)?|0*\.[0-9]+|0+(?:\.[0-9]*)?)"  # -1 ≤ x ≤ 1


def _three(item: str, count: int = 3) -> str:
    return rf"^\s*{item}(?:{_SEP}{item}){{{count - 1}}}\s*$"


class SeriesDecision(BaseModel):
    """How one series of the request was used, and why it was taken for its modality."""

    role: str = Field(
        description="image (the label map lies on its grid), out_phase or t2 (stacked channels)."
    )
    series: str = Field(description="The series by SeriesNumber and InstanceNumbers, or its part.")
    modality: str = Field(description="The modality the series was taken for.")
    modality_reason: str = Field(description="Why: the header tags or request part that decided.")
    shape: list[int] = Field(description="(z, y, x) of the series.")


class Registration(BaseModel):
    """The rigid T2-SPIR → T1 in-phase registration (set when T2-SPIR was stacked as a channel)."""

    rotation_deg: float = Field(description="Rotation found, in degrees.")
    translation_mm: float = Field(description="Displacement of the T1 volume's centre, in mm.")
    mutual_information: float = Field(description="Mattes mutual information after (nats).")
    initial_mutual_information: float = Field(description="The same at the header geometry.")
    iterations: float = Field(description="Optimizer iterations of the last pyramid level.")


class SegmentResponse(BaseModel):
    """A segmented volume: the label map in the requested format plus what produced it."""

    model_config = ConfigDict(extra="allow")

    labels: str = Field(
        description="The label map in output_format, base64-encoded (uint8 ids as label_values "
        "says; for CHAOS models 1 liver, 2 right kidney, 3 left kidney, 4 spleen; 0 background)."
    )
    output_format: str = Field(description="Format of labels: nifti, png-zip or raw.")
    shape: list[int] = Field(description="(z, y, x) of the label map: the input's grid.")
    spacing: list[float] = Field(description="(x, y, z) voxel spacing in millimetres.")
    origin: list[float] = Field(description="(x, y, z) world position of voxel 0 in millimetres.")
    direction: list[float] = Field(description="Row-major 3×3 direction cosines.")
    ensemble: str = Field(description="``<experiment>/<modality>``: the ensemble that answered.")
    modality: str = Field(description="The modality the volume was segmented as.")
    modality_reason: str = Field(
        description="Why: the header tags, request field or classifier evidence that decided."
    )
    modality_source: str = Field(
        "", description="What decided the modality: header, request, file or classifier."
    )
    modality_confidence: float | None = Field(
        None, description="The modality classifier's calibrated confidence, when it decided."
    )
    members: list[str] = Field(description="Members that answered.")
    volumes_ml: dict[str, float] = Field(description="Segmented volume per organ, in millilitres.")
    uncertainty: dict[str, float] = Field(
        description="Per organ: 1 − mean pairwise Dice of the members' masks (0: all agree)."
    )
    timings_s: dict[str, float] = Field(description="Seconds spent per stage.")
    model_version: str = Field(
        description="``<experiment>:<hash>``: the model directory version (SHA-256 of ensemble.yaml "
        "and the weights) that computed this answer."
    )
    series: list[SeriesDecision] = Field(
        default_factory=list, description="Every series of the request: its role and modality."
    )
    answers_for: str = Field(
        "", description="Which series' grid the label map lies on, and what was stacked with it."
    )
    registration: Registration | None = Field(
        None, description="The T2-SPIR → T1 registration, when T2-SPIR was stacked."
    )
    label_values: dict[str, int] = Field(
        default_factory=dict,
        description="The label map's legend: each label the answering ensemble segments, by name, "
        "with its voxel value (from the model's label set; 0 is background).",
    )


class CodedConcept(BaseModel):
    """A coded concept, DICOM's (value, scheme designator, meaning) triplet."""

    value: str = Field(description="The code, e.g. 10200004.")
    scheme: str = Field(
        description="SCT (SNOMED CT), or 99ORGANSEG for a label without a known code."
    )
    meaning: str = Field(description="e.g. Liver; for 99ORGANSEG the label's own name.")


class LabelInfo(BaseModel):
    """One label of the model's label set."""

    name: str
    value: int = Field(description="Its voxel value in label maps.")
    colour: list[int] = Field(description="Display colour: r, g, b (0-255).")
    code: CodedConcept = Field(description="What the structure is.")
    laterality: CodedConcept | None = Field(
        None, description="Right or left for paired organs; null otherwise."
    )
    largest_component: bool = Field(
        description="Post-processing keeps only its largest connected component."
    )
    category: CodedConcept = Field(
        description="The code's category (a DICOM-SEG segment's), e.g. Anatomical Structure."
    )


class LabelSetInfo(BaseModel):
    """The labels the model segments, in output channel order (background 0 is implicit)."""

    name: str = Field(description="e.g. chaos, or the dataset's name.")
    labels: list[LabelInfo]
    ignore: int | None = Field(
        None, description="The value left out of training and metrics, when the set has one."
    )


class MemberInfo(BaseModel):
    """One member network of the served model directory."""

    name: str
    arch: str
    organs: list[str] = Field(description="The labels its output channels segment.")
    modalities: list[str]
    in_channels: int
    val_dice: float | None = Field(description="Its best validation Dice (null: not validated).")


class EnsembleInfo(BaseModel):
    """The ensemble that answers one modality."""

    modality: str
    members: list[str]
    organs: list[str] = Field(description="The labels it segments.")


class InputChannelInfo(BaseModel):
    """One input channel of a model that stacks a dataset's channels."""

    name: str = Field(description="The channel's name (the dataset's channel_names).")
    modality: str = Field(description="Its modality (CT, MR-T1-in, ...).")


class ModelsResponse(BaseModel):
    """What ``GET /v1/models`` answers: the served model directory (gRPC ``ListModelsResponse``)."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(description="The model directory's experiment name.")
    task: int
    organseg_version: str
    created: str
    model_version: str = Field(
        description="``<experiment>:<hash>`` (SHA-256 of ensemble.yaml and the weights)."
    )
    version: dict[str, str] = Field(description="The full version record (id, sha256, ...).")
    size: int = Field(description="In-plane size the members run at.")
    t1_mode: str = Field(description="stack: T1 in/out are sent together.")
    t2_channel: bool = Field(description="T2-SPIR is sent with them.")
    channels: list[InputChannelInfo] = Field(
        default_factory=list,
        description="A model that stacks a dataset's channels: each input channel, in order; a "
        "request sends every one as a part named by the channel's name (empty: one series).",
    )
    ensembles: list[EnsembleInfo]
    members: list[MemberInfo]
    modality_classifier: dict[str, Any] | None = Field(
        description="Whether the modality classifier may route headerless volumes, and its "
        "validation (null: none trained)."
    )
    label_set: LabelSetInfo = Field(description="What the label maps' values mean.")


MODELS_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ModelsResponse, "description": "The served model directory."},
}


class ErrorBody(BaseModel):
    """Why a request was refused; the message names the field or file at fault."""

    model_config = ConfigDict(extra="allow")

    error: str = Field(description="What is wrong, naming the field or file.")
    type: str = Field(description="Kind of error (DataError, ModalityError, RequestTooLarge, ...).")
    request_id: str | None = Field(
        None,
        description="The request's id (also in the X-Request-ID header); a 5xx names only this, "
        "its details are in the server log under it.",
    )


#: multipart/form-data fields of POST /v1/segment (gRPC: SegmentRequest and RawVolume).
SEGMENT_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["file"],
    "dependentRequired": {"shape": ["dtype"]},  # raw voxels need both
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "description": "The volume: a NIfTI (.nii/.nii.gz), MHA or NRRD file; a zip of one DICOM "
            "series (or of one patient's T1 in-phase, out-of-phase and T2-SPIR series, for models "
            "that stack them); or, with shape and dtype, raw C-order voxels (z, y, x). The file name, "
            "when given, hints at the format (gRPC: volume_file + filename, dicom_zip, raw.data).",
        },
        "out_phase": {
            "type": "string",
            "format": "binary",
            "description": "Models stacking T1 in/out: the T1 out-of-phase series (a volume file, a "
            "zip of its DICOM series or one DICOM file) when file holds the in-phase series "
            "(gRPC: out_phase).",
        },
        "t2": {
            "type": "string",
            "format": "binary",
            "description": "Models stacking T2-SPIR as well: the patient's T2-SPIR series, in the same "
            "forms as out_phase (gRPC: t2).",
        },
        "channels": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "Models stacking a dataset's channels (GET /v1/models lists them): one "
            "file part per channel (a volume file), its file name the channel's name, and no "
            "file; every channel must be sent, on one grid (gRPC: the channels map).",
        },
        "modality": {
            "type": "string",
            "enum": [m.value for m in Modality.known()],
            "description": "The volume's modality; optional for DICOM (checked against its headers), "
            "required for raw voxels and files without modality metadata.",
        },
        "output_format": {
            "type": "string",
            "enum": list(OUTPUT_FORMATS),
            "default": "nifti",
            "description": "Format of the returned label map: nifti (.nii.gz), png-zip (CHAOS PNG "
            "series) or raw (zlib-compressed uint8).",
        },
        "shape": {
            "type": "string",
            "pattern": _three(_SIZE),
            "description": "Raw voxels only: z,y,x sizes, each a positive whole number (their "
            "product is held to the server's voxel limit: 413 beyond it). Present, it makes file "
            "raw voxels, and dtype is required.",
        },
        "dtype": {
            "type": "string",
            "enum": list(RAW_DTYPES),
            "description": "Raw voxels only: numpy dtype of the voxels.",
        },
        "spacing": {
            "type": "string",
            "pattern": _three(_SPACING),
            "description": "Raw voxels only: x,y,z spacing in millimetres, three decimals each "
            "between 0.001 and 1000 (default 1,1,1).",
        },
        "origin": {
            "type": "string",
            "pattern": _three(_POSITION),
            "description": "Raw voxels only: x,y,z origin in millimetres, three decimals each "
            "within ±999999 (default 0,0,0).",
        },
        "direction": {
            "type": "string",
            "pattern": _three(_COSINE, 9),
            "description": "Raw voxels only: 9 row-major direction cosines, each between -1 and 1, "
            "forming an orthonormal matrix (perpendicular unit columns, to 1e-3; refused with 400 "
            "otherwise); default identity.",
        },
        "compression": {
            "type": "string",
            "enum": ["none", "zlib"],
            "description": "Raw voxels only: how the bytes are compressed.",
        },
    },
}

SEGMENT_REQUEST_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"multipart/form-data": {"schema": SEGMENT_FORM}},
    }
}

#: Every answer POST /v1/segment gives, by status code.
SEGMENT_ERRORS: dict[int, str] = {
    400: "The request or the volume is invalid (the message names the field or file).",
    413: "The body, file or volume exceeds the server's limits.",
    422: "The modality is unknown, contradicts the headers, or no ensemble here serves it.",
    401: "A bearer token is required (the server has one configured) and was missing or wrong.",
    408: "The client stopped sending its body for longer than the server's body_timeout_s.",
    500: "A server error; the body names only the request id (the log has the details).",
    503: "The service is at capacity or restarting; retry after the Retry-After header's seconds.",
}


def segment_responses() -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses`` of POST /v1/segment: the 200 model and every error with its body model."""
    answers: dict[int | str, dict[str, Any]] = {
        200: {"model": SegmentResponse, "description": "The segmentation."}
    }
    for code, description in SEGMENT_ERRORS.items():
        answers[code] = {"model": ErrorBody, "description": description}
    return answers


class ReadinessResponse(BaseModel):
    """Readiness of every ensemble."""

    status: str = Field(description="ok when every ensemble answered, else degraded.")
    ensembles: dict[str, str] = Field(description="Per ensemble: ok or why it is unavailable.")


READY_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": ReadinessResponse, "description": "Every ensemble answers."},
    503: {"model": ReadinessResponse, "description": "Some ensemble does not answer."},
}
