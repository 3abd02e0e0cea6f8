"""The engine registry, the typed engine config and the status vocabulary."""

from __future__ import annotations

import json
from typing import get_args

import pytest

from controller.schemas import DEPLOYMENT_STATUSES, Backend, DeploymentConfig
from shared.engines import (
    BACKEND_NAMES,
    CONFIG_KEYS,
    ENGINES,
    BackendName,
    EngineConfig,
    engine,
)
from shared.errors import ConfigError
from shared.status import DeploymentStatus, WorkerStatus


def test_every_backend_name_has_one_engine() -> None:
    assert set(get_args(BackendName)) == set(ENGINES) == set(BACKEND_NAMES)
    assert set(get_args(Backend)) == set(ENGINES)
    assert all(facts.name == name for name, facts in ENGINES.items())
    assert engine("").name == "vllm"
    with pytest.raises(ConfigError, match="unknown backend 'tgi'"):
        engine("tgi")


def test_every_flag_is_an_accepted_config_key() -> None:
    for facts in ENGINES.values():
        assert {flag.key for flag in facts.flags} <= CONFIG_KEYS, facts.name
    assert set(DeploymentConfig.model_fields) == CONFIG_KEYS


def test_the_config_round_trips_through_its_mapping() -> None:
    mapping = {"tensor_parallel_size": 2, "gpu_ids": [0, 1], "env": {"A": "1"}, "dtype": "auto"}
    config = EngineConfig.from_mapping(mapping)
    assert config.tensor_parallel_size == 2 and config.gpu_ids == [0, 1]
    assert config.to_mapping() == mapping
    assert EngineConfig.from_mapping(json.loads(json.dumps(config.to_mapping()))) == config
    assert EngineConfig.from_mapping(None) == EngineConfig()
    assert EngineConfig().to_mapping() == {}


def test_unknown_keys_are_dropped_and_bad_values_refused() -> None:
    assert EngineConfig.from_mapping({"max_model_len": 8, "from_the_future": 1}).to_mapping() == {
        "max_model_len": 8
    }
    with pytest.raises(ConfigError, match="gpu_count"):
        EngineConfig.from_mapping({"tensor_parallel_size": 2, "gpu_count": 3})
    with pytest.raises(ConfigError, match="max_model_len"):
        EngineConfig.from_mapping({"max_model_len": "8"})


def test_statuses_are_their_strings() -> None:
    # A member is its value: equal to the bare string (what the database holds).
    running: str = DeploymentStatus.RUNNING
    assert running == "running" and DeploymentStatus("running") is DeploymentStatus.RUNNING
    assert json.dumps({"status": DeploymentStatus.ERROR}) == '{"status": "error"}'
    assert [str(s) for s in WorkerStatus] == ["online", "offline"]
    assert DEPLOYMENT_STATUSES == (
        "pending",
        "downloading",
        "starting",
        "running",
        "stopping",
        "stopped",
        "error",
    )
