"""The member registry: every ensemble member is one builder function plus one :class:`MemberSpec`.

A member module decorates its builder with :func:`register_member`; the module's name goes into
:data:`MEMBER_MODULES` below. That line is the only edit outside the member's own file, and it keeps
the registry importable without touching torch until someone actually asks for a member.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from organseg.errors import ModelError

#: Modules whose import registers members. Adding a member: one file + one line here.
MEMBER_MODULES: tuple[str, ...] = (
    "organseg.models.smp_members",
    "organseg.models.dualtail",
    "organseg.models.sumnet",
    "organseg.models.cascade",
    "organseg.models.discriminator",
    "organseg.models.multipath",
    "organseg.models.attention_unet",
    "organseg.models.unet3d",
    "organseg.models.resunet3d",
    "organseg.models.ire3d",
    "organseg.models.cascade3d",
)

MemberKind = Literal["segmenter", "discriminator"]
LossName = Literal["dice", "bce", "dice_bce"]

#: Arguments every builder takes; everything else in its signature is a member-specific kwarg.
_COMMON_ARGS = ("in_channels", "classes", "encoder_weights")


@dataclass(frozen=True)
class MemberSpec:
    """What the trainer, tuner and CLI need to know about a member without building it."""

    name: str
    builder: Callable[..., Any] = field(repr=False)
    description: str
    kind: MemberKind = "segmenter"
    default_loss: LossName = "dice_bce"
    smp_backed: bool = False
    pretrainable: bool = False
    recommended_in_channels: int = 1
    #: 2: slices (N, C, H, W); 3: volumes (N, C, D, H, W).
    dims: int = 2
    #: The recipe's patch (z, y, x) of a 3D member: its default and the GFLOPs shape of ``models list``.
    patch: tuple[int, int, int] | None = None
    #: The recipe's voxel spacing (x, y, z) in mm of a 3D member.
    spacing: tuple[float, float, float] | None = None

    @property
    def params(self) -> dict[str, inspect.Parameter]:
        """Member-specific keyword arguments of the builder (name -> parameter with its default)."""
        sig = inspect.signature(self.builder)
        return {n: p for n, p in sig.parameters.items() if n not in _COMMON_ARGS}

    def describe_params(self) -> str:
        """``name=default`` pairs for error messages and ``organseg models list``."""
        parts = []
        for name, param in self.params.items():
            default = "" if param.default is inspect.Parameter.empty else f"={param.default!r}"
            parts.append(f"{name}{default}")
        return ", ".join(parts) or "(none)"


_REGISTRY: dict[str, MemberSpec] = {}
_loaded = False


def register_member(
    name: str,
    *,
    description: str,
    kind: MemberKind = "segmenter",
    default_loss: LossName = "dice_bce",
    smp_backed: bool = False,
    pretrainable: bool = False,
    recommended_in_channels: int = 1,
    dims: int = 2,
    patch: tuple[int, int, int] | None = None,
    spacing: tuple[float, float, float] | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator that registers ``builder(in_channels, classes, [encoder_weights], **kwargs)``."""

    def decorate(builder: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name].builder is not builder:
            raise ValueError(f"member {name!r} is registered twice")
        sig = inspect.signature(builder)
        missing = [a for a in ("in_channels", "classes") if a not in sig.parameters]
        if pretrainable:
            missing += [] if "encoder_weights" in sig.parameters else ["encoder_weights"]
        if missing:
            raise TypeError(f"builder of member {name!r} lacks parameter(s) {missing}")
        _REGISTRY[name] = MemberSpec(
            name=name,
            builder=builder,
            description=description,
            kind=kind,
            default_loss=default_loss,
            smp_backed=smp_backed,
            pretrainable=pretrainable,
            recommended_in_channels=recommended_in_channels,
            dims=dims,
            patch=patch,
            spacing=spacing,
        )
        return builder

    return decorate


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    for module in MEMBER_MODULES:
        importlib.import_module(module)
    _loaded = True


def _module_rank(spec: MemberSpec) -> int:
    module = getattr(spec.builder, "__module__", "")
    return MEMBER_MODULES.index(module) if module in MEMBER_MODULES else len(MEMBER_MODULES)


def list_members(kind: MemberKind | None = None) -> list[MemberSpec]:
    """All registered members in :data:`MEMBER_MODULES` order (stable whichever module was imported
    first), then registration order within a module; optionally only one ``kind``."""
    _ensure_loaded()
    ordered = sorted(_REGISTRY.values(), key=_module_rank)  # sorted() is stable: keeps file order
    return [s for s in ordered if kind is None or s.kind == kind]


def member_names(kind: MemberKind | None = None) -> list[str]:
    """Registered member names, optionally only one ``kind``."""
    return [s.name for s in list_members(kind)]


def get_member_spec(name: str) -> MemberSpec:
    """The spec of ``name``; an unknown name raises :class:`ModelError` listing the valid ones."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ModelError(
            f"unknown model member {name!r}; valid members are {sorted(_REGISTRY)}"
        ) from None


def create_member(
    name: str,
    in_channels: int,
    classes: int,
    encoder_weights: str | None = None,
    **kwargs: Any,
) -> Any:
    """Build member ``name`` returning an ``nn.Module`` with N×``classes``×H×W logits.

    ``encoder_weights`` ("imagenet") is only accepted by pretrainable members; unknown kwargs raise
    :class:`ModelError` naming the member's valid parameters.
    """
    spec = get_member_spec(name)
    for arg, value in (("in_channels", in_channels), ("classes", classes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ModelError(f"member {name!r}: {arg} must be a positive integer, got {value!r}")
    valid = spec.params
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in valid.values())
    unknown = sorted(k for k in kwargs if k not in valid)
    if unknown and not accepts_any:
        raise ModelError(
            f"member {name!r} got unknown parameter(s) {unknown}; "
            f"valid parameters are: {spec.describe_params()}"
        )
    if spec.pretrainable:
        kwargs["encoder_weights"] = encoder_weights
    elif encoder_weights is not None:
        raise ModelError(
            f"member {name!r} is trained from scratch and takes no encoder_weights "
            f"(got {encoder_weights!r}); pretrainable members are "
            f"{[s.name for s in list_members() if s.pretrainable]}"
        )
    return spec.builder(in_channels=in_channels, classes=classes, **kwargs)
