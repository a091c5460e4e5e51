"""Label sets: which structures a dataset (and later a model) segments, with their values, colours,
SNOMED CT codes and post-processing, independent of any one challenge.

CHAOS is one preset (:func:`chaos_label_set`); nnU-Net and MSD datasets bring their own
(:meth:`LabelSet.from_nnunet`, :meth:`LabelSet.from_msd`). Ray-, torch- and SimpleITK-free, so configs,
the CLI and the Serve router can import it.

SNOMED CT codes come from :data:`STRUCTURE_CODES`, a table of common abdominal structures whose values
match pydicom's bundled code dictionary (``pydicom.sr.codedict.codes.SCT``; a test compares them). A
label that is not in the table gets the code its dataset gives, else a generic code in organseg's private
scheme carrying the label's name — never another organ's code.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from organseg.errors import DataError

RGB = tuple[int, int, int]

#: Private coding scheme (DICOM PS3.16 8.2: designators starting with "99") for labels without a
#: SNOMED CT code; the code meaning is the label's own name.
PRIVATE_SCHEME = "99ORGANSEG"

#: The training-target value of a voxel of the ignore label, in every channel: the losses
#: (organseg.losses) and validation leave such voxels out; the datasets that build targets write it.
IGNORE_TARGET = -1.0


@dataclass(frozen=True)
class Code:
    """One coded concept (DICOM ``(value, scheme designator, meaning)``)."""

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class StructureCode:
    """What a segment is, DICOM-SEG's way: category, property type and (for paired organs) laterality."""

    category: Code
    type: Code
    laterality: Code | None = None

    @property
    def generic(self) -> bool:
        """True for organseg's name-carrying fallback code (no SNOMED CT code is known)."""
        return self.type.scheme == PRIVATE_SCHEME


_ANATOMY = Code("91723000", "SCT", "Anatomical Structure")
_RIGHT = Code("24028007", "SCT", "Right")
_LEFT = Code("7771000", "SCT", "Left")
_GENERIC_CATEGORY = Code("label", PRIVATE_SCHEME, "Segmented label")


def _organ(value: str, meaning: str, laterality: Code | None = None) -> StructureCode:
    return StructureCode(_ANATOMY, Code(value, "SCT", meaning), laterality)


_KIDNEY = ("64033007", "Kidney")
_ADRENAL = ("23451007", "Adrenal gland")

#: SNOMED CT codes of common abdominal structures by canonical name (the 15 AMOS structures and a few
#: more). Paired organs carry the organ code plus a laterality modifier, as DICOM-SEG codes them.
#: AMOS's single "prostate/uterus" label is deliberately absent: no one code is right for both.
STRUCTURE_CODES: MappingProxyType[str, StructureCode] = MappingProxyType(
    {
        "liver": _organ("10200004", "Liver"),
        "spleen": _organ("78961009", "Spleen"),
        "right_kidney": _organ(*_KIDNEY, _RIGHT),
        "left_kidney": _organ(*_KIDNEY, _LEFT),
        "kidney": _organ(*_KIDNEY),
        "gallbladder": _organ("28231008", "Gallbladder"),
        "esophagus": _organ("32849002", "Esophagus"),
        "stomach": _organ("69695003", "Stomach"),
        "aorta": _organ("15825003", "Aorta"),
        "inferior_vena_cava": _organ("64131007", "Inferior vena cava"),
        "portal_vein": _organ("32764006", "Portal vein"),
        "pancreas": _organ("15776009", "Pancreas"),
        "right_adrenal_gland": _organ(*_ADRENAL, _RIGHT),
        "left_adrenal_gland": _organ(*_ADRENAL, _LEFT),
        "duodenum": _organ("38848004", "Duodenum"),
        "urinary_bladder": _organ("89837001", "Bladder"),
        "prostate": _organ("41216001", "Prostate"),
        "uterus": _organ("35039007", "Uterus"),
        "colon": _organ("71854001", "Colon"),
        "small_intestine": _organ("30315005", "Small intestine"),
    }
)

