"""Pack what a bare GPU machine lacks for benchmarks/gpu_suite.sh, complete by construction.

The GPU machine has Python 3.12, torch with CUDA and a list of packages (``../shared/device-packages.md``,
copied into ``scripts/gpu_bundle.json``), but no network, no Ray, SimpleITK, MONAI or pydicom, and at
most 64 MiB travel with a command. So:

1. **What the suite needs** is computed, not listed by hand: a fresh interpreter imports the suite's entry
   modules (the Serve graph and the processes Serve starts, the clients, the gRPC stubs, training, the
   synthetic data writer, the benchmarks themselves); every distribution that a loaded module belongs to
   (``importlib.metadata.packages_distributions``) and, recursively, their declared requirements are the
   closure.
2. **The check**: every distribution of the closure is in the bundle (``scripts/gpu_bundle.json``, pinned)
   or on the machine (at a version that meets every requirement met here, the committed stubs' grpcio
   and protobuf included) or named optional with the reason; anything else fails here, naming it.
3. **The bundle**: the pinned wheels for the target interpreter (cp312 manylinux x86_64 by default;
   cp311 for the rehearsal on this machine, same versions), unpacked, stripped of what no code path
   loads (Ray's jars, RLlib, the LLM library, source maps, test folders) and of debug symbols, packed
   with xz. What the machine has stays out. SimpleITK alone is a 270 MB library, so it is a part of its
   own: both parts together (about 55 MiB) travel in one call; should they outgrow the cap, each part
   still fits one and they travel in two calls back to back (see benchmarks/gpu_suite.sh).

    python scripts/gpu_bundle.py --check                  # the closure against the manifest; no network
    python scripts/gpu_bundle.py                          # check, download, strip, pack (cp312)
    python scripts/gpu_bundle.py --python-version 3.11 --stand-ins --out .gpu-bundle/cp311
                                                          # the rehearsal's variant, plus wheels standing
                                                          # in for the machine's own packages
    python scripts/gpu_bundle.py --update-manifest        # pin what the closure needs now (review it)

grpcio: the committed stubs need grpcio >= the version that generated them (``GRPC_GENERATED_VERSION``
in ``segmentation_pb2_grpc.py``) and the machine has an older one, so grpcio and grpcio-reflection travel
at the versions tested here and come first on ``PYTHONPATH`` there. That is the same code path as every
test run here; regenerating stubs there or loosening the generated check would run code tested nowhere.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
MANIFEST = Path(__file__).with_suffix(".json")
MACHINE_NOTES = REPO.parent / "shared" / "device-packages.md"
OUT = REPO / ".gpu-bundle"
STUBS = REPO / "platform" / "organseg" / "serve" / "proto"

#: What the suite runs: its sections' entry modules. Serve's controller, proxy and replicas run in
#: processes Ray starts; their modules are imported here so that what they load is counted too.
ENTRY_MODULES = {
    "serve": [
        "organseg.serve.app",
        "organseg.serve.deployments",
        "organseg.serve.runner",
        "organseg.serve.client",
        "organseg.serve.proto.segmentation_pb2_grpc",
        "organseg.ensemble.predictor",
        "organseg.models.smp_members",  # the CT members' encoders and decoders, imported when built
        "segmentation_models_pytorch",
        "ray.serve",
        "ray.serve._private.controller",
        "ray.serve._private.proxy",
        "ray.serve._private.replica",
        "ray._private.workers.default_worker",
        "serve_bench",
    ],
    "train": [
        "organseg.train.core",
        "organseg.train.data",
        "organseg.synth",
        "segmentation_models_pytorch.losses",
        "train_bench",
    ],
    "table": ["gpu_table"],
    "batch": ["organseg.batch.pipeline", "organseg.batch.run", "ray.data", "batch_bench"],
}
#: Never bundled: the machine's CUDA stack (a CPU wheel from here would shadow it) and organseg itself.
NEVER = re.compile(r"^(torch|torchvision|torchaudio|triton|nvidia-.*|cuda-.*|organseg)$")
#: Removed after unpacking: nothing the suite runs loads them.
STRIP = [
    "ray/jars",
    "ray/rllib",
    "ray/llm",
    "ray/dashboard/client/build/static/js/*.map",
    "**/tests",
]


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


# -- the closure ------------------------------------------------------------------------------------
_PROBE = r"""
import importlib, json, os, re, sys
from importlib import metadata
from packaging.requirements import Requirement

