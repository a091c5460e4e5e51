"""CHAOS folders (real or synthetic) in the nnU-Net v2 raw layout, so organseg and nnU-Net can be
compared on the same cases.

One nnU-Net dataset per CHAOS acquisition kind, because each has its own channels and labels:

- ``Dataset{id}_CHAOSCT``: channel ``CT``; label ``liver`` 1 (CHAOS CT ground truth is liver only).
- ``Dataset{id+1}_CHAOSMRT1DUAL``: channels ``MR-T1-in`` (``_0000``) and ``MR-T1-out`` (``_0001``) —
  one acquisition, one shared mask; labels liver 1, right kidney 2, left kidney 3, spleen 4.
- ``Dataset{id+2}_CHAOSMRT2SPIR``: channel ``MR-T2SPIR``; the same four labels.

Voxels, geometry and label maps are exactly what :func:`organseg.io.chaos.load_case` gives (file-name
slice order, masks from the PNG grey levels); series without a ``Ground`` folder go to ``imagesTs``.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from organseg.datasets.write import CaseToWrite, write_nnunet
from organseg.errors import DataError
from organseg.io.chaos import discover_cases, load_case
from organseg.io.volume import Modality
from organseg.labels import LabelSet, chaos_label_set

#: kind → (dataset-id offset, dataset name, channel modalities in order)
KINDS: dict[str, tuple[int, str, tuple[Modality, ...]]] = {
    "CT": (0, "CHAOSCT", (Modality.CT,)),
    "T1DUAL": (1, "CHAOSMRT1DUAL", (Modality.MR_T1_IN, Modality.MR_T1_OUT)),
    "T2SPIR": (2, "CHAOSMRT2SPIR", (Modality.MR_T2SPIR,)),
}
_KIND_OF = {
    Modality.CT: "CT",
    Modality.MR_T1_IN: "T1DUAL",
    Modality.MR_T1_OUT: "T1DUAL",
    Modality.MR_T2SPIR: "T2SPIR",
}


def chaos_case_name(patient: str) -> str:
    """``CT/1`` → ``chaos_ct_1``, ``Test/MR/3`` → ``chaos_test_mr_3`` (nnU-Net case identifiers)."""
    return "chaos_" + patient.lower().replace("/", "_")


def _label_set(kind: str) -> LabelSet:
    chaos = chaos_label_set()
    if kind == "CT":
        return LabelSet((chaos["liver"],), name="chaos-ct")
    return chaos


def convert_chaos_to_nnunet(
    src: Path | str,
    out: Path | str,
    first_id: int = 501,
    file_ending: str = ".nii.gz",
    overwrite: bool = False,
) -> list[Path]:
    """Write the CHAOS dataset at ``src`` as nnU-Net v2 raw datasets under ``out`` (one per kind
    present); returns their folders."""
    if not 1 <= first_id <= 997:
        raise DataError(f"first dataset id {first_id}: nnU-Net ids are 1-999 and three are needed")
    refs = discover_cases(src)
    if not refs:
        raise DataError(f"{src}: no CHAOS series found (expected Train_Sets/CT or MR folders)")
    grouped: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    for ref in refs:
        grouped[_KIND_OF[ref.modality]][ref.patient].append(ref)
    written = []
    for kind, patients in grouped.items():
        offset, name, modalities = KINDS[kind]
        channel_names = [m.value for m in modalities]

        def cases(patients=patients, modalities=modalities):
            for patient, series in patients.items():
                by_modality = {r.modality: r for r in series}
                absent = [m.value for m in modalities if m not in by_modality]
                if absent:
                    raise DataError(f"{series[0].image_dir.parent}: case {patient} lacks {absent}")
                loaded = [load_case(by_modality[m]) for m in modalities]
                labels = [c.label for c in loaded]
                yield CaseToWrite(chaos_case_name(patient), [c.image for c in loaded], labels[0])

        target = Path(out) / f"Dataset{first_id + offset:03d}_{name}"
        written.append(
            write_nnunet(
                target,
                cases(),
                channel_names,
                _label_set(kind),
                name,
                file_ending=file_ending,
                overwrite=overwrite,
                extra={
                    "description": "CHAOS series converted by organseg (file-name slice order, "
                    "masks from the PNG grey levels)"
                },
            )
        )
    return sorted(written)
