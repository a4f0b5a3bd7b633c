"""What a TorchServe run is configured with (`deploy.config`), rendered into files without
starting anything: the container's settings from its environment (`deploy.container_config`,
run by the entrypoint), per-run model settings in a copy of the archive, and the failures a
user sees before any process starts."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
import yaml

from deploy import container_config
from deploy.config import MAR_NAME, ServerConfig, read_properties
from deploy.server import ServeError, TorchServe


@pytest.fixture
def store(tmp_path, mar_path) -> Path:
    """A model store holding a copy of the built archive."""
    folder = tmp_path / "store"
    folder.mkdir()
    shutil.copy(mar_path, folder / MAR_NAME)
    return folder


def served_model_config(props: dict[str, str]) -> dict:
    """The model-config.yaml inside the archive a rendered config.properties serves."""
    with zipfile.ZipFile(Path(props["model_store"]) / MAR_NAME) as zf:
        return yaml.safe_load(zf.read("model-config.yaml"))


def test_container_config_takes_capacity_and_addresses_from_the_environment(store, tmp_path):
    env = {
        "LENET_MODEL_STORE": str(store),
        "LENET_BIND": "127.0.0.1",
        "LENET_INFERENCE_PORT": "18080",
        "LENET_MANAGEMENT_PORT": "18081",
        "LENET_WORKERS": "3",
        "LENET_BATCH_SIZE": "8",
        "LENET_MAX_BATCH_DELAY": "2",
    }
    props = read_properties(container_config.config_from_env(env).write(tmp_path / "run"))
    assert props["inference_address"] == "http://127.0.0.1:18080"
    assert props["management_address"] == "http://127.0.0.1:18081"
    assert props["disable_token_authorization"] == "false"
    assert props["enable_model_api"] == "false"
    # The served archive is a per-run copy whose model-config.yaml carries the env's values.
    assert Path(props["model_store"]) != store
    config = served_model_config(props)
    assert (config["minWorkers"], config["maxWorkers"]) == (3, 3)
    assert (config["batchSize"], config["maxBatchDelay"]) == (8, 2)


def test_container_config_without_overrides_serves_the_archive_as_built(store, tmp_path):
    config = container_config.config_from_env({"LENET_MODEL_STORE": str(store)})
    props = read_properties(config.write(tmp_path / "run"))
    assert Path(props["model_store"]) == store.resolve()
    assert props["inference_address"] == "http://0.0.0.0:8080"  # container default: all ifaces


@pytest.mark.parametrize(("name", "value", "why"), [("LENET_WORKERS", "two", "not an integer"),
                                                    ("LENET_BATCH_SIZE", "-1", "must be >= 0")])
def test_container_config_rejects_a_bad_setting_naming_it(name, value, why):
    with pytest.raises(SystemExit, match=f"{name}.*{why}"):
        container_config.config_from_env({name: value})


def test_torch_threads_reach_the_workers_environment_and_model_config(store, tmp_path):
    config = ServerConfig(model_store=store, model_config_overrides={"torch_threads": 2})
    props = read_properties(config.write(tmp_path / "run"))
    assert served_model_config(props)["handler"]["torch_threads"] == 2
    env = config.process_env(tmp_path / "run")
    assert env["LENET_TORCH_THREADS"] == "2" and env["OMP_NUM_THREADS"] == "1"


def test_the_explanation_share_reaches_the_handlers_model_config(store, tmp_path):
    config = ServerConfig(model_store=store, model_config_overrides={"explain_share": 1})
    props = read_properties(config.write(tmp_path / "run"))
    assert served_model_config(props)["handler"]["explain_share"] == 1.0


def test_an_unknown_model_setting_is_refused_with_the_known_ones(store, tmp_path):
    config = ServerConfig(model_store=store, model_config_overrides={"batchsize": 4})
    with pytest.raises(ValueError, match=r"unknown model config override\(s\) \['batchsize'\]"):
        config.write(tmp_path / "run")


def test_missing_archive_fails_before_starting(tmp_path):
    server = TorchServe.private(tmp_path / "run", model_store=tmp_path)
    with pytest.raises(ServeError, match=f"{MAR_NAME} not found"):
        server.start()
    assert server.pid is None, "no process may have been started"
