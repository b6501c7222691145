"""infra/: the manifests parse and name things that exist (image, entrypoint, spec, Ray version)."""

from __future__ import annotations

import re
import shlex
import tomllib

import pytest
import typer
import yaml

from earmark.cli import app
from earmark.contracts import JobSpec
from paths import REPO

INFRA = REPO / "infra"
DOCKERFILE = (INFRA / "Dockerfile").read_text()
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
IMAGE = f"earmark:{PYPROJECT['project']['version']}"  # the tag the build command gives it


def manifest(name: str) -> dict:
    docs = list(yaml.safe_load_all((INFRA / name).read_text()))
    assert len(docs) == 1 and isinstance(docs[0], dict)
    return docs[0]


def containers(pod_template: dict) -> list[dict]:
    return pod_template["spec"]["containers"]


def all_images(doc) -> list[str]:
    if isinstance(doc, dict):
        found = [doc["image"]] if isinstance(doc.get("image"), str) else []
        return found + [i for v in doc.values() for i in all_images(v)]
    if isinstance(doc, list):
        return [i for v in doc for i in all_images(v)]
    return []


def instructions(kind: str) -> list[str]:
    return [ln.split(None, 1)[1] for ln in DOCKERFILE.splitlines() if ln.startswith(kind + " ")]


def test_dockerfile_base_is_pinned():
    (base,) = instructions("FROM")
    # a patch release and a Debian release, or a digest: never a floating tag
    assert re.fullmatch(r"python:3\.11\.\d+-slim-[a-z]+(@sha256:[0-9a-f]{64})?", base), base


def test_dockerfile_installs_the_project_and_runs_earmark():
    assert "pip install ." in instructions("RUN")
    assert instructions("ENTRYPOINT") == ['["earmark"]']
    assert PYPROJECT["project"]["scripts"]["earmark"] == "earmark.cli:app"


def test_dockerfile_copies_only_what_exists():
    copied = [src for line in instructions("COPY") for src in shlex.split(line)[:-1]]
    assert {"pyproject.toml", "platform", "jobs"} <= set(copied)
    for src in copied:
        assert (REPO / src).exists(), f"infra/Dockerfile copies {src}, which is not in the repo"


def test_readme_builds_the_image_the_manifests_run():
    readme = (INFRA / "README.md").read_text()
    assert f"docker build -f infra/Dockerfile -t {IMAGE} ." in readme
    for name in ("raycluster.yaml", "rayjob.yaml"):
        images = all_images(manifest(name))
        assert images and set(images) == {IMAGE}, (name, images)


def test_raycluster_has_cpu_and_gpu_worker_groups():
    doc = manifest("raycluster.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    ray_pin = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray["))
    assert doc["spec"]["rayVersion"] == ray_pin.split("==")[1]
    containers(doc["spec"]["headGroupSpec"]["template"])
    gpus = {}
    for group in doc["spec"]["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        (c,) = containers(group["template"])
        gpus[group["groupName"]] = c["resources"]["limits"].get("nvidia.com/gpu")
    assert None in gpus.values(), "no CPU-only worker group"
    assert any(g and int(g) >= 1 for g in gpus.values()), "no worker group with nvidia.com/gpu"


def _entrypoint_args(entrypoint: str) -> list[str]:
    words = shlex.split(entrypoint)
    while words and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]):  # leading VAR=value
        words.pop(0)
    assert words[0] == "earmark", entrypoint
    return words[1:]


def test_rayjob_runs_a_job_spec_from_jobs_on_the_raycluster():
    job, rc = manifest("rayjob.yaml"), manifest("raycluster.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == rc["metadata"]["name"]
    args = _entrypoint_args(job["spec"]["entrypoint"])
    # the command line parses with earmark's own CLI (unknown options would fail here)
    command = typer.main.get_command(app)
    run_cmd = command.commands[args[0]]  # type: ignore[attr-defined]
    ctx = run_cmd.make_context(args[0], args[1:])
    spec_path = ctx.params["spec"]
    assert ctx.params["address"] == "auto", "inside a Ray job earmark must join the cluster"
    # the spec is in jobs/, and the image copies jobs/ to /app/jobs
    assert spec_path.parent.as_posix() == "/app/jobs"
    local = REPO / "jobs" / spec_path.name
    assert local.is_file(), f"{spec_path} is not in jobs/"
    spec = JobSpec.from_yaml(local, source=ctx.params["source"], output=ctx.params["out_"])
    assert "://" in spec.output, "a cluster job's output must be storage all nodes share"
    src = ctx.params["source"]
    if src and src.startswith("/app/"):
        assert (REPO / src.removeprefix("/app/")).exists(), src


@pytest.mark.parametrize("name", ["raycluster.yaml", "rayjob.yaml"])
def test_manifests_name_the_app(name):
    assert manifest(name)["metadata"]["labels"]["app.kubernetes.io/name"] == "earmark"


def test_the_image_and_make_install_the_vllm_ray_llm_pins_in_their_own_environment():
    """vLLM's CUDA build is the one Ray's `ray[llm]` extra names, in a venv of its own that
    earmark finds through EARMARK_VLLM_PYTHON; earmark's own dependencies never name vLLM."""
    from importlib.metadata import requires

    (pin,) = [r.split(";")[0].strip() for r in requires("ray") if r.startswith("vllm")]
    script = (REPO / "scripts" / "vllm_env.sh").read_text()
    assert f'VLLM_SPEC="${{VLLM_SPEC:-{pin}}}"' in script  # VLLM_TARGET=cuda
    assert "VLLM_TARGET=cuda bash /tmp/vllm_env.sh /opt/vllm" in DOCKERFILE
    assert "ENV EARMARK_VLLM_PYTHON=/opt/vllm/bin/python" in DOCKERFILE
    deps = PYPROJECT["project"]["dependencies"] + sum(
        PYPROJECT["project"]["optional-dependencies"].values(), []
    )
    assert not [d for d in deps if d.startswith("vllm")]
    assert ".venv-vllm" in (INFRA / "Dockerfile.dockerignore").read_text()