modules, optional = json.loads(sys.argv[1])
skip = {"organseg"}
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
importer = {}


class Tracer:  # who first imports each top-level module (for the report only)
    def find_spec(self, name, path=None, target=None):
        if "." not in name and name not in importer:
            frame = sys._getframe(1)
            while frame and frame.f_globals.get("__name__", "").startswith("importlib"):
                frame = frame.f_back
            importer[name] = frame.f_globals.get("__name__", "?") if frame else "?"
        return None


class Absent:  # optional packages are not there: imported, they fail as on the machine
    def __init__(self, tops):
        self.tops = tops

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.tops:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


owners = metadata.packages_distributions()
optional = {norm(n) for n in optional}
sys.meta_path[:0] = [Absent({t for t, ds in owners.items() if {norm(d) for d in ds} <= optional}), Tracer()]
failed = {}
for name in modules:
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"[:200]
files = {}  # a namespace package ("google") spans distributions: map each module by its own file
for dist in metadata.distributions():
    for f in dist.files or []:
        if f.suffix in (".py", ".so", ".pyd") or ".so" in f.name:
            files[os.path.realpath(dist.locate_file(f))] = norm(dist.metadata["Name"])
why = {}
for name, module in sorted(sys.modules.items()):
    path = getattr(module, "__file__", None)
    dist = files.get(os.path.realpath(path)) if path else None
    if dist:
        top = name.partition(".")[0]
        why.setdefault(dist, f"{top} imported by {importer.get(top, '?')}")
queue = [(Requirement(name), reason) for name, reason in why.items()]
versions, edges, absent = {}, [], []
while queue:
    req, reason = queue.pop()
    name = norm(req.name)
    try:
        dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
        absent.append([name, reason])
        continue
    if name in optional:
        continue
    edges.append([name, str(req.specifier), reason])
    if name in versions:
        continue
    versions[name] = dist.version
    why.setdefault(name, reason)
    if name in skip:
        continue
    for line in dist.requires or []:
        sub = Requirement(line)
        if sub.marker and not any(sub.marker.evaluate({"extra": e}) for e in (req.extras or {""})):
            continue
        queue.append((sub, "required by " + name))
print(json.dumps({"versions": versions, "why": why, "edges": edges, "absent": absent,
                  "failed": failed}))
