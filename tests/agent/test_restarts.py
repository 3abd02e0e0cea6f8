"""The restart policy's arithmetic and decisions (``agent.restarts``), and the spec
hash that decides whether a container is adopted (``agent.types``)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agent.restarts import Failure, RestartBackoff, RestartTimings, refusal, with_note
from agent.types import DeploySpec, legacy_spec_hash, spec_hash
from shared.engines import EngineConfig

EXITED_3 = Failure("exited", "engine exited with code 3", 3)
EXITED_0 = Failure("exited", "engine exited with code 0", 0)
UNHEALTHY = Failure("unhealthy", "engine failed its health check 3 times in a row")
NOT_STARTED = Failure("failed", "pulling image x failed: not found")


def _config(**keys: object) -> EngineConfig:
    return EngineConfig.from_mapping(keys)


# -- back-off ------------------------------------------------------------------------------


def test_backoff_starts_at_10_s_doubles_and_stops_at_5_min() -> None:
    backoff = RestartBackoff.of(RestartTimings())
    delays = [backoff.next_delay() for _ in range(8)]
    assert delays == [10, 20, 40, 80, 160, 300, 300, 300]


def test_backoff_starts_over_after_a_healthy_run_of_10_min() -> None:
    backoff = RestartBackoff.of(RestartTimings())
    assert [backoff.next_delay(ran_for=5.0) for _ in range(3)] == [10, 20, 40]
    # Ran a little short of ten minutes: still crash-looping.
    assert backoff.next_delay(ran_for=599.0) == 80
    assert backoff.next_delay(ran_for=600.0) == 10
    assert backoff.next_delay(ran_for=None) == 20  # never got healthy: no reset


def test_backoff_of_a_week_of_crashes_stays_at_the_cap() -> None:
    backoff = RestartBackoff(10.0, 300.0, 600.0)
    for _ in range(10_000):
        delay = backoff.next_delay()
    assert delay == 300
    backoff.reset()
    assert backoff.next_delay() == 10


def test_backoff_timings_are_settings() -> None:
    backoff = RestartBackoff.of(RestartTimings(backoff_initial=0.5, backoff_max=1.5))
    assert [backoff.next_delay() for _ in range(4)] == [0.5, 1.0, 1.5, 1.5]


# -- decisions -----------------------------------------------------------------------------


@pytest.mark.parametrize("failure", [EXITED_3, UNHEALTHY, NOT_STARTED])
def test_on_failure_is_the_default_and_restarts_failures(failure: Failure) -> None:
    assert refusal(_config(), 0, failure) is None
    assert refusal(_config(restart_policy="on-failure"), 7, failure) is None


def test_on_failure_leaves_a_clean_exit_alone() -> None:
    why = refusal(_config(), 0, EXITED_0)
    assert why is not None and "code 0" in why and "on-failure" in why


@pytest.mark.parametrize("failure", [EXITED_0, EXITED_3, UNHEALTHY, NOT_STARTED])
def test_always_restarts_any_exit_and_never_none(failure: Failure) -> None:
    assert refusal(_config(restart_policy="always"), 3, failure) is None
    assert refusal(_config(restart_policy="never"), 0, failure) == "restart policy is never"


def test_max_restarts_ends_the_restarts_once_reached() -> None:
    config = _config(max_restarts=2)
    assert refusal(config, 0, EXITED_3) is None
    assert refusal(config, 1, EXITED_3) is None
    assert refusal(config, 2, EXITED_3) == "max_restarts (2) reached"
    assert refusal(_config(max_restarts=0), 0, EXITED_3) == "max_restarts (0) reached"
    assert refusal(_config(), 1_000_000, EXITED_3) is None  # unset: unlimited


def test_the_note_goes_before_the_log_lines() -> None:
    message = "engine exited with code 3; last log lines:\nTraceback\nValueError: boom"
    assert with_note(message, "restart 2 in 20 s") == (
        "engine exited with code 3; restart 2 in 20 s; last log lines:\nTraceback\nValueError: boom"
    )
    assert with_note("engine did not start", "not restarted: restart policy is never") == (
        "engine did not start; not restarted: restart policy is never"
    )


# -- the spec hash -------------------------------------------------------------------------

_SPEC = DeploySpec(
    deployment_id="0b5e7c1e-3f4a-4d2b-9c1e-6a7b8c9d0e1f",
    name="qwen",
    backend="vllm",
    image="vllm/vllm-openai:latest",
    model="Qwen/Qwen2.5-0.5B-Instruct",
    config=EngineConfig.from_mapping(
        {
            "max_model_len": 4096,
            "gpu_memory_utilization": 0.9,
            "env": {"VLLM_LOGGING_LEVEL": "INFO"},
        }
    ),
    host_port=40001,
    gpu_indices=(0, 1),
    env={"HF_HUB_OFFLINE": "1"},
    cluster_id="c-1",
)
# What the agent before instances (commit 2d9bdfa, ``agent/types.py``) labelled the
# container of ``_SPEC`` with, and of ``_SPEC`` with admission keys set.
HASH_BEFORE_INSTANCES = "730e5cfd7d56dda9"
HASH_BEFORE_INSTANCES_ADMISSION = "53fa1fed5dee797a"


def test_a_container_of_the_agent_before_instances_keeps_its_hash() -> None:
    # The migration made each deployment the instance of its own id.
    spec = replace(_SPEC, instance_id=_SPEC.deployment_id)
    assert spec_hash(spec) == HASH_BEFORE_INSTANCES
    assert spec_hash(replace(_SPEC, instance_id="")) == HASH_BEFORE_INSTANCES


def test_the_old_agents_hash_of_admission_keys_is_still_known() -> None:
    spec = replace(
        _SPEC,
        config=EngineConfig.from_mapping(
            {"max_model_len": 4096, "max_parallel": 8, "max_queued": 16}
        ),
        gpu_indices=(0,),
        env={},
        cluster_id="",
    )
    assert legacy_spec_hash(spec) == HASH_BEFORE_INSTANCES_ADMISSION
    assert spec_hash(spec) != HASH_BEFORE_INSTANCES_ADMISSION  # admission no longer hashed


def test_who_runs_it_and_how_often_it_ran_are_not_hashed() -> None:
    base = spec_hash(_SPEC)
    assert spec_hash(replace(_SPEC, instance_id="another-instance")) == base
    assert spec_hash(replace(_SPEC, restarts=12)) == base
    assert spec_hash(replace(_SPEC, cluster_id="c-2")) == base


@pytest.mark.parametrize(
    "serving",
    [
        {"restart_policy": "never"},
        {"max_restarts": 3},
        {"drain_timeout": 5},
        {"reschedule_after": 0},
        {"worker_selector": {"gpu": "a100"}},
        {"max_parallel": 4, "max_queued": 8, "queue_timeout": 2.5},
    ],
)
def test_serving_keys_do_not_change_the_container(serving: dict[str, object]) -> None:
    config = EngineConfig.from_mapping({**_SPEC.config.to_mapping(), **serving})
    assert spec_hash(replace(_SPEC, config=config)) == spec_hash(_SPEC)


def test_what_the_container_runs_is_hashed() -> None:
    base = spec_hash(_SPEC)
    assert spec_hash(replace(_SPEC, model="Qwen/Qwen2.5-1.5B-Instruct")) != base
    assert spec_hash(replace(_SPEC, host_port=40002)) != base
    assert spec_hash(replace(_SPEC, config=_config(max_model_len=8192))) != base
    assert spec_hash(replace(_SPEC, deployment_id="another-deployment")) != base
