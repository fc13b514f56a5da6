"""ray_cluster.yaml is a valid Ray 2.60 cluster launcher config, checked offline with Ray's own code.

`ray up` (`_bootstrap_config`) runs `prepare_config` (defaults merged from `ray/autoscaler/aws/defaults.yaml`),
asks EC2 to fill in node resources, then `validate_config`: the JSON schema `ray/autoscaler/ray-schema.json`
(unknown keys and non-integer resources rejected) and the cross-field checks. Here the EC2 step is skipped;
the config does not need it, since every node type states its resources. `AutoscalingConfig` is what the v2
autoscaler (the default for `ray up` since Ray 2.50) reads on the head when it launches workers.
A socket guard makes any network access fail the test.
"""

from __future__ import annotations

import copy
import re
import socket
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.autoscaler.v2.instance_manager.config import AutoscalingConfig

pytestmark = [pytest.mark.ray]

ROOT = Path(__file__).resolve().parents[1]
CONFIG_PATH = ROOT / "ray_cluster.yaml"
GPU_WORKER = "gpu_worker"


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any connection or DNS lookup raises: validation must not reach AWS or anything else."""

    def refuse(*args, **kwargs):
        raise OSError("network access in an offline test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load(CONFIG_PATH.read_text())


@pytest.fixture
def prepared(raw) -> dict:
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def locked_version(name: str) -> str:
    """The exact version constraints.txt (the tested set every install uses) gives `name`."""
    match = re.search(rf"^{re.escape(name)}==(\S+)$", (ROOT / "constraints.txt").read_text(), re.MULTILINE)
    assert match, f"{name} is not pinned with == in constraints.txt"
    return match.group(1)


def fits(request: dict, resources: dict) -> bool:
    return all(resources.get(name, 0) >= amount for name, amount in request.items())


# --- Ray's validator accepts the file and rejects broken copies ---------------------------------------------


def test_ray_validator_accepts_the_config(prepared):
    assert prepared["provider"]["type"] == "aws"


def test_autoscaler_v2_reads_every_node_type(raw):
    """What the head's autoscaler does when it launches a worker: read the docker config, setup commands and
    resources of the node type. Docker config without `image` passes the schema but fails here (KeyError)."""
    config = AutoscalingConfig(copy.deepcopy(raw), skip_content_hash=True)
    types = config.get_node_type_configs()
    assert set(types) == set(raw["available_node_types"])
    assert config.get_head_node_type() == raw["head_node_type"]
    for name in types:
        docker = config.get_docker_config(name)
        assert docker["image"].startswith("rayproject/ray:")
    assert config.get_docker_config(raw["head_node_type"])["image"] == raw["docker"]["head_image"]
    assert config.get_docker_config(GPU_WORKER)["image"] == raw["docker"]["image"]
    assert config.get_worker_setup_commands(GPU_WORKER)[-1] == "cd ~/gatelab && pip install -c constraints.txt -e ."


def test_a_typo_key_is_rejected(raw):
    broken = copy.deepcopy(raw)
    broken["available_node_types"][GPU_WORKER]["min_worker"] = broken["available_node_types"][GPU_WORKER].pop(
        "min_workers"
    )
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        validate_config(prepare_config(broken))


def test_a_fractional_gpu_is_rejected(raw):
    broken = copy.deepcopy(raw)
    broken["available_node_types"][GPU_WORKER]["resources"]["GPU"] = 0.5
    with pytest.raises(jsonschema.ValidationError, match="0.5"):
        validate_config(prepare_config(broken))


def test_a_top_level_typo_is_rejected(raw):
    broken = copy.deepcopy(raw)
    broken["idle_timeout_minute"] = broken.pop("idle_timeout_minutes")
    with pytest.raises(jsonschema.ValidationError, match="idle_timeout_minute"):
        validate_config(prepare_config(broken))


def test_an_unknown_head_node_type_is_rejected(raw):
    broken = copy.deepcopy(raw)
    broken["head_node_type"] = "headnode"
    with pytest.raises(ValueError, match="head_node_type"):
        validate_config(prepare_config(broken))


# --- the cluster's shape ---------------------------------------------------------------------------------------


def test_head_is_a_cpu_node_that_never_scales(raw):
    head = raw["available_node_types"][raw["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"]["CPU"] >= 1  # drivers' tasks and CPU-only smoke grids still schedule here
    assert head["max_workers"] == 0


def test_gpu_workers_autoscale_from_zero(raw, prepared):
    worker = raw["available_node_types"][GPU_WORKER]
    assert worker["resources"]["GPU"] >= 1
    assert worker["min_workers"] == 0
    assert worker["max_workers"] >= 1
    assert worker["max_workers"] <= prepared["max_workers"]
    assert raw["idle_timeout_minutes"] > 0


def test_trials_land_on_gpu_workers_and_drivers_on_the_head(raw):
    """A trial asks for a GPU; a driver-side task asks for the head-only custom resource."""
    types = raw["available_node_types"]
    head = raw["head_node_type"]
    trial = {"CPU": 1, "GPU": 1}
    driver = {"gatelab_driver": 1}
    assert [name for name, t in types.items() if fits(trial, t["resources"])] == [GPU_WORKER]
    assert [name for name, t in types.items() if fits(driver, t["resources"])] == [head]


def test_images_match_the_pinned_ray_release(raw):
    pinned = locked_version("ray")
    assert pinned == ray.__version__
    docker = raw["docker"]
    images = [docker["image"], docker["head_image"]]
    for image in images:
        match = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py3(\d+)-(cpu|gpu|cu\d+)", image)
        assert match, image
        assert match.group(1) == pinned, f"{image} is not Ray {pinned}"
        assert int(match.group(2)) >= 10, "pyproject.toml requires Python >= 3.10"
    assert len({re.search(r"-py3\d+", image).group() for image in images}) == 1, "one Python on every node"
    assert re.search(r"-(gpu|cu\d+)$", docker["image"]), "GPU workers need a CUDA image"


# --- installing gatelab and its grids ------------------------------------------------------------------------


def test_every_node_installs_gatelab_after_the_pinned_torch_build(prepared):
    """torch must be installed before gatelab, or pip would keep PyPI's build and the pinned install would be
    a no-op. The pin must be constraints.txt's, or gatelab's install (which uses it) would replace it."""
    torch_pin = f"torch=={locked_version('torch')}"
    expected_index = {"head_setup_commands": "/whl/cpu", "worker_setup_commands": "/whl/cu"}
    for key, index in expected_index.items():
        commands = prepared[key]  # setup_commands already merged in, in the order Ray runs them
        install = [i for i, c in enumerate(commands) if "pip install -c constraints.txt -e ." in c and "~/gatelab" in c]
        torch = [i for i, c in enumerate(commands) if re.search(r"pip install torch\b", c)]
        assert install, f"{key} does not install gatelab"
        assert len(torch) == 1 and torch[0] < install[0], f"{key}: torch must come before gatelab"
        assert torch_pin in commands[torch[0]].split() and index in commands[torch[0]], commands[torch[0]]


def test_file_mounts_carry_the_checkout_and_its_grids(raw):
    """Every grid under ablations/ reaches ~/gatelab/ablations on the nodes (grids and the variant catalog
    are read from the checkout)."""
    delivered = {}
    for remote, local in raw["file_mounts"].items():
        source = (ROOT / local).resolve()
        if source == ROOT:
            delivered[remote.rstrip("/") + "/ablations"] = ROOT / "ablations"
        elif source == ROOT / "ablations":
            delivered[remote.rstrip("/")] = source
    assert delivered.get("~/gatelab/ablations") == ROOT / "ablations"
    assert list((ROOT / "ablations").glob("*.yaml")), "no grids to mount"
    # The filter must not drop the grids or git metadata (every trial logs the git SHA).
    ignored = (ROOT / ".gitignore").read_text().split()
    assert raw["rsync_filter"] == [".gitignore"]
    assert not any(p.strip("/") in ("ablations", ".git") for p in ignored)
    assert not raw.get("rsync_exclude")


# --- shared storage and security ------------------------------------------------------------------------------


def test_shared_storage_is_mounted_everywhere_and_is_the_gatelab_home(raw):
    init = " ".join(raw["initialization_commands"])
    efs = re.search(r"fs-[\w]+\.efs\.([a-z0-9-]+)\.amazonaws\.com:/ /shared", init)
    assert efs, "EFS is not mounted at /shared"
    assert efs.group(1) == raw["provider"]["region"]
    for zone in raw["provider"]["availability_zone"].split(","):
        assert zone.startswith(raw["provider"]["region"])
    options = raw["docker"]["run_options"]
    assert "--volume /shared:/shared" in options
    assert "--env GATELAB_HOME=/shared/gatelab-runs" in options
    assert raw["provider"]["cache_stopped_nodes"] is False  # a restarted node would skip the mount


def test_token_auth_is_on_with_one_token_on_shared_storage(raw):
    options = raw["docker"]["run_options"]
    assert "--env RAY_AUTH_MODE=token" in options
    token_path = next(o.split("=", 1)[1] for o in options if o.startswith("--env RAY_AUTH_TOKEN_PATH="))
    assert token_path.startswith("/shared/")
    creates = raw["head_setup_commands"][0]
    assert token_path in creates and "umask 077" in creates and "token_hex(32)" in creates


def test_nothing_listens_on_all_interfaces(raw):
    start = raw["head_start_ray_commands"] + raw["worker_start_ray_commands"]
    assert "0.0.0.0" not in " ".join(start + raw["head_setup_commands"] + raw["worker_setup_commands"])
    assert any("--dashboard-host=127.0.0.1" in c for c in raw["head_start_ray_commands"])
    assert any("--autoscaling-config=~/ray_bootstrap_config.yaml" in c for c in raw["head_start_ray_commands"])
    assert any("--address=$RAY_HEAD_IP:6379" in c for c in raw["worker_start_ray_commands"])


def test_no_node_retries_a_trial_killed_for_memory(raw):
    from gatelab.grid.dispatch.ray_jobs import NO_OOM_RETRIES

    options = raw["docker"]["run_options"]
    assert NO_OOM_RETRIES == {"task_oom_retries": 0} and "--env RAY_task_oom_retries=0" in options
