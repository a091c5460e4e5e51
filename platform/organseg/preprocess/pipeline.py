"""The single path from a raw Volume to network input, and from network output back to the volume's grid.

The slice cache, ``organseg predict --local`` and the Serve ensemble all call :func:`prepare_volume`, so a
model sees the same pixels in training and in production.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from organseg.errors import DataError
from organseg.io.volume import Geometry, Modality, Volume
from organseg.preprocess.channels import stack_t1
from organseg.preprocess.config import PreprocessConfig
from organseg.preprocess.intensity import normalize
from organseg.preprocess.registration import RigidRegistration, align_to
from organseg.preprocess.resample import inplane_geometry, resize_slices


@dataclass
class PreparedVolume:
    """Network-ready slices plus what is needed to put predictions back on the source grid.

    ``array`` is (Z, C, size, size) float32; ``geometry``/``shape`` are the *original* image's, and
    ``prepared_geometry`` places ``array`` in the same world space (same field of view and slices).
    """

    array: np.ndarray
    geometry: Geometry
    shape: tuple[int, int, int]
    modality: Modality
    size: int
    modalities: tuple[Modality, ...] = ()
    meta: dict[str, str] = field(default_factory=dict)
    #: How the T2-SPIR channel was registered onto the T1 grid (None without a T2 channel).
    registration: RigidRegistration | None = None

    @property
    def channels(self) -> int:
        return int(self.array.shape[1])

    @property
    def prepared_geometry(self) -> Geometry:
        return inplane_geometry(self.geometry, self.shape, self.size)

    def restore(self, prob_or_labels: np.ndarray, is_label: bool = False) -> np.ndarray:
        """(Z, K, size, size) probabilities or (Z, size, size) labels → the original (Z, [K,] H, W) grid.

        Probabilities are interpolated linearly (threshold after restoring for smooth borders); label
        maps use nearest neighbour and keep their dtype.
        """
        array = np.asarray(prob_or_labels)
        z, h, w = self.shape
        if (
            array.ndim not in (3, 4)
            or array.shape[0] != z
            or array.shape[-2:] != (self.size, self.size)
        ):
            raise ValueError(
                f"restore expects (Z={z}, [K,] {self.size}, {self.size}), got shape {array.shape}"
            )
        return resize_slices(array, (h, w), order=0 if is_label else 1)


def prepare_volume(
    image: Volume,
    cfg: PreprocessConfig,
    partner: Volume | None = None,
    t2: Volume | None = None,
) -> PreparedVolume:
    """Normalize ``image`` for its modality and resize its slices to ``cfg.size``².

    ``partner`` is the T1 out-phase series when ``image`` is T1 in-phase and ``cfg.t1_mode == "stack"``:
    the two are normalized separately and stacked as channels (in, out). With ``cfg.t2_channel``,
    ``t2`` (the patient's T2-SPIR) is registered to the in-phase series
    (:func:`~organseg.preprocess.registration.align_to`), resampled onto its grid and added as a third
    channel. Intensities are normalized on the original grid (statistics don't depend on ``size``),
    then resized bilinearly.
    """
    if t2 is not None and (partner is None or not cfg.t2_channel):
        raise DataError(
            f"{_name(image)}: a T2 series is only stacked as the third channel of T1 in+out "
            "(t1_mode: stack, t2_channel: true, with the out-phase partner)"
        )
    channels = [normalize(image, cfg)]
    modalities = [image.modality]
    registration = None
    if partner is not None:
        if image.modality is not Modality.MR_T1_IN or partner.modality is not Modality.MR_T1_OUT:
            raise DataError(
                f"{_name(image)}: a partner series is only used to stack T1 in-phase (image, got "
                f"{image.modality.value}) with out-phase (partner, got {partner.modality.value})"
            )
        if cfg.t1_mode != "stack":
            raise DataError(
                f"{_name(image)}: t1_mode is {cfg.t1_mode!r}, so no out-phase partner is stacked; "
                "pass partner only with t1_mode='stack'"
            )
        if partner.shape != image.shape:
            raise DataError(
                f"T1 in-phase {_name(image)} has shape {image.shape} but out-phase {_name(partner)} has "
                f"{partner.shape}; the two series must cover the same slices and pixels to stack"
            )
        channels.append(normalize(partner, cfg))
        modalities.append(partner.modality)
        stacked = stack_t1(channels[0], channels[1])
        if cfg.t2_channel:
            if t2 is None:
                raise DataError(
                    f"{_name(image)}: this model takes the patient's T2-SPIR series as the third "
                    "channel of T1 in+out (t2_channel), and none was given; send the T2-SPIR series "
                    "of the same examination too"
                )
            if t2.modality not in (Modality.MR_T2SPIR, Modality.UNKNOWN):
                raise DataError(
                    f"{_name(image)}: the third channel is T2-SPIR, but the series given for it is "
                    f"{t2.modality.value}"
                )
            aligned, registration = align_to(
                image, t2, "the T1 in-phase series", "the T2-SPIR series"
            )
            aligned.modality = Modality.MR_T2SPIR
            stacked = np.concatenate([stacked, normalize(aligned, cfg)[:, None]], axis=1)
            modalities.append(Modality.MR_T2SPIR)
    else:
        stacked = channels[0][:, None]
    array = resize_slices(stacked, cfg.size, order=1)
    return PreparedVolume(
        array=array,
        geometry=image.geometry,
        shape=image.shape,
        modality=image.modality,
        size=cfg.size,
        modalities=tuple(modalities),
        meta=dict(image.meta),
        registration=registration,
    )


def prepare_channels(
    volumes: Sequence[Volume], cfg: PreprocessConfig, names: Sequence[str]
) -> PreparedVolume:
    """The channels of one multi-channel case (``cfg.channels``: e.g. CT arterial + venous phase) as
    one (Z, C, size, size) input, channel ``i`` being ``volumes[i]`` named ``names[i]``.

    Each channel is normalized for its own modality (a CT channel windowed as CT, an MR channel
    scaled by its own statistics, exactly as a single-channel input of that modality), then they are
    stacked and resized together. Channels are stacked voxel for voxel, so they must share the
    first channel's grid: a mismatch is a :class:`DataError` naming the channel. The answer lies on
    the first channel's grid.
    """
    if len(volumes) != len(names) or not volumes:
        raise DataError(
            f"{len(volumes)} channel volume(s) for {len(names)} channel name(s) {list(names)}"
        )
    first = volumes[0]
    for name, volume in zip(names[1:], volumes[1:], strict=True):
        if volume.shape != first.shape or not volume.geometry.isclose(first.geometry):
            raise DataError(
                f"{_name(first)}: channel {name!r} (shape {list(volume.shape)}, spacing "
                f"{tuple(round(s, 4) for s in volume.geometry.spacing)}) is not on the grid of "
                f"channel {names[0]!r} (shape {list(first.shape)}, spacing "
                f"{tuple(round(s, 4) for s in first.geometry.spacing)}); the channels of a case are "
                "stacked voxel for voxel and must share one grid"
            )
    stacked = np.stack([normalize(v, cfg) for v in volumes], axis=1)
    return PreparedVolume(
        array=resize_slices(stacked, cfg.size, order=1),
        geometry=first.geometry,
        shape=first.shape,
        modality=first.modality,
        size=cfg.size,
        modalities=tuple(v.modality for v in volumes),
        meta=dict(first.meta),
    )


def _name(volume: Volume) -> str:
    return volume.meta.get("case_id") or volume.meta.get("source") or "volume"