#: Names datasets use for the structures above (AMOS, FLARE22, BTCV, WORD, TotalSegmentator spellings,
#: after :func:`normalise_name`), mapped to the canonical name.
ALIASES: MappingProxyType[str, str] = MappingProxyType(
    {
        "kidney_right": "right_kidney",
        "kidney_r": "right_kidney",
        "r_kidney": "right_kidney",
        "kidney_left": "left_kidney",
        "kidney_l": "left_kidney",
        "l_kidney": "left_kidney",
        "gall_bladder": "gallbladder",
        "oesophagus": "esophagus",
        "arota": "aorta",  # AMOS's dataset.json spells it so
        "ivc": "inferior_vena_cava",
        "postcava": "inferior_vena_cava",  # AMOS
        "inferior_vena_cava_ivc": "inferior_vena_cava",
        "portal_vein_and_splenic_vein": "",  # a combined label: no single code
        "adrenal_gland_right": "right_adrenal_gland",
        "adrenal_gland_left": "left_adrenal_gland",
        "right_adrenal": "right_adrenal_gland",
        "left_adrenal": "left_adrenal_gland",
        "bladder": "urinary_bladder",
    }
)

#: Structures whose true shape is one compact piece, so keeping only the largest connected component
#: removes false positives. Vessels, tubular organs, lesions and unknown labels keep every component:
#: dropping a piece of those would delete true anatomy.
SOLID_ORGANS = frozenset(
    {
        "liver",
        "spleen",
        "right_kidney",
        "left_kidney",
        "gallbladder",
        "stomach",
        "pancreas",
        "right_adrenal_gland",
        "left_adrenal_gland",
        "urinary_bladder",
        "prostate",
        "uterus",
    }
)

#: Display colours for labels without their own, chosen to stay apart from each other and from grey.
#: The first four are the CHAOS organs' colours; the other sixteen were picked greedily from an sRGB
#: grid, each the colour farthest (CIELAB distance) from those already chosen among colours with
#: lightness >= 50 and chroma >= 45, so every one shows on dark MR and on grey CT and no two look
#: alike (smallest pairwise CIELAB distance 37; a test checks). 20 entries, so the AMOS and
#: TotalSegmentator abdominal sets need no repeats; beyond that the list cycles.
PALETTE: tuple[RGB, ...] = (
    (255, 255, 0),
    (255, 0, 255),
    (0, 255, 255),
    (255, 140, 0),
    (0, 120, 225),
    (240, 15, 105),
    (0, 150, 30),
    (255, 165, 240),
    (0, 255, 0),
    (225, 255, 165),
    (135, 120, 15),
    (255, 0, 15),
    (255, 150, 135),
    (135, 90, 255),
    (0, 255, 165),
    (15, 195, 255),
    (240, 45, 180),
    (45, 165, 120),
    (165, 240, 75),
    (255, 210, 90),
)


def normalise_name(name: str) -> str:
    """``"Right Kidney"``, ``"right-kidney"`` and ``"right_kidney"`` → ``"right_kidney"``."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def canonical_name(name: str) -> str | None:
    """The :data:`STRUCTURE_CODES` key a dataset's label name stands for, or None when unknown."""
    key = normalise_name(name)
    key = ALIASES.get(key, key)
    return key if key in STRUCTURE_CODES else None


def generic_code(name: str) -> StructureCode:
    """The fallback code of a label without a SNOMED CT code: private scheme, the label's name as meaning."""
    return StructureCode(_GENERIC_CATEGORY, Code(normalise_name(name), PRIVATE_SCHEME, name))


def code_for(name: str) -> StructureCode:
    """The built-in SNOMED CT code of a structure name, else :func:`generic_code`."""
    canonical = canonical_name(name)
    return STRUCTURE_CODES[canonical] if canonical else generic_code(name)


