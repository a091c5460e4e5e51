"""Building the Serve application from a model directory (the ``import_path`` of every Serve config).

``deploy/serve/*.yaml`` name ``organseg.serve.app:build_app`` with ``args``; replicas, autoscaling, GPU
fractions, batch sizes and thresholds come from those files' ``deployments`` section, never from code.
"""

from ray.serve import Application

from organseg.ensemble.spec import EnsembleSpec, load_spec
from organseg.serve.app_args import AppArgs
from organseg.serve.deployments import EnsembleDeployment, MemberDeployment
from organseg.serve.router import Router

__all__ = ["APP_NAME", "GRPC_SERVICER", "AppArgs", "build_app", "deployment_names"]

APP_NAME = "organseg"
GRPC_SERVICER = "organseg.serve.proto.segmentation_pb2_grpc.add_SegmentationServicer_to_server"


def member_deployment_name(member: str) -> str:
    return f"member-{member}"


def ensemble_deployment_name(modality: str) -> str:
    return f"ensemble-{modality}"


def deployment_names(spec: EnsembleSpec, options: AppArgs) -> set[str]:
    """Every deployment the graph of ``spec`` has (what a Serve config may configure by name)."""
    names = {"router"} | {ensemble_deployment_name(m.value) for m in spec.modalities()}
    if not options.colocate_members:
        names |= {member_deployment_name(m.name) for m in spec.members}
    return names


def build_app(args: AppArgs) -> Application:
    """Router → one ensemble per modality → member deployments (shared across modalities).

    A typed application builder: Serve validates the config's ``args`` into :class:`AppArgs` (the
    annotation must stay a class, not a string, for it to: no ``from __future__ import annotations``
    in this module). Every deployment takes the validated args whole.
    """
    options = args if isinstance(args, AppArgs) else AppArgs.model_validate(args)
    spec = load_spec(options.model_dir)
    members = {}
    if not options.colocate_members:
        members = {
            m.name: MemberDeployment.options(name=member_deployment_name(m.name)).bind(
                m.name, options
            )
            for m in spec.members
        }
    ensembles = {}
    for modality in spec.modalities():
        names = [m.name for m in spec.members_for(modality)]
        ensembles[modality.value] = EnsembleDeployment.options(
            name=ensemble_deployment_name(modality.value)
        ).bind(modality.value, {n: members[n] for n in names} if members else {}, options)
    return Router.options(name="router").bind(ensembles, options)