"""


def closure(python: str = sys.executable, optional: set[str] | None = None) -> dict[str, Any]:
    """What the suite's entry modules load in a fresh ``python``: distributions, their versions and why.

    ``optional``: distributions the machine lacks and the suite runs without (optional imports of the
    libraries it uses): the probe runs as if they were not installed. organseg's own requirements are
    not followed (they are the whole product's; the suite's imports are what counts).
    """
    modules = [m for group in ENTRY_MODULES.values() for m in group]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "platform"), str(REPO / "benchmarks")])
    done = subprocess.run(
        [python, "-c", _PROBE, json.dumps([modules, sorted(optional or ())])],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"could not compute the import closure:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def stub_requirements() -> list[tuple[str, str, str]]:
    """The runtime versions the committed gRPC and protobuf stubs demand, as requirements."""
    grpc_text = (STUBS / "segmentation_pb2_grpc.py").read_text()
    pb_text = (STUBS / "segmentation_pb2.py").read_text()
    out = []
    found = re.search(r"GRPC_GENERATED_VERSION = '([\d.]+)'", grpc_text)
    if found:
        out.append(("grpcio", f">={found.group(1)}", "the committed gRPC stubs"))
    found = re.search(r"PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+)", pb_text)
    if found:
        major, minor, patch = found.groups()
        spec = f">={major}.{minor}.{patch},<{int(major) + 1}"
        out.append(("protobuf", spec, "the committed protobuf stubs"))
    return out


# -- the machine and the manifest -------------------------------------------------------------------
def parse_machine_notes(text: str) -> dict[str, Any]:
    """The machine's package names (the comma list after "package names") and the versions the notes
    give in prose ("grpcio 1.84.0")."""
    _, _, listing = text.partition("package names")
    listing = listing.split(":", 1)[1] if ":" in listing else listing
    names = sorted(
        {normalize(n) for n in re.findall(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?", listing)}
    )
    versions = {}
    for name, version in re.findall(r"([A-Za-z][A-Za-z0-9_-]*) (\d+\.\d+(?:\.\d+)?)\b", text):
        if normalize(name) in names:
            versions[normalize(name)] = version
    return {"names": names, "versions": versions}


def load_manifest(path: Path = MANIFEST) -> dict[str, Any]:
    return json.loads(path.read_text())


def needed(found: dict[str, Any], manifest: dict[str, Any]) -> set[str]:
    """Distributions the suite needs there: those it imports, and what the ones that do not come with
    the machine require (the machine's own packages come with their requirements)."""
    machine = set(manifest["machine"]["names"])
    out = {n for n, why in found["why"].items() if not why.startswith("required by ")}
    grew = True
    while grew:
        extra = {
            name
            for name, _, reason in found["edges"]
            if reason.startswith("required by ")
            and reason.split()[-1] in out
            and reason.split()[-1] not in machine
        }
        grew = not extra <= out
        out |= extra
    return out & set(found["versions"])


def check(found: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    """Every problem that would stop the suite on the machine, each naming the package; [] if none."""
    bundle = {normalize(k): v for k, v in manifest["bundle"].items()}
    optional = {normalize(k) for k in manifest.get("optional", {})}
    machine = set(manifest["machine"]["names"])
    machine_versions = manifest["machine"]["versions"]
    problems = [f"{m} does not import here: {e}" for m, e in found.get("failed", {}).items()]
    for name in sorted(needed(found, manifest)):
        if name in bundle or name in optional or name == "organseg":
            continue
        if name not in machine:
            problems.append(
                f"{name} {found['versions'][name]} ({found['why'].get(name, '?')}): neither in the "
                "bundle nor on the GPU machine; add it to scripts/gpu_bundle.json"
            )
    for name, version in sorted(bundle.items()):
        here = found["versions"].get(name)
        if here is not None and here != version:
            problems.append(f"{name}: bundle pins {version}, the suite is tested here with {here}")
    from packaging.specifiers import SpecifierSet

    edges = [tuple(e) for e in found["edges"]] + stub_requirements()
    for name, spec, reason in edges:
        if not spec or name in optional:
            continue
        if (
            NEVER.match(name)
            and reason.startswith("required by ")
            and NEVER.match(reason.split()[-1])
        ):
            continue  # the machine's torch stack is consistent in itself
        requirer = reason.split()[-1] if reason.startswith("required by ") else ""
        if requirer in machine and requirer not in bundle:
            continue  # there, the machine's own version of it, with its own requirements, is used
        where, version = (
            ("the bundle", bundle[name]) if name in bundle else ("the GPU machine", None)
        )
        if version is None:
            version = machine_versions.get(name)
        if version and not SpecifierSet(spec).contains(version, prereleases=True):
            problems.append(f"{name}{spec} ({reason}): {where} has {version}")
    return sorted(set(problems))


def update_manifest(found: dict[str, Any], manifest: dict[str, Any]) -> dict[str, Any]:
    """Pin in the bundle everything the closure needs that the machine lacks or has too old."""
    from packaging.specifiers import SpecifierSet

    optional = {normalize(k) for k in manifest.get("optional", {})}
    machine = set(manifest["machine"]["names"])
    versions = manifest["machine"]["versions"]
    bundle = {}
    for name in needed(found, manifest):
        version = found["versions"][name]
        if NEVER.match(name) or name in optional:
            continue
        too_old = any(
            n == name and spec and versions.get(n)
            and not SpecifierSet(spec).contains(versions[n], prereleases=True)
            for n, spec, _ in [tuple(e) for e in found["edges"]] + stub_requirements()
        )  # fmt: skip
        if name not in machine or too_old:
            bundle[name] = version
    return {**manifest, "bundle": dict(sorted(bundle.items()))}


# -- the bundle -------------------------------------------------------------------------------------
def _pip_target(python_version: str) -> list[str]:
    abi = "cp" + python_version.replace(".", "")
    platforms = ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_24_x86_64",
                 "manylinux_2_28_x86_64", "any"]  # fmt: skip
    return ["--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
            "--abi", abi, "--abi", "abi3", "--abi", "none",
            *[arg for p in platforms for arg in ("--platform", p)]]  # fmt: skip


def download(pins: dict[str, str], python_version: str, into: Path) -> None:
    specs = [f"{name}=={version}" for name, version in sorted(pins.items())]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               *_pip_target(python_version), "-d", str(into), *specs]  # fmt: skip
    subprocess.run(command, check=True)


