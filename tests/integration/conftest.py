"""Real servers on loopback: one local Ray per session, one SeaweedFS S3 server per session."""

from __future__ import annotations

import pytest

from servers import S3Server

RAY_TEST_CPUS = 4  # logical CPUs: Serve replicas and Data actors share 2 real cores in tests


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray for the whole test session (ray.init costs seconds)."""
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=RAY_TEST_CPUS,
            num_gpus=0,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}},
        )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    server = S3Server(tmp_path_factory.mktemp("seaweedfs"))
    yield server
    server.stop()
