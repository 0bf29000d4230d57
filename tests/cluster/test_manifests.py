"""The cluster files stay valid and in sync (fast: nothing starts).

* both Serve profiles validate as maas configs and as Ray Serve configs, and serve the same models;
* the KubeRay manifest carries exactly cluster/maas-gpu.yaml as ``serveConfigV2``;
* a profile that listens beyond loopback reads API keys, from a file that every node has (the
  KubeRay pods mount the Secret there; the launcher syncs it);
* the cluster launcher config validates against the schema shipped with Ray;
* every metric the Grafana dashboard queries exists (maas's own, or one that Ray emits).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from maas.config import AppConfig, load_app_config
from maas.deploy import serve_config
from maas.edge.exposure import check_deploy_exposure
from maas.edge.metrics import DEFINITIONS

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
PROFILES = ("maas-cpu.yaml", "maas-gpu.yaml")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}


def _yaml(name: str) -> Any:
    return yaml.safe_load((CLUSTER / name).read_text())


def _gpu() -> AppConfig:
    return load_app_config(CLUSTER / "maas-gpu.yaml")


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_validate_as_maas_and_serve_configs(profile: str) -> None:
    load_app_config(CLUSTER / profile)
    submitted = serve_config(CLUSTER / profile)  # Ray's ServeDeploySchema, as `serve deploy` checks
    assert [app["name"] for app in submitted["applications"]] == ["maas"]


def test_gpu_profile_serves_the_cpu_profiles_models() -> None:
    cpu = load_app_config(CLUSTER / "maas-cpu.yaml")
    assert {(m.name, m.path) for m in _gpu().all_models()} == {(m.name, m.path) for m in cpu.all_models()}


def test_gpu_profile_puts_generators_on_gpus_and_autoscales_everything() -> None:
    config = _gpu()
    for generator in config.generators:
        options = generator.deployment
        assert options.num_gpus == 1 and options.autoscaling is not None
        assert (options.autoscaling.min_replicas, options.autoscaling.max_replicas) == (1, 4)
        assert options.max_ongoing_requests >= generator.max_num_seqs
    assert config.classifier.deployment.num_gpus == 1  # a classifier replica per GPU too
    for part in (config.classifier, config.encoder, config.ner, config.translator, config.tokenizer,
                 config.ingress):
        assert part.deployment.autoscaling is not None
    assert config.encoder.deployment.autoscaling.min_replicas == 0  # scale to zero


def test_kuberay_service_carries_the_gpu_profile_exactly() -> None:
    manifest = _yaml("kuberay-rayservice.yaml")
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayService")
    assert yaml.safe_load(manifest["spec"]["serveConfigV2"]) == _yaml("maas-gpu.yaml")


def test_kuberay_cluster_autoscales_gpu_workers_for_the_generators() -> None:
    cluster = _yaml("kuberay-rayservice.yaml")["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["rayVersion"] == _ray_version()
    gpu_groups = [g for g in cluster["workerGroupSpecs"] if _gpu_limit(g)]
    assert len(gpu_groups) == 1
    group = gpu_groups[0]
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    autoscaling = _gpu().generators[0].deployment.autoscaling
    assert (group["minReplicas"], group["maxReplicas"]) == (autoscaling.min_replicas,
                                                            autoscaling.max_replicas)
    for spec in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        assert all(isinstance(v, str) for v in spec["rayStartParams"].values())


def _gpu_limit(group: dict[str, Any]) -> int:
    containers = group["template"]["spec"]["containers"]
    return sum(int(c["resources"]["limits"].get("nvidia.com/gpu", 0)) for c in containers)


def _ray_version() -> str:
    import ray

    return ray.__version__


def test_launcher_config_validates_against_rays_schema() -> None:
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import validate_config

    config = _yaml("ray-cluster.yaml")
    validate_config(config)  # ray/autoscaler/ray-schema.json plus Ray's own consistency checks
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    gpu_types = [t for t in config["available_node_types"].values() if t["resources"].get("GPU")]
    assert gpu_types and all(t["max_workers"] >= 1 for t in gpu_types)


def test_every_grafana_metric_exists() -> None:
    dashboard = json.loads((CLUSTER / "grafana-dashboard.json").read_text())
    queried = {name for expr in _expressions(dashboard)
               for name in re.findall(r"\b(?:maas|ray|autoscaler)_[a-z0-9_]+", expr)}
    assert any(n.startswith("maas_") for n in queried) and any(n.startswith("ray_serve_") for n in queried)
    unknown = sorted(n for n in queried if not (_is_maas_metric(n) or n in _ray_metric_names()))
    assert not unknown, f"metrics no one emits: {unknown}"


def _expressions(node: Any) -> list[str]:
    """Every PromQL expression (``expr`` and template ``query``/``definition``) in a dashboard."""
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k in ("expr", "definition") and isinstance(v, str)]
        query = node.get("query")
        if isinstance(query, dict) and isinstance(query.get("query"), str):
            found.append(query["query"])
        return found + [e for v in node.values() for e in _expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in _expressions(v)]
    return []


def _is_maas_metric(name: str) -> bool:
    """A series maas exports: a DEFINITIONS name with its Prometheus suffix."""
    for base, (kind, *_rest) in DEFINITIONS.items():
        if any(name == base + suffix for suffix in SUFFIXES[kind]):
            return True
    return False


def _ray_metric_names() -> set[str]:
    """Series Ray emits: those Ray's own dashboards query, and the Serve metrics in Ray's source."""
    import ray

    package = Path(ray.__file__).parent
    names: set[str] = set()
    for source in (package / "dashboard" / "modules" / "metrics" / "dashboards").glob("*.py"):
        names |= set(re.findall(r"\b(?:ray|autoscaler)_[a-z0-9_]+", source.read_text()))
    for source in (package / "serve" / "_private").glob("*.py"):
        for base in re.findall(r"\"(serve_[a-z0-9_]+)\"", source.read_text()):
            names |= {f"ray_{base}{suffix}" for suffix in ("", "_total", "_bucket", "_sum", "_count")}
    return names


def _commented_generator(name: str) -> str:
    """The commented multi-GPU generator example of a cluster file, uncommented."""
    lines = (CLUSTER / name).read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("# - name: qwen"))
    block = []
    for line in lines[start:]:
        if not line.strip().startswith("#"):
            break
        block.append(line.strip()[2:])
    return "\n".join(block)


def test_the_commented_multi_gpu_generator_is_a_valid_config_in_both_files() -> None:
    from maas.config import GeneratorModelConfig

    text = _commented_generator("maas-gpu.yaml")
    assert _commented_generator("kuberay-rayservice.yaml") == text
    config = GeneratorModelConfig.model_validate(yaml.safe_load(text)[0])
    bundles = config.serve_options()["placement_group_bundles"]
    assert config.num_devices == len(bundles) == 2 and all(b["GPU"] == 1 for b in bundles)


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_pass_the_exposure_check_of_maas_deploy(profile: str) -> None:
    check_deploy_exposure(CLUSTER / profile, forced=False)  # 0.0.0.0 only with API keys


def test_every_node_has_the_api_key_file_of_the_gpu_profile() -> None:
    keys = Path(_gpu().ingress.api_keys_file or "")
    assert keys.is_absolute(), "the GPU profile listens on 0.0.0.0: it needs ingress.api_keys_file"
    cluster = _yaml("kuberay-rayservice.yaml")["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        secrets = {v["name"]: v["secret"]["secretName"] for v in pod.get("volumes", []) if "secret" in v}
        for container in pod["containers"]:
            mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
            mount = mounts.get(str(keys.parent))
            assert mount and mount.get("readOnly") and secrets.get(mount["name"]) == "maas-api-keys"
    launcher = _yaml("ray-cluster.yaml")["file_mounts"]
    home = Path("/home/ray")  # the image's user, in both the launcher's and KubeRay's containers
    assert "~/" + str(keys.parent.relative_to(home)) in launcher
