"""Loading a trained member and running it (used in-process and by Serve replicas).

2D members run over slice batches; 3D members over the whole prepared volume with the sliding window
(:mod:`organseg.ensemble.sliding`), in fp32 and uncompiled (window shapes vary at volume edges). A k-fold
member holds all its fold networks and averages their probabilities.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from organseg.ensemble.spec import MemberEntry
from organseg.errors import ModelError
from organseg.models import create_member
from organseg.preprocess.channels import to_channels


def pick_device(device: str | None = None) -> torch.device:
    """``device`` when given, else CUDA when this process sees a GPU, else the CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


INFERENCE_PRECISIONS = ("fp16", "bf16", "fp32")
_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def inference_precision(precision: str | None, device: torch.device) -> str:
    """``precision`` checked, or the default for ``device``: fp16 weights on CUDA, fp32 on CPU.

    fp16 weights, not bf16 autocast: on an H100 the ResNet-50 U-Net ran 1323 slices/s with fp16 weights
    against 1088 with bf16 autocast (batch 32, 512², channels-last); inference needs no bf16 range.
    """
    if precision is None:
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in INFERENCE_PRECISIONS:
        raise ModelError(
            f"precision must be one of {list(INFERENCE_PRECISIONS)}, got {precision!r}"
        )
    if device.type == "cpu" and precision == "fp16":
        raise ModelError("precision fp16 needs a GPU; use fp32 (or bf16) on CPU")
    return precision


class MemberRunner:
    """One member's network, ready for inference: ``(N, C, H, W)`` slices → ``(N, K, H, W)`` probabilities.

    On a GPU it runs channels-last with half-precision weights (``precision``; cuDNN autotuned for the fixed
    slice shape); on CPU it stays fp32, so in-process and served masks are identical there. With
    ``compile`` the network goes through ``torch.compile`` and every forward pass gets exactly
    ``batch_size`` slices (the last batch padded), so one compiled graph serves every request;
    :meth:`warm_up` builds it before the first request (Serve replicas call it before they report ready).
    """

    def __init__(
        self,
        model_dir: Path | str,
        entry: MemberEntry,
        device: str | None = None,
        batch_size: int = 16,
        precision: str | None = None,
        compile: bool = False,
        per_channel: bool = False,
    ):
        self.entry = entry
        #: the model stacks a dataset's channels: a 3D member z-scores each on its own
        self.per_channel = per_channel
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.precision = "fp32" if self.is_3d else inference_precision(precision, self.device)
        self.dtype = _DTYPES[self.precision]
        self.compiled = compile and not self.is_3d
        self.models = [
            self._load(Path(model_dir) / weights)
            for weights in entry.fold_weights or [entry.weights]
        ]
        self.model = self.models[0]
        self._warm: set[int] = set()
        # one forward pass at a time per member (client threads share a predictor; a compiled graph
        # is not re-entrant, and the device runs one pass at a time anyway)
        self._lock = threading.Lock()

    @property
    def is_3d(self) -> bool:
        return self.entry.kind == "3d"

    def _load(self, weights: Path) -> torch.nn.Module:
        entry = self.entry
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(
                f"{weights}: cannot load weights of member {entry.name!r} ({exc})"
            ) from None
        model = create_member(
            entry.arch, entry.in_channels, len(entry.organs), encoder_weights=None, **entry.kwargs
        )
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelError(
                f"{weights}: weights do not fit {entry.arch!r} ({str(exc).splitlines()[0]})"
            ) from None
        model.eval().to(self.device, dtype=self.dtype)
        if self.device.type == "cuda" and not self.is_3d:
            model = model.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = (
                True  # fixed slice shapes: pick the fastest kernels once
            )
        return torch.compile(model) if self.compiled else model

    def predict_volume(
        self,
        volume: np.ndarray,
        spacing: tuple[float, float, float],
        window_batch_size: int | None = None,
        flip_z: bool = False,
    ) -> np.ndarray:
        """A 3D member's uint8 probabilities ``(Z, K, S, S)`` for the whole prepared volume (spacing x, y, z
        of its grid); fold networks are averaged before quantizing."""
        from organseg.ensemble.sliding import predict_volume

        assert self.entry.volume is not None
        with self._lock:
            total = None
            for model in self.models:
                probs = predict_volume(
                    model,
                    volume,
                    spacing,
                    self.entry.volume,
                    self.entry.in_channels,
                    window_batch_size,
                    flip_z,
                    self.per_channel,
                )
                total = probs if total is None else total + probs
            assert total is not None
            return quantize(total / len(self.models)).numpy()

    def run(
        self,
        volume: np.ndarray,
        spacing: tuple[float, float, float] | None = None,
        flip_z: bool = False,
    ) -> np.ndarray:
        """The member on a whole prepared volume, whichever its kind."""
        if self.is_3d:
            if spacing is None:
                raise ModelError(f"3D member {self.entry.name!r} needs the prepared grid's spacing")
            return self.predict_volume(volume, spacing, flip_z=flip_z)
        return self.predict(volume)

    def warm_up(self, size: int, batch_size: int | None = None) -> float:
        """One forward pass of ``batch_size`` blank ``size``² slices (compiles, autotunes); its seconds."""
        import time

        if self.is_3d:  # 3D members run eagerly; nothing to compile or autotune per shape
            return 0.0
        batch = batch_size or self.batch_size
        if batch in self._warm:
            return 0.0
        started = time.perf_counter()
        self.predict(np.zeros((batch, self.entry.in_channels, size, size), dtype=np.float16))
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._warm.add(batch)
        return time.perf_counter() - started

    def predict(self, slices: np.ndarray) -> np.ndarray:
        """Probabilities quantized to uint8 (p·255) for ``(N, C, H, W)`` slices.

        Quantizing here, in the one place both the in-process and the served path share, keeps their
        masks identical while members return a quarter of the float32 bytes across processes. Slices
        travel to the device in their stored dtype (float16) and are cast and channel-expanded there:
        a third of the host-to-device bytes of expanding grey to RGB float32 on the host.
        """
        with self._lock:
            return self._predict(slices)

    @torch.inference_mode()
    def _predict(self, slices: np.ndarray) -> np.ndarray:
        out = []
        n = len(slices)
        for start in range(0, n, self.batch_size):
            part = np.ascontiguousarray(slices[start : start + self.batch_size])
            count = len(part)
            if self.compiled and count < self.batch_size:  # one shape for the compiled graph
                pad = np.zeros((self.batch_size - count, *part.shape[1:]), dtype=part.dtype)
                part = np.concatenate([part, pad])
            x = torch.from_numpy(part).to(self.device, non_blocking=True).to(self.dtype)
            x = to_channels(x, self.entry.in_channels)
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            probs = None
            for model in self.models:  # the folds of a k-fold member, else one network
                p = torch.sigmoid(model(x)[:count].float())
                probs = p if probs is None else probs + p
            assert probs is not None
            out.append(quantize(probs / len(self.models)).cpu().numpy())
        if not out:
            return np.zeros((0, len(self.entry.organs), *slices.shape[2:]), dtype=np.uint8)
        return np.concatenate(out, axis=0)


def quantize(probs: torch.Tensor) -> torch.Tensor:
    """[0, 1] probabilities → uint8 in steps of 1/255 (rounded)."""
    return torch.round(probs * 255.0).to(torch.uint8)
