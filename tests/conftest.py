import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def particle2d(tmp_path_factory):
    """40 oracle episodes of 2-D particle on disk."""
    from steerlab.data.collect import collect_particle

    path = tmp_path_factory.mktemp("data") / "particle-2d-40.zarr"
    collect_particle(str(path), n_dim=2, episodes=40, seed=0, workers=1, progress=False)
    return path
