"""Building the Serve application from a model directory (the ``import_path`` of every Serve config).

``deploy/serve/*.yaml`` name ``organseg.serve.app:build_app`` with ``args``; replicas, autoscaling, GPU
fractions, batch sizes and thresholds come from those files' ``deployments`` section, never from code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application

from organseg.ensemble.routing import ModalityPolicy
from organseg.ensemble.spec import EnsembleSpec, load_spec
from organseg.serve.deployments import EnsembleDeployment, MemberDeployment
from organseg.serve.router import Router
from organseg.serve.wire import WireLimits

APP_NAME = "organseg"
GRPC_SERVICER = "organseg.serve.proto.segmentation_pb2_grpc.add_SegmentationServicer_to_server"


def member_deployment_name(member: str) -> str:
    return f"member-{member}"


def ensemble_deployment_name(modality: str) -> str:
    return f"ensemble-{modality}"


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
        60.0,
        ge=0,
        description="Seconds a call to a replica that died or is unavailable is retried (with "
        "backoff) before the request fails; model errors are never retried.",
    )


def deployment_names(spec: EnsembleSpec, options: AppArgs) -> set[str]:
    """Every deployment the graph of ``spec`` has (what a Serve config may configure by name)."""
    names = {"router"} | {ensemble_deployment_name(m.value) for m in spec.modalities()}
    if not options.colocate_members:
        names |= {member_deployment_name(m.name) for m in spec.members}
    return names


def build_app(args: dict) -> Application:
    """Router → one ensemble per modality → member deployments (shared across modalities)."""
    options = AppArgs.model_validate(args)
    spec = load_spec(options.model_dir)
    members = {}
    if not options.colocate_members:
        members = {
            m.name: MemberDeployment.options(name=member_deployment_name(m.name)).bind(
                options.model_dir,
                m.name,
                options.device,
                options.member_precision,
                options.compile_members,
                options.chunk_slices,
            )
            for m in spec.members
        }
    ensembles = {}
    for modality in spec.modalities():
        names = [m.name for m in spec.members_for(modality)]
        ensembles[modality.value] = EnsembleDeployment.options(
            name=ensemble_deployment_name(modality.value)
        ).bind(
            options.model_dir,
            modality.value,
            {n: members[n] for n in names} if members else {},
            options.colocate_members,
            options.chunk_slices,
            options.device,
            options.member_precision,
            options.compile_members,
            options.retry_budget_s,
        )
    limits = {"max_request_bytes": options.max_request_mb * 2**20, "max_voxels": options.max_voxels}
    ops = {
        "api_token_file": options.api_token_file,
        "body_timeout_s": options.body_timeout_s,
        "decode_concurrency": options.decode_concurrency,
        "retry_budget_s": options.retry_budget_s,
    }
    routing = {
        "min_confidence": options.modality_min_confidence,
        "min_held_out_accuracy": options.modality_min_held_out_accuracy,
        "min_held_out_series": options.modality_min_held_out_series,
    }
    return Router.options(name="router").bind(options.model_dir, ensembles, limits, ops, routing)
