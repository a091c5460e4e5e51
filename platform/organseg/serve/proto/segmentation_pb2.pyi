from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RawVolume(_message.Message):
    __slots__ = ("data", "dtype", "shape", "spacing", "origin", "direction", "compression")
    DATA_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    SPACING_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    spacing: _containers.RepeatedScalarFieldContainer[float]
    origin: _containers.RepeatedScalarFieldContainer[float]
    direction: _containers.RepeatedScalarFieldContainer[float]
    compression: str
    def __init__(self, data: _Optional[bytes] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., spacing: _Optional[_Iterable[float]] = ..., origin: _Optional[_Iterable[float]] = ..., direction: _Optional[_Iterable[float]] = ..., compression: _Optional[str] = ...) -> None: ...

class SeriesPart(_message.Message):
    __slots__ = ("volume_file", "dicom_zip", "raw", "filename")
    VOLUME_FILE_FIELD_NUMBER: _ClassVar[int]
    DICOM_ZIP_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    volume_file: bytes
    dicom_zip: bytes
    raw: RawVolume
    filename: str
    def __init__(self, volume_file: _Optional[bytes] = ..., dicom_zip: _Optional[bytes] = ..., raw: _Optional[_Union[RawVolume, _Mapping]] = ..., filename: _Optional[str] = ...) -> None: ...

class SegmentRequest(_message.Message):
    __slots__ = ("volume_file", "dicom_zip", "raw", "filename", "modality", "output_format", "out_phase", "t2", "channels")
    class ChannelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: SeriesPart
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[SeriesPart, _Mapping]] = ...) -> None: ...
    VOLUME_FILE_FIELD_NUMBER: _ClassVar[int]
    DICOM_ZIP_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    OUT_PHASE_FIELD_NUMBER: _ClassVar[int]
    T2_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    volume_file: bytes
    dicom_zip: bytes
    raw: RawVolume
    filename: str
    modality: str
    output_format: str
    out_phase: SeriesPart
    t2: SeriesPart
    channels: _containers.MessageMap[str, SeriesPart]
    def __init__(self, volume_file: _Optional[bytes] = ..., dicom_zip: _Optional[bytes] = ..., raw: _Optional[_Union[RawVolume, _Mapping]] = ..., filename: _Optional[str] = ..., modality: _Optional[str] = ..., output_format: _Optional[str] = ..., out_phase: _Optional[_Union[SeriesPart, _Mapping]] = ..., t2: _Optional[_Union[SeriesPart, _Mapping]] = ..., channels: _Optional[_Mapping[str, SeriesPart]] = ...) -> None: ...

class SeriesDecision(_message.Message):
    __slots__ = ("role", "series", "modality", "modality_reason", "shape")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    MODALITY_REASON_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    role: str
    series: str
    modality: str
    modality_reason: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, role: _Optional[str] = ..., series: _Optional[str] = ..., modality: _Optional[str] = ..., modality_reason: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...

class Registration(_message.Message):
    __slots__ = ("rotation_deg", "translation_mm", "mutual_information", "initial_mutual_information", "iterations")
    ROTATION_DEG_FIELD_NUMBER: _ClassVar[int]
    TRANSLATION_MM_FIELD_NUMBER: _ClassVar[int]
    MUTUAL_INFORMATION_FIELD_NUMBER: _ClassVar[int]
    INITIAL_MUTUAL_INFORMATION_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    rotation_deg: float
    translation_mm: float
    mutual_information: float
    initial_mutual_information: float
    iterations: float
    def __init__(self, rotation_deg: _Optional[float] = ..., translation_mm: _Optional[float] = ..., mutual_information: _Optional[float] = ..., initial_mutual_information: _Optional[float] = ..., iterations: _Optional[float] = ...) -> None: ...