@dataclass(frozen=True)
class Label:
    """One segmented structure.

    ``value`` is the voxel value in label maps. For a region-based label (nnU-Net's label tuples)
    ``region`` holds the values it covers and ``value`` is the one it is painted with when regions
    are turned back into a label map. ``largest_component`` says whether post-processing keeps only
    the largest connected component.
    """

    name: str
    value: int
    colour: RGB
    code: StructureCode
    largest_component: bool = False
    region: tuple[int, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        def code(c: Code | None) -> list[str] | None:
            return None if c is None else [c.value, c.scheme, c.meaning]

        return {
            "name": self.name,
            "value": self.value,
            "colour": list(self.colour),
            "code": {
                "category": code(self.code.category),
                "type": code(self.code.type),
                "laterality": code(self.code.laterality),
            },
            "largest_component": self.largest_component,
            "region": None if self.region is None else list(self.region),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Label:
        codes = data["code"]

        def code(c: Sequence[str] | None) -> Code | None:
            return None if c is None else Code(*c)

        return cls(
            name=data["name"],
            value=int(data["value"]),
            colour=tuple(int(c) for c in data["colour"]),  # type: ignore[arg-type]
            code=StructureCode(
                code(codes["category"]), code(codes["type"]), code(codes["laterality"])
            ),  # type: ignore[arg-type]
            largest_component=bool(data["largest_component"]),
            region=None if data.get("region") is None else tuple(int(v) for v in data["region"]),
        )


def make_label(
    name: str,
    value: int,
    index: int,
    code: StructureCode | None = None,
    colour: RGB | None = None,
    region: tuple[int, ...] | None = None,
) -> Label:
    """A label with defaults: the built-in code, the ``index``-th palette colour, and largest-component
    post-processing only for known solid organs."""
    canonical = canonical_name(name)
    return Label(
        name=name,
        value=int(value),
        colour=colour or PALETTE[index % len(PALETTE)],
        code=code or code_for(name),
        largest_component=canonical in SOLID_ORGANS,
        region=region,
    )


@dataclass(frozen=True)
class LabelSet:
    """The foreground labels of a dataset or model, in channel order (background 0 is implicit).

    ``ignore`` is the value of voxels left out of the loss and of every metric (nnU-Net's ``ignore``
    label; it must be the highest value). ``regions_class_order`` is set for region-based label sets:
    the order in which overlapping regions are painted back into one label map.
    """

    labels: tuple[Label, ...]
    ignore: int | None = None
    regions_class_order: tuple[int, ...] | None = None
    name: str = ""

    def __post_init__(self) -> None:
        problems = label_set_problems(self.labels, self.ignore, self.regions_class_order)
        if problems:
            raise DataError("; ".join(f"{key}: {message}" for key, message in problems))

    # -- views ----------------------------------------------------------------------------------
    @property
    def names(self) -> tuple[str, ...]:
        return tuple(lb.name for lb in self.labels)

    @property
    def values(self) -> tuple[int, ...]:
        return tuple(lb.value for lb in self.labels)

    @property
    def region_based(self) -> bool:
        return any(lb.region is not None for lb in self.labels)

    def __len__(self) -> int:
        return len(self.labels)

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.labels)

    def __getitem__(self, name: str) -> Label:
        for label in self.labels:
            if label.name == name:
                return label
        raise DataError(f"unknown label {name!r}; this label set has {list(self.names)}")

    def allowed_values(self) -> frozenset[int]:
        """Every voxel value a label map of this set may hold (background, labels, ignore)."""
        values = {0, *(v for lb in self.labels for v in (lb.region or (lb.value,)))}
        if self.ignore is not None:
            values.add(self.ignore)
        return frozenset(values)

    # -- constructors ---------------------------------------------------------------------------
    @classmethod
    def from_nnunet(
        cls,
        labels: Mapping[str, Any],
        regions_class_order: Sequence[int] | None = None,
        codes: Mapping[str, StructureCode] | None = None,
        name: str = "",
    ) -> LabelSet:
        """From an nnU-Net v2 ``dataset.json``'s ``labels`` (name → int or, for regions, list of ints;
        ``background`` 0; optional ``ignore``, the highest value). Raises :class:`DataError` naming the key."""
        problems, entries, ignore = parse_nnunet_labels(labels, regions_class_order)
        if problems:
            raise DataError("; ".join(f"{key}: {message}" for key, message in problems))
        made = []
        for index, (label_name, value, region) in enumerate(entries):
            made.append(
                make_label(label_name, value, index, (codes or {}).get(label_name), region=region)
            )
        order = tuple(int(v) for v in regions_class_order) if regions_class_order else None
        return cls(tuple(made), ignore=ignore, regions_class_order=order, name=name)

    @classmethod
    def from_msd(cls, labels: Mapping[str, str], name: str = "") -> LabelSet:
        """From an MSD ``dataset.json``'s ``labels`` (``"0": "background"``, ``"1": "liver"``...)."""
        problems, entries = parse_msd_labels(labels)
        if problems:
            raise DataError("; ".join(f"{key}: {message}" for key, message in problems))
        return cls(
            tuple(make_label(n, v, i) for i, (n, v) in enumerate(entries)),
            name=name,
        )

    @classmethod
    def from_names(cls, names: Iterable[str], name: str = "") -> LabelSet:
        """Labels 1..N for ``names``, in order, with every default."""
        return cls(tuple(make_label(n, i + 1, i) for i, n in enumerate(names)), name=name)

    def to_nnunet(self) -> dict[str, Any]:
        """The ``labels`` mapping of an nnU-Net ``dataset.json`` for this set."""
        out: dict[str, Any] = {"background": 0}
        for lb in self.labels:
            out[lb.name] = list(lb.region) if lb.region is not None else lb.value
        if self.ignore is not None:
            out["ignore"] = self.ignore
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "labels": [lb.to_dict() for lb in self.labels],
            "ignore": self.ignore,
            "regions_class_order": None
            if self.regions_class_order is None
            else list(self.regions_class_order),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelSet:
        order = data.get("regions_class_order")
        return cls(
            tuple(Label.from_dict(d) for d in data["labels"]),
            ignore=data.get("ignore"),
            regions_class_order=None if order is None else tuple(int(v) for v in order),
            name=data.get("name", ""),
        )

    def with_codes(self, codes: Mapping[str, StructureCode]) -> LabelSet:
        """The same set with user-given codes for the named labels (unknown names are an error)."""
        unknown = sorted(set(codes) - set(self.names))
        if unknown:
            raise DataError(
                f"codes given for unknown label(s) {unknown}; labels are {list(self.names)}"
            )
        labels = tuple(replace(lb, code=codes.get(lb.name, lb.code)) for lb in self.labels)
        return replace(self, labels=labels)


Problem = tuple[str, str]  # (file or key, message)


def label_set_problems(
    labels: Sequence[Label], ignore: int | None, regions_class_order: Sequence[int] | None
) -> list[Problem]:
    """Everything wrong with a set of labels, each with the key it concerns."""
    problems: list[Problem] = []
    seen_names: set[str] = set()
    seen_values: set[int] = set()
    region_based = any(lb.region is not None for lb in labels)
    for lb in labels:
        key = f"labels.{lb.name}"
        if lb.name in seen_names or lb.name in ("background", "ignore"):
            problems.append((key, "label name used twice or reserved"))
        seen_names.add(lb.name)
        if lb.value <= 0:
            problems.append((key, f"value {lb.value} must be > 0 (0 is background)"))
        if lb.value in seen_values and not region_based:
            problems.append((key, f"value {lb.value} is used by another label"))
        seen_values.add(lb.value)
    if ignore is not None:
        highest = max((v for lb in labels for v in (lb.region or (lb.value,))), default=0)
        if ignore <= highest:
            problems.append(
                (
                    "labels.ignore",
                    f"the ignore label ({ignore}) must be the highest value, above {highest}",
                )
            )
    if region_based and not regions_class_order:
        problems.append(
            (
                "regions_class_order",
                "region-based labels (lists of values) need regions_class_order",
            )
        )
    if regions_class_order is not None and region_based and len(regions_class_order) != len(labels):
        problems.append(
            (
                "regions_class_order",
                f"has {len(regions_class_order)} entries for {len(labels)} region labels",
            )
        )
    return problems


def parse_nnunet_labels(
    labels: Any, regions_class_order: Any = None
) -> tuple[list[Problem], list[tuple[str, int, tuple[int, ...] | None]], int | None]:
    """Check an nnU-Net ``labels`` mapping; returns problems, ``(name, value, region)`` entries
    (foreground, in file order) and the ignore value."""
    problems: list[Problem] = []
    entries: list[tuple[str, int, tuple[int, ...] | None]] = []
    ignore = None
    if not isinstance(labels, Mapping) or not labels:
        return [("labels", "must be a non-empty mapping of label name to value")], [], None

    def as_int(key: str, value: Any) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            problems.append((key, f"value {value!r} is not a non-negative integer"))
            return None
        return value

    if labels.get("background") != 0:
        problems.append(("labels.background", "must be 0 (nnU-Net's background)"))
    region_based = any(isinstance(v, (list, tuple)) for v in labels.values())
    for index, (name, value) in enumerate(labels.items()):
        key = f"labels.{name}"
        if name == "background":
            continue
        if name == "ignore":
            ignore = as_int(key, value)
            continue
        if isinstance(value, (list, tuple)):
            values = [as_int(key, v) for v in value]
            if not values or None in values:
                if not values:
                    problems.append((key, "an empty region"))
                continue
            region = tuple(int(v) for v in values)  # type: ignore[arg-type]
            # painted with its position in regions_class_order when turned back into a label map
            paint = index
            if isinstance(regions_class_order, (list, tuple)) and len(entries) < len(
                regions_class_order
            ):
                paint = regions_class_order[len(entries)]
            entries.append((name, int(paint), region))
        else:
            as_value = as_int(key, value)
            if as_value is not None:
                entries.append((name, as_value, (as_value,) if region_based else None))
    if not problems:
        labels_made = [Label(n, v, (0, 0, 0), generic_code(n), region=r) for n, v, r in entries]
        problems += label_set_problems(labels_made, ignore, regions_class_order)
        values = [v for _, v, r in entries if r is None]
        if values and ignore is not None:
            values.append(ignore)
        if (
            len(set(values)) == len(values)
            and values
            and sorted(values) != list(range(1, len(values) + 1))
        ):
            problems.append(
                (
                    "labels",
                    "values (ignore included) must be consecutive from 1 (nnU-Net's rule), "
                    f"got {sorted(values)}",
                )
            )
    return problems, entries, ignore


def parse_msd_labels(labels: Any) -> tuple[list[Problem], list[tuple[str, int]]]:
    """Check an MSD ``labels`` mapping (``"value": "name"``); returns problems and foreground entries."""
    if not isinstance(labels, Mapping) or not labels:
        return [("labels", "must be a non-empty mapping of value to label name")], []
    problems: list[Problem] = []
    entries: list[tuple[str, int]] = []
    for key, name in labels.items():
        if not str(key).isdigit():
            problems.append((f"labels.{key}", 'keys must be label values ("0", "1", ...)'))
            continue
        if not isinstance(name, str) or not name.strip():
            problems.append((f"labels.{key}", "the label name must be a non-empty string"))
            continue
        if int(key) != 0:
            entries.append((name, int(key)))
    if "0" not in labels:
        problems.append(("labels.0", "missing (MSD's background)"))
    names = [n for n, _ in entries]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        problems.append(("labels", f"label name {duplicate!r} used for more than one value"))
    return problems, entries


def chaos_label_set() -> LabelSet:
    """The CHAOS vocabulary (liver 1, right kidney 2, left kidney 3, spleen 4) as a label set, with the
    colours organseg has always drawn them in."""
    from organseg.organs import ORGAN_COLOURS, ORGAN_LABELS

    return LabelSet(
        tuple(
            replace(make_label(name, value, index), colour=ORGAN_COLOURS[name])
            for index, (name, value) in enumerate(ORGAN_LABELS.items())
        ),
        name="chaos",
    )
