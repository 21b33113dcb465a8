"""Shared fixtures: compose configs with Hydra's compose API into a temporary project root."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# the test machines have no internet: fail hub look-ups at once instead of retrying for ~25 s
# (read by huggingface_hub/datasets at import, so before anything imports them)
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from hydra import compose, initialize_config_dir

from seqbench.validate import CONF_DIR

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"
if "SEQBENCH_DATA_DIR" not in os.environ and SHARED_DATA.is_dir():
    os.environ["SEQBENCH_DATA_DIR"] = str(SHARED_DATA)
DATA_DIR = Path(os.environ.get("SEQBENCH_DATA_DIR", SHARED_DATA))

#: a tiny but complete LM run: real code paths, a few seconds on 2 cores
TINY = ["data.num_train=400", "data.num_val=60", "data.num_test=60", "model.hidden_size=32",
        "embedding.dim=16", "task.batch_size=8", "task.eval_batch_size=4", "task.bptt=32",
        "task.generate.max_new_tokens=40", "task.generate.num_samples=2", "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false"]


def compose_cfg(overrides=(), root: Path | None = None):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        extra = [f"paths.root={root}"] if root is not None else ["paths.root=/tmp/seqbench-compose"]
        return compose(config_name="config", overrides=[*extra, *overrides])


def tiny_for(overrides) -> list[str]:
    """TINY, without the synthetic corpus' size knobs when another dataset is chosen."""
    other_data = any(o.startswith("data=") and o != "data=synthetic" for o in overrides)
    return [t for t in TINY if not (other_data and t.startswith("data."))]


@pytest.fixture
def make_cfg(tmp_path):
    """``make_cfg(*overrides, tiny=True)`` -> composed config rooted in a temporary folder."""
    def make(*overrides, tiny: bool = True):
        return compose_cfg([*(tiny_for(overrides) if tiny else []), *overrides], root=tmp_path)
    return make


def needs_data(*parts: str):
    path = DATA_DIR.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"corpus not found: {path}")


def cli(*args: str, root: Path, env_extra: dict | None = None, timeout: int = 600):
    """Run ``python -m seqbench`` in a subprocess rooted at ``root``."""
    import subprocess

    env = {**os.environ, "SEQBENCH_ROOT": str(root), **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "seqbench", *args], cwd=root, env=env,
                          capture_output=True, text=True, timeout=timeout)


#: a tiny classification run (counting ones or a real corpus with limited batches)
TINY_CLASSIFY = ["task=classify", "model.hidden_size=16", "task.batch_size=16",
                 "task.eval_batch_size=64", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
                 "num_threads=1"]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors (cells, step-by-step decoding) gain nothing from threads, and on a shared
    2-core box OpenMP's barriers make them several times slower: use as
    ``pytestmark = pytest.mark.usefixtures("one_thread")`` to run a module single-threaded."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


#: a few optimizer steps of each task family through ``seqbench.run.run`` (with ``SMOKE_LIMITS``):
#: what a new cell's "trains in every task it supports" test runs
SMOKE_LIMITS = ["trainer.max_epochs=1", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
                "trainer.limit_test_batches=2", "logger=none", "num_threads=1", "model.hidden_size=16"]
SMOKE_TASKS = {
    "lm": [*TINY],
    "classify": [*TINY_CLASSIFY, "data=counting_ones", "data.num_train=64", "data.num_val=32", "data.num_test=32"],
    "copy": ["task=copy", "data=copy", "data.delay=6", "data.copy_length=4", "data.num_symbols=5",
             "data.num_train=64", "data.num_val=32", "data.num_test=32", "embedding=onehot",
             "trainer.enable_progress_bar=false"],
    "adding": ["task=adding", "data=adding", "data.length=12", "data.num_train=64", "data.num_val=32",
               "data.num_test=32", "trainer.enable_progress_bar=false"],
}