class SegmentResponse(_message.Message):
    __slots__ = ("labels", "output_format", "shape", "spacing", "origin", "direction", "modality", "modality_reason", "members", "volumes_ml", "uncertainty", "timings_s", "ensemble", "model_version", "modality_source", "modality_confidence", "series", "answers_for", "registration", "label_values")
    class VolumesMlEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class UncertaintyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TimingsSEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LabelValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    LABELS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    SPACING_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    MODALITY_REASON_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    VOLUMES_ML_FIELD_NUMBER: _ClassVar[int]
    UNCERTAINTY_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_S_FIELD_NUMBER: _ClassVar[int]
    ENSEMBLE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODALITY_SOURCE_FIELD_NUMBER: _ClassVar[int]
    MODALITY_CONFIDENCE_FIELD_NUMBER: _ClassVar[int]
    SERIES_FIELD_NUMBER: _ClassVar[int]
    ANSWERS_FOR_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_FIELD_NUMBER: _ClassVar[int]
    LABEL_VALUES_FIELD_NUMBER: _ClassVar[int]
    labels: bytes
    output_format: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    spacing: _containers.RepeatedScalarFieldContainer[float]
    origin: _containers.RepeatedScalarFieldContainer[float]
    direction: _containers.RepeatedScalarFieldContainer[float]
    modality: str
    modality_reason: str
    members: _containers.RepeatedScalarFieldContainer[str]
    volumes_ml: _containers.ScalarMap[str, float]
    uncertainty: _containers.ScalarMap[str, float]
    timings_s: _containers.ScalarMap[str, float]
    ensemble: str
    model_version: str
    modality_source: str
    modality_confidence: float
    series: _containers.RepeatedCompositeFieldContainer[SeriesDecision]
    answers_for: str
    registration: Registration
    label_values: _containers.ScalarMap[str, int]
    def __init__(self, labels: _Optional[bytes] = ..., output_format: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., spacing: _Optional[_Iterable[float]] = ..., origin: _Optional[_Iterable[float]] = ..., direction: _Optional[_Iterable[float]] = ..., modality: _Optional[str] = ..., modality_reason: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., volumes_ml: _Optional[_Mapping[str, float]] = ..., uncertainty: _Optional[_Mapping[str, float]] = ..., timings_s: _Optional[_Mapping[str, float]] = ..., ensemble: _Optional[str] = ..., model_version: _Optional[str] = ..., modality_source: _Optional[str] = ..., modality_confidence: _Optional[float] = ..., series: _Optional[_Iterable[_Union[SeriesDecision, _Mapping]]] = ..., answers_for: _Optional[str] = ..., registration: _Optional[_Union[Registration, _Mapping]] = ..., label_values: _Optional[_Mapping[str, int]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MemberInfo(_message.Message):
    __slots__ = ("name", "arch", "organs", "modalities", "in_channels", "val_dice")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    ORGANS_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    IN_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    VAL_DICE_FIELD_NUMBER: _ClassVar[int]
    name: str
    arch: str
    organs: _containers.RepeatedScalarFieldContainer[str]
    modalities: _containers.RepeatedScalarFieldContainer[str]
    in_channels: int
    val_dice: float
    def __init__(self, name: _Optional[str] = ..., arch: _Optional[str] = ..., organs: _Optional[_Iterable[str]] = ..., modalities: _Optional[_Iterable[str]] = ..., in_channels: _Optional[int] = ..., val_dice: _Optional[float] = ...) -> None: ...

class EnsembleInfo(_message.Message):
    __slots__ = ("modality", "members", "organs")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ORGANS_FIELD_NUMBER: _ClassVar[int]
    modality: str
    members: _containers.RepeatedScalarFieldContainer[str]
    organs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, modality: _Optional[str] = ..., members: _Optional[_Iterable[str]] = ..., organs: _Optional[_Iterable[str]] = ...) -> None: ...

class CodedConcept(_message.Message):
    __slots__ = ("value", "scheme", "meaning")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SCHEME_FIELD_NUMBER: _ClassVar[int]
    MEANING_FIELD_NUMBER: _ClassVar[int]
    value: str
    scheme: str
    meaning: str
    def __init__(self, value: _Optional[str] = ..., scheme: _Optional[str] = ..., meaning: _Optional[str] = ...) -> None: ...

class LabelInfo(_message.Message):
    __slots__ = ("name", "value", "colour", "code", "laterality", "largest_component", "category")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    COLOUR_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    LATERALITY_FIELD_NUMBER: _ClassVar[int]
    LARGEST_COMPONENT_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: int
    colour: _containers.RepeatedScalarFieldContainer[int]
    code: CodedConcept
    laterality: CodedConcept
    largest_component: bool
    category: CodedConcept
    def __init__(self, name: _Optional[str] = ..., value: _Optional[int] = ..., colour: _Optional[_Iterable[int]] = ..., code: _Optional[_Union[CodedConcept, _Mapping]] = ..., laterality: _Optional[_Union[CodedConcept, _Mapping]] = ..., largest_component: _Optional[bool] = ..., category: _Optional[_Union[CodedConcept, _Mapping]] = ...) -> None: ...

class LabelSetInfo(_message.Message):
    __slots__ = ("name", "labels", "ignore")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    IGNORE_FIELD_NUMBER: _ClassVar[int]
    name: str
    labels: _containers.RepeatedCompositeFieldContainer[LabelInfo]
    ignore: int
    def __init__(self, name: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[LabelInfo, _Mapping]]] = ..., ignore: _Optional[int] = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("name", "task", "organseg_version", "created", "ensembles", "members", "size", "model_version", "t1_mode", "t2_channel", "label_set", "channels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ORGANSEG_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ENSEMBLES_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    T1_MODE_FIELD_NUMBER: _ClassVar[int]
    T2_CHANNEL_FIELD_NUMBER: _ClassVar[int]
    LABEL_SET_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: int
    organseg_version: str
    created: str
    ensembles: _containers.RepeatedCompositeFieldContainer[EnsembleInfo]
    members: _containers.RepeatedCompositeFieldContainer[MemberInfo]
    size: int
    model_version: str
    t1_mode: str
    t2_channel: bool
    label_set: LabelSetInfo
    channels: _containers.RepeatedCompositeFieldContainer[InputChannelInfo]
    def __init__(self, name: _Optional[str] = ..., task: _Optional[int] = ..., organseg_version: _Optional[str] = ..., created: _Optional[str] = ..., ensembles: _Optional[_Iterable[_Union[EnsembleInfo, _Mapping]]] = ..., members: _Optional[_Iterable[_Union[MemberInfo, _Mapping]]] = ..., size: _Optional[int] = ..., model_version: _Optional[str] = ..., t1_mode: _Optional[str] = ..., t2_channel: _Optional[bool] = ..., label_set: _Optional[_Union[LabelSetInfo, _Mapping]] = ..., channels: _Optional[_Iterable[_Union[InputChannelInfo, _Mapping]]] = ...) -> None: ...

class InputChannelInfo(_message.Message):
    __slots__ = ("name", "modality")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    name: str
    modality: str
    def __init__(self, name: _Optional[str] = ..., modality: _Optional[str] = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("status", "ensembles")
    class EnsemblesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ENSEMBLES_FIELD_NUMBER: _ClassVar[int]
    status: str
    ensembles: _containers.ScalarMap[str, str]
    def __init__(self, status: _Optional[str] = ..., ensembles: _Optional[_Mapping[str, str]] = ...) -> None: ...