def unpack(wheel_dir: Path, site: Path) -> None:
    """Unzip every wheel into ``site``, drop what nothing loads and strip debug symbols (Ray's and
    cc3d's libraries ship them: about 45 MB of the compressed bundle)."""
    for wheel in sorted(wheel_dir.glob("*.whl")):
        with zipfile.ZipFile(wheel) as archive:
            for info in archive.infolist():
                path = archive.extract(info, site)
                mode = info.external_attr >> 16  # zipfile drops it: Ray's gcs_server and raylet
                if mode & 0o111:  # must stay executable
                    os.chmod(path, mode & 0o777)
    for pattern in STRIP:
        for path in site.glob(pattern):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    if shutil.which("strip"):
        for path in site.rglob("*"):
            if path.is_file() and path.stat().st_size > 1 << 20 and _is_elf(path):
                subprocess.run(["strip", "--strip-unneeded", str(path)], check=False)


def _is_elf(path: Path) -> bool:
    with path.open("rb") as stream:
        return stream.read(4) == b"\x7fELF"


def pack(site: Path, names: list[str], target: Path, preset: str = "9e") -> float:
    """``names`` (top-level entries of ``site``) into ``target`` as tar + xz with the x86 filter
    (machine code compresses about 10 % better); MiB written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("xz"):
        tar = subprocess.Popen(["tar", "cf", "-", "-C", str(site), *names], stdout=subprocess.PIPE)
        with target.open("wb") as out:
            subprocess.run(["xz", "--x86", f"--lzma2=preset={preset}", "-T0", "-c"], stdin=tar.stdout,
                           stdout=out, check=True)  # fmt: skip
        if tar.wait() != 0:
            raise RuntimeError(f"tar failed on {site}")
    else:
        import lzma

        level = int(preset[0]) | (lzma.PRESET_EXTREME if preset.endswith("e") else 0)
        filters = [{"id": lzma.FILTER_X86}, {"id": lzma.FILTER_LZMA2, "preset": level}]
        with (
            lzma.open(target, "wb", filters=filters) as stream,
            tarfile.open(fileobj=stream, mode="w") as tar_file,
        ):
            for name in names:
                tar_file.add(site / name, arcname=name)
    return target.stat().st_size / 2**20


def parts_of(site: Path, manifest: dict[str, Any]) -> dict[str, list[str]]:
    """The bundle's parts: SimpleITK on its own (it alone is about 35 MiB packed), the rest together."""
    separate = {normalize(k): v for k, v in manifest["parts"].items()}
    out: dict[str, list[str]] = {part: [] for part in [*separate.values(), "main"]}
    for entry in sorted(p.name for p in site.iterdir()):
        owner = normalize(re.split(r"-\d", entry)[0]) if entry.endswith(".dist-info") else None
        part = separate.get(owner or "")
        if part is None:
            part = next((p for n, p in separate.items() if normalize(entry) == n or
                         entry.lower() == n.replace("-", "")), "main")  # fmt: skip
        out[part].append(entry)
    return out


def stand_ins(found: dict[str, Any], manifest: dict[str, Any]) -> dict[str, str]:
    """The machine's own packages the suite needs (and what their versions here require), at the
    versions here: the rehearsal installs them from wheels (the torch stack excepted: this machine's
    torch stands in for the machine's)."""
    bundle = {normalize(k) for k in manifest["bundle"]}
    optional = {normalize(k) for k in manifest.get("optional", {})}
    return {
        name: version
        for name, version in found["versions"].items()
        if name not in bundle and name not in optional and not NEVER.match(name)
    }


