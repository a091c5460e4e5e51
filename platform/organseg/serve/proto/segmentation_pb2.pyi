from collections.abc import Iterable as _Iterable
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar
from typing import Union as _Union

from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from google.protobuf.internal import containers as _containers

DESCRIPTOR: _descriptor.FileDescriptor

class RawVolume(_message.Message):
    __slots__ = ("compression", "data", "direction", "dtype", "origin", "shape", "spacing")
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
    def __init__(self, data: bytes | None = ..., dtype: str | None = ..., shape: _Iterable[int] | None = ..., spacing: _Iterable[float] | None = ..., origin: _Iterable[float] | None = ..., direction: _Iterable[float] | None = ..., compression: str | None = ...) -> None: ...

class SegmentRequest(_message.Message):
    __slots__ = ("dicom_zip", "filename", "modality", "output_format", "raw", "volume_file")
    VOLUME_FILE_FIELD_NUMBER: _ClassVar[int]
    DICOM_ZIP_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FORMAT_FIELD_NUMBER: _ClassVar[int]
    volume_file: bytes
    dicom_zip: bytes
    raw: RawVolume
    filename: str
    modality: str
    output_format: str
    def __init__(self, volume_file: bytes | None = ..., dicom_zip: bytes | None = ..., raw: _Union[RawVolume, _Mapping] | None = ..., filename: str | None = ..., modality: str | None = ..., output_format: str | None = ...) -> None: ...

class SegmentResponse(_message.Message):
    __slots__ = ("direction", "ensemble", "labels", "members", "modality", "modality_reason", "origin", "output_format", "shape", "spacing", "timings_s", "uncertainty", "volumes_ml")
    class VolumesMlEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: str | None = ..., value: float | None = ...) -> None: ...
    class UncertaintyEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: str | None = ..., value: float | None = ...) -> None: ...
    class TimingsSEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: str | None = ..., value: float | None = ...) -> None: ...
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
    def __init__(self, labels: bytes | None = ..., output_format: str | None = ..., shape: _Iterable[int] | None = ..., spacing: _Iterable[float] | None = ..., origin: _Iterable[float] | None = ..., direction: _Iterable[float] | None = ..., modality: str | None = ..., modality_reason: str | None = ..., members: _Iterable[str] | None = ..., volumes_ml: _Mapping[str, float] | None = ..., uncertainty: _Mapping[str, float] | None = ..., timings_s: _Mapping[str, float] | None = ..., ensemble: str | None = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MemberInfo(_message.Message):
    __slots__ = ("arch", "in_channels", "modalities", "name", "organs", "val_dice")
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
    def __init__(self, name: str | None = ..., arch: str | None = ..., organs: _Iterable[str] | None = ..., modalities: _Iterable[str] | None = ..., in_channels: int | None = ..., val_dice: float | None = ...) -> None: ...

class EnsembleInfo(_message.Message):
    __slots__ = ("members", "modality", "organs")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    ORGANS_FIELD_NUMBER: _ClassVar[int]
    modality: str
    members: _containers.RepeatedScalarFieldContainer[str]
    organs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, modality: str | None = ..., members: _Iterable[str] | None = ..., organs: _Iterable[str] | None = ...) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("created", "ensembles", "members", "name", "organseg_version", "size", "task")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    ORGANSEG_VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    ENSEMBLES_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: int
    organseg_version: str
    created: str
    ensembles: _containers.RepeatedCompositeFieldContainer[EnsembleInfo]
    members: _containers.RepeatedCompositeFieldContainer[MemberInfo]
    size: int
    def __init__(self, name: str | None = ..., task: int | None = ..., organseg_version: str | None = ..., created: str | None = ..., ensembles: _Iterable[_Union[EnsembleInfo, _Mapping]] | None = ..., members: _Iterable[_Union[MemberInfo, _Mapping]] | None = ..., size: int | None = ...) -> None: ...

class HealthRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class HealthResponse(_message.Message):
    __slots__ = ("ensembles", "status")
    class EnsemblesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: str | None = ..., value: str | None = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ENSEMBLES_FIELD_NUMBER: _ClassVar[int]
    status: str
    ensembles: _containers.ScalarMap[str, str]
    def __init__(self, status: str | None = ..., ensembles: _Mapping[str, str] | None = ...) -> None: ...
