"""KubeRay manifests and the container recipe agree with each other, with the Serve profile and with organseg.

No cluster: the manifests are parsed, the RayService's serveConfigV2 goes through Ray Serve's schema,
the RayJob entrypoints are run as `organseg <command> --help`, and names, ports, paths, versions and
resources are cross-checked. `python tests/deploy/test_kuberay.py` re-embeds deploy/serve/gpu.yaml as the
RayService's serveConfigV2 after the profile changes.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema

from organseg.config import load_config

ROOT = Path(__file__).resolve().parents[2]
KUBERAY = ROOT / "deploy" / "kuberay"
RAYSERVICE = KUBERAY / "rayservice.yaml"
JOBS = {
    "train": KUBERAY / "rayjob-train.yaml",
    "tune": KUBERAY / "rayjob-tune.yaml",
    "batch": KUBERAY / "rayjob-batch.yaml",
}
#: Jobs that run an experiment config (``batch`` runs a model directory over an archive instead).
CONFIG_JOBS = ("train", "tune")
STORAGE = KUBERAY / "storage.yaml"
GPU_PROFILE = ROOT / "deploy" / "serve" / "gpu.yaml"
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"
MANIFESTS = sorted(KUBERAY.glob("*.yaml"))


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def one(path: Path, kind: str) -> dict[str, Any]:
    (doc,) = [d for d in docs(path) if d["kind"] == kind]
    return doc


def cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"]["rayClusterConfig" if doc["kind"] == "RayService" else "rayClusterSpec"]


def pod_groups(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = cluster_spec(doc)
    return [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for g in pod_groups(doc) for c in g["template"]["spec"]["containers"]]


def serve_config() -> dict[str, Any]:
    return yaml.safe_load(one(RAYSERVICE, "RayService")["spec"]["serveConfigV2"])


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), re.M))


def quantity(value: str | int | float) -> float:
    """A Kubernetes CPU quantity ("500m", "4") as cores."""
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


# -- every manifest ---------------------------------------------------------------------------------
@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_parses_into_named_objects(path: Path) -> None:
    objects = docs(path)
    assert objects
    for obj in objects:
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(obj)
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", obj["metadata"]["name"])
        if obj["kind"] in ("RayService", "RayJob", "RayCluster"):
            assert obj["apiVersion"] == "ray.io/v1"


@pytest.mark.parametrize("path", [RAYSERVICE, *JOBS.values()], ids=lambda p: p.name)
def test_ray_versions_agree(path: Path) -> None:
    doc = docs(path)[0]
    args = dockerfile_args()
    assert cluster_spec(doc)["rayVersion"] == args["RAY_VERSION"] == ray.__version__
    for container in containers(doc):
        tag = container["image"].rsplit(":", 1)[1]
        assert f"ray{ray.__version__}" in tag, (
            f"{container['image']} does not record Ray {ray.__version__}"
        )
        assert f"-{args['PYTHON_TAG']}-gpu" in tag, "image tag and Dockerfile base differ"


@pytest.mark.parametrize("path", [RAYSERVICE, *JOBS.values()], ids=lambda p: p.name)
def test_pods_mount_declared_volumes_at_one_path_each(path: Path) -> None:
    claims = {
        d["metadata"]["name"]: d for d in docs(STORAGE) if d["kind"] == "PersistentVolumeClaim"
    }
    mount_of: dict[str, str] = {}
    for group in pod_groups(docs(path)[0]):
        pod = group["template"]["spec"]
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in pod["containers"]:
            for mount in container.get("volumeMounts", []):
                volume = volumes[mount["name"]]  # KeyError: mount without a volume
                claim = volume.get("persistentVolumeClaim", {}).get("claimName")
                if claim is None:
                    continue
                assert claim in claims, f"{claim} is not declared in {STORAGE.name}"
                assert "ReadWriteMany" in claims[claim]["spec"]["accessModes"]
                assert mount_of.setdefault(claim, mount["mountPath"]) == mount["mountPath"], (
                    f"{claim} must be mounted at the same path on every pod"
                )
    assert mount_of, "no shared storage mounted"


@pytest.mark.parametrize("path", [RAYSERVICE, *JOBS.values()], ids=lambda p: p.name)
def test_gpu_worker_group(path: Path) -> None:
    spec = cluster_spec(docs(path)[0])
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (group,) = spec["workerGroupSpecs"]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    pod = group["template"]["spec"]
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    (container,) = pod["containers"]
    limits = container["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) >= 1
    assert container["resources"]["requests"]["nvidia.com/gpu"] == limits["nvidia.com/gpu"]


# -- RayService -------------------------------------------------------------------------------------
def test_serve_config_is_the_gpu_profile_and_validates() -> None:
    assert serve_config() == yaml.safe_load(GPU_PROFILE.read_text()), (
        "serveConfigV2 differs from deploy/serve/gpu.yaml; run python tests/deploy/test_kuberay.py"
    )
    ServeDeploySchema.model_validate(serve_config())


def test_rayservice_ports_agree_with_serve_config() -> None:
    service = one(RAYSERVICE, "RayService")
    assert cluster_spec(service)["enableInTreeAutoscaling"] is True
    head = cluster_spec(service)["headGroupSpec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in head["ports"]}
    config = serve_config()
    assert ports["serve"] == config["http_options"]["port"] == 8000
    assert ports["serve-grpc"] == config["grpc_options"]["port"] == 9000
    assert ports["dashboard"] == 8265
    assert ports["gcs-server"] == 6379
    assert config["http_options"]["host"] == "0.0.0.0"


def test_rayservice_reads_the_api_token_from_a_secret() -> None:
    """Every pod (head and workers hold replicas/proxies) gets ORGANSEG_API_TOKEN from the Secret."""
    for group in pod_groups(one(RAYSERVICE, "RayService")):
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            ref = env["ORGANSEG_API_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": "organseg-api-token", "key": "token"}, container["name"]


def test_rayservice_serves_a_model_on_its_read_only_volume() -> None:
    service = one(RAYSERVICE, "RayService")
    model_dir = serve_config()["applications"][0]["args"]["model_dir"]
    for group in pod_groups(service):
        pod = group["template"]["spec"]
        mounts = [m for c in pod["containers"] for m in c.get("volumeMounts", [])]
        models = [m for m in mounts if model_dir.startswith(m["mountPath"].rstrip("/") + "/")]
        assert models, "every pod reads the model directory"
        assert models[0]["readOnly"] is True


def test_rayservice_minimum_cluster_holds_the_minimum_replicas() -> None:
    """Minimum replicas of every deployment fit the minimum worker pods (the head takes none)."""
    service = one(RAYSERVICE, "RayService")
    (group,) = cluster_spec(service)["workerGroupSpecs"]
    resources = group["template"]["spec"]["containers"][0]["resources"]["requests"]
    gpus = group["minReplicas"] * int(resources["nvidia.com/gpu"])
    cpus = group["minReplicas"] * quantity(resources["cpu"])
    need_gpu = need_cpu = 0.0
    for dep in serve_config()["applications"][0]["deployments"]:
        replicas = dep.get("autoscaling_config", {}).get("min_replicas", dep.get("num_replicas", 1))
        need_gpu += replicas * dep["ray_actor_options"].get("num_gpus", 0)
        need_cpu += replicas * dep["ray_actor_options"].get("num_cpus", 1)
    # fractional GPUs do not split across cards: round each card's share up
    assert math.ceil(need_gpu) <= gpus
    assert need_cpu <= cpus


# -- RayJobs ----------------------------------------------------------------------------------------
def entrypoint_command(path: Path) -> tuple[str, list[str]]:
    """(working directory, organseg argv) of a RayJob entrypoint ``cd DIR && organseg ...``."""
    entrypoint = one(path, "RayJob")["spec"]["entrypoint"]
    steps = [shlex.split(s) for s in entrypoint.split("&&")]
    assert len(steps) == 2, entrypoint
    assert steps[0][0] == "cd", entrypoint
    return steps[0][1], steps[1]


def image_workdir() -> str:
    return re.findall(r"^WORKDIR (\S+)", DOCKERFILE.read_text(), re.M)[-1]


@pytest.mark.parametrize("command", sorted(JOBS))
def test_rayjob_entrypoint_is_a_valid_organseg_command(command: str) -> None:
    workdir, argv = entrypoint_command(JOBS[command])
    assert workdir == image_workdir(), "entrypoint runs from the image's project folder"
    assert argv[:2] == ["organseg", command]
    help_text = subprocess.run(
        [sys.executable, "-m", "organseg.cli", command, "--help"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    options = [a.split("=")[0] for a in argv[2:] if a.startswith("-")]
    for option in options:
        assert re.search(rf"{re.escape(option)}\b", help_text), (
            f"organseg {command} has no {option}"
        )
    if command not in CONFIG_JOBS:
        return
    (config_path,) = [a for a in argv[2:] if a.endswith(".yaml")]
    assert (ROOT / config_path).is_file(), f"{config_path} is not in the repository"
    config = load_config(ROOT / config_path)
    if command == "tune":
        assert config.tune is not None


def test_rayjobs_tear_down_and_use_shared_storage() -> None:
    image_links = dict(re.findall(r"ln -sfn (/mnt/\w+) \S+/(\w+)", DOCKERFILE.read_text()))
    links = {name: target for target, name in image_links.items()}
    assert links == {"data": "/mnt/data", "runs": "/mnt/runs"}
    for command, path in JOBS.items():
        job = one(path, "RayJob")
        assert job["spec"]["shutdownAfterJobFinishes"] is True
        mounts = {m["mountPath"] for c in containers(job) for m in c.get("volumeMounts", [])}
        assert {"/mnt/data", "/mnt/runs"} <= mounts
        if command not in CONFIG_JOBS:
            continue
        _, argv = entrypoint_command(path)
        (config_path,) = [a for a in argv if a.endswith(".yaml")]
        raw = yaml.safe_load((ROOT / config_path).read_text())
        # relative to the image's project folder, where `runs` and `data` are the shared volumes
        assert raw["storage_path"].split("/")[0] in links
        dataset = os.path.normpath(Path(config_path).parent / raw["dataset"]["path"])
        assert Path(dataset).parts[0] in links, f"{dataset} is not on a shared volume"


def test_train_job_writes_the_model_the_service_serves() -> None:
    _, argv = entrypoint_command(JOBS["train"])
    output = argv[argv.index("--output") + 1]
    assert output == serve_config()["applications"][0]["args"]["model_dir"]
    job = one(JOBS["train"], "RayJob")
    mounts = [m for c in containers(job) for m in c.get("volumeMounts", [])]
    assert any(output.startswith(m["mountPath"] + "/") and not m.get("readOnly") for m in mounts)


def test_batch_job_reads_archive_and_model_and_writes_shared_storage() -> None:
    """Input on the data volume, the model on the models volume, results on the (writable) runs
    volume, every one mounted on every pod; one predicting actor per worker GPU."""
    _, argv = entrypoint_command(JOBS["batch"])
    archive, output = argv[2], argv[argv.index("--output") + 1]
    model = argv[argv.index("--model") + 1]
    assert model == serve_config()["applications"][0]["args"]["model_dir"]
    job = one(JOBS["batch"], "RayJob")
    for group in pod_groups(job):
        mounts = [m for c in group["template"]["spec"]["containers"] for m in c["volumeMounts"]]
        under = {
            p: [m for m in mounts if p.startswith(m["mountPath"] + "/")]
            for p in (archive, output, model)
        }
        assert all(under.values()), under
        assert not under[output][0].get("readOnly"), "results are written to shared storage"
    (group,) = cluster_spec(job)["workerGroupSpecs"]
    gpus = int(
        group["template"]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"]
    )
    share = float(argv[argv.index("--gpus-per-worker") + 1])
    assert int(argv[argv.index("--workers") + 1]) == group["minReplicas"] * int(gpus / share)


@pytest.mark.parametrize("command", CONFIG_JOBS)
def test_rayjob_workers_hold_the_members(command: str) -> None:
    job = one(JOBS[command], "RayJob")
    _, argv = entrypoint_command(JOBS[command])
    (config_path,) = [a for a in argv if a.endswith(".yaml")]
    config = load_config(ROOT / config_path)
    (group,) = cluster_spec(job)["workerGroupSpecs"]
    requests = group["template"]["spec"]["containers"][0]["resources"]["requests"]
    gpus_per_pod, cpus_per_pod = int(requests["nvidia.com/gpu"]), quantity(requests["cpu"])
    if command == "train":
        members = config.members
    else:  # concurrent trials of the most demanding member
        assert config.tune is not None
        heaviest = max(config.members, key=lambda m: (m.gpu_fraction, m.cpus_per_worker))
        members = [heaviest] * config.tune.max_concurrent_trials
    # pack members onto pods first-fit by GPU share, then check CPUs per pod
    pods: list[list[float]] = []
    for m in sorted(members, key=lambda m: -m.gpu_fraction * m.num_workers):
        for _ in range(m.num_workers):
            for pod in pods:
                if (
                    pod[0] + m.gpu_fraction <= gpus_per_pod
                    and pod[1] + m.cpus_per_worker <= cpus_per_pod
                ):
                    pod[0] += m.gpu_fraction
                    pod[1] += m.cpus_per_worker
                    break
            else:
                pods.append([m.gpu_fraction, m.cpus_per_worker])
    assert len(pods) <= group["minReplicas"], (
        f"{len(pods)} GPU pods needed, {group['minReplicas']} provided"
    )


# -- Dockerfile -------------------------------------------------------------------------------------
def test_dockerfile_builds_on_the_matching_ray_image() -> None:
    text = DOCKERFILE.read_text()
    args = dockerfile_args()
    assert args["RAY_VERSION"] == ray.__version__
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_VERSION\}-\$\{PYTHON_TAG\}-gpu$", text, re.M)
    assert re.fullmatch(r"py3\d+", args["PYTHON_TAG"])
    assert "download.pytorch.org/whl/" in text, "CUDA build of torch"
    lock = ROOT / "requirements" / "lock.txt"
    assert "pip install --require-hashes --no-deps -r requirements/lock.txt" in text
    assert args["PYTHON_TAG"] == "py311", "the lock is resolved for CPython 3.11 (scripts/lock.sh)"
    assert f"ray=={ray.__version__} " in lock.read_text(), "the lock pins the image's Ray"
    assert re.search(r"pip install --no-deps --no-build-isolation \.;", text), (
        "organseg is installed from the build context"
    )
    assert (DOCKERFILE.parent / "Dockerfile.dockerignore").is_file()


def rewrite_rayservice() -> None:
    """Replace the RayService's serveConfigV2 block with deploy/serve/gpu.yaml (less its header comment)."""
    lines = GPU_PROFILE.read_text().splitlines()
    while lines and lines[0].startswith("#"):
        lines.pop(0)
    block = "\n".join(f"    {line}" if line else "" for line in lines)
    text = RAYSERVICE.read_text()
    pattern = re.compile(r"(^  serveConfigV2: \|\n)((?:    .*\n|\n)+)", re.M)
    assert pattern.search(text), "serveConfigV2 block not found"
    RAYSERVICE.write_text(pattern.sub(lambda m: m.group(1) + block + "\n", text, count=1))


if __name__ == "__main__":
    rewrite_rayservice()
    print(f"embedded {GPU_PROFILE.name} in {RAYSERVICE}", file=sys.stderr)