def link_torch(into: Path) -> list[str]:
    """Link this interpreter's torch stack (torch, torchvision, triton, nvidia-*, cuda-*) into ``into``:
    the rehearsal's stand-in for the GPU machine's own torch, without copying gigabytes."""
    from importlib import metadata

    into.mkdir(parents=True, exist_ok=True)
    linked = []
    for dist in metadata.distributions():
        name = normalize(dist.metadata["Name"])
        if not NEVER.match(name) or name == "organseg":
            continue
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            source, target = Path(dist.locate_file(top)), into / top
            if source.exists() and not target.exists() and top != "__pycache__":
                target.symlink_to(source)
        linked.append(f"{name}=={dist.version}")
    return linked


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only the completeness check")
    parser.add_argument("--update-manifest", action="store_true", help="re-pin the bundle")
    parser.add_argument("--machine-notes", type=Path, default=MACHINE_NOTES)
    parser.add_argument("--python-version", default="3.12", help="the target interpreter")
    parser.add_argument("--stand-ins", action="store_true", help="also the machine's own packages")
    parser.add_argument("--out", type=Path, default=OUT / "cp312")
    parser.add_argument("--link-torch", type=Path, help="link this torch stack there; nothing else")
    parser.add_argument("--xz-preset", default="9e", help="1 packs fast (the rehearsal's copy)")
    options = parser.parse_args()
    if options.link_torch:
        print("torch stand-in:", ", ".join(link_torch(options.link_torch)))
        return 0
    manifest = load_manifest()
    if options.machine_notes.exists():
        notes = parse_machine_notes(options.machine_notes.read_text())
        if notes != manifest["machine"]:
            print(f"the machine's package list in {options.machine_notes} differs from the manifest's;"
                  " run --update-manifest", file=sys.stderr)  # fmt: skip
    found = closure(optional=set(manifest.get("optional", {})))
    if options.update_manifest:
        if options.machine_notes.exists():
            manifest["machine"] = parse_machine_notes(options.machine_notes.read_text())
        manifest = update_manifest(found, manifest)
        MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"bundle: {', '.join(f'{k}=={v}' for k, v in manifest['bundle'].items())}")
    problems = check(found, manifest)
    needed = len(found["versions"])
    print(f"the suite loads {needed} distributions: {len(manifest['bundle'])} travel in the bundle, "
          f"the rest are on the GPU machine (or optional: {', '.join(manifest.get('optional', {}))})")  # fmt: skip
    if problems:
        print("MISSING on the GPU machine:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    if options.check or options.update_manifest:
        return 0
    cap = manifest["cap_mib"]
    out: Path = options.out
    with tempfile.TemporaryDirectory() as tmp:
        wheel_dir, site = Path(tmp) / "wheels", Path(tmp) / "site"
        download(manifest["bundle"], options.python_version, wheel_dir)
        unpack(wheel_dir, site)
        sizes = {}
        for part, names in parts_of(site, manifest).items():
            sizes[part] = pack(site, names, out / f"{part}.tar.xz", options.xz_preset)
    (out / "bundle.json").write_text(json.dumps(
        {"python": options.python_version, "bundle": manifest["bundle"], "parts_mib": sizes}, indent=2))  # fmt: skip
    for part, size in sizes.items():
        print(f"wrote {out / (part + '.tar.xz')}: {size:.1f} MiB (cap {cap} MiB per call)")
    if options.stand_ins:
        machine_dir = out / "machine"
        shutil.rmtree(machine_dir, ignore_errors=True)
        pins = stand_ins(found, manifest)
        download(pins, options.python_version, machine_dir)
        (out / "machine.txt").write_text("".join(f"{k}=={v}\n" for k, v in sorted(pins.items())))
        print(f"stand-ins for the machine's own packages: {len(pins)} wheels in {machine_dir}")
    if options.python_version == "3.12":  # what travels: recorded for review and the tests
        manifest["packed_mib"] = {part: round(size, 1) for part, size in sizes.items()}
        MANIFEST.write_text(json.dumps(manifest, indent=2) + "\n")
    total = sum(sizes.values())
    print(f"bundle: {total:.1f} MiB in all: " + ("one call carries every part" if total <= cap else
          "over one call: carry the parts in two calls back to back (benchmarks/gpu_suite.sh)"))  # fmt: skip
    over = [p for p, s in sizes.items() if s > cap]
    if over and options.python_version == "3.12":
        print(f"over the {cap} MiB a call carries: {', '.join(over)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
