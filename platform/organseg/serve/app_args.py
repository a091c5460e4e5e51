"""The Serve application's ``args`` (the ``args`` of ``organseg.serve.app:build_app`` in a Serve config),
in a module of their own so that the router and the deployments take them typed without importing the
application builder."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from organseg.ensemble.routing import ModalityPolicy
from organseg.serve.ops.retry import RETRY_BUDGET_S
from organseg.serve.wire import WireLimits


class AppArgs(BaseModel):
    """``args`` of the application in a Serve config."""

    model_config = ConfigDict(extra="forbid")

    model_dir: str = Field(
        description="Model directory written by ``organseg train``; on a cluster, a path every node "
        "mounts at the same place."
    )
    # Measured on one H100 with the four 512² CT members (benchmarks/serve_bench.py): co-located gave
    # 1.18× the throughput at 16 clients but 1.36× the single-volume latency (separate: 1.07×), and
    # separate deployments scale and batch each member on its own; so separate stays the default.
    colocate_members: bool = Field(
        False,
        description="Run each ensemble's members inside the ensemble replica instead of as member "
        "deployments.",
    )
    max_request_mb: int = Field(1024, ge=1, description="Largest accepted request body (MiB).")
    max_voxels: int = Field(
        WireLimits().max_voxels, ge=1, description="Largest accepted volume (voxels)."
    )
    chunk_slices: int = Field(
        8, ge=1, description="Slices per chunk sent through a member's @serve.batch queue."
    )
    modality_min_confidence: float = ModalityPolicy.model_fields["min_confidence"]
    modality_min_held_out_accuracy: float = ModalityPolicy.model_fields["min_held_out_accuracy"]
    modality_min_held_out_series: int = ModalityPolicy.model_fields["min_held_out_series"]
    modality_min_held_out_accuracy_per_modality: float = ModalityPolicy.model_fields[
        "min_held_out_accuracy_per_modality"
    ]
    device: str | None = Field(
        None, description="torch device for members (default: cuda when the replica has a GPU)."
    )
    member_precision: Literal["fp16", "bf16", "fp32"] | None = Field(
        None,
        description="Member weights' precision (default: fp16 on GPU, fp32 on CPU). On an H100 fp16 "
        "weights ran the ResNet-50 U-Net at 1323 slices/s against 1088 with bf16 autocast.",
    )
    # About 1.7x the slices/s of eager fp16 for the ResNet-50 U-Net on an H100, after a ~7 s build.
    compile_members: bool = Field(
        False,
        description="torch.compile each member, built and warmed up for the pass size "
        "(chunk_slices x max_batch_size) before its replica reports ready.",
    )
    api_token_file: str | None = Field(
        None,
        description="File holding the bearer token clients must send (e.g. a mounted Secret); "
        "re-read when it changes. $ORGANSEG_API_TOKEN on the replicas also enables auth.",
    )
    body_timeout_s: float | None = Field(
        30.0,
        gt=0,
        description="Seconds an HTTP client may go without sending any of its request body (408).",
    )
    decode_concurrency: int = Field(
        2, ge=1, description="Uploads decoded at once per router replica (CPU work in threads)."
    )
    retry_budget_s: float = Field(
        RETRY_BUDGET_S,
        ge=0,
        description="Seconds a call to a replica that died or is unavailable is retried (with "
        "backoff) before the request fails; model errors are never retried.",
    )

    @property
    def policy(self) -> ModalityPolicy:
        """The modality gate these args set (``modality_min_*``)."""
        return ModalityPolicy(
            min_confidence=self.modality_min_confidence,
            min_held_out_accuracy=self.modality_min_held_out_accuracy,
            min_held_out_series=self.modality_min_held_out_series,
            min_held_out_accuracy_per_modality=self.modality_min_held_out_accuracy_per_modality,
        )

    @property
    def limits(self) -> WireLimits:
        """The request limits these args set."""
        return WireLimits(max_request_bytes=self.max_request_mb * 2**20, max_voxels=self.max_voxels)
