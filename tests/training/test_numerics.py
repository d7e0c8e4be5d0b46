"""The settings that decide a CPU run's float rounding: `cpu_threads` pins torch's thread count (also above the core
count, which OMP_NUM_THREADS is not), and metrics.json/the log name every setting."""

from __future__ import annotations

import pytest
import torch

from detector.training.numerics import NUMERICS_ENV, describe, numerics, set_cpu_threads


@pytest.fixture
def restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("threads", [1, 3, 8])
def test_cpu_threads_sets_torch_intra_op_threads_even_above_the_core_count(threads, restore_threads):
    set_cpu_threads(threads)
    assert torch.get_num_threads() == threads
    assert numerics()["cpu_threads"] == threads


def test_null_keeps_torch_default(restore_threads):
    torch.set_num_threads(2)
    set_cpu_threads(None)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_invalid_thread_counts_are_refused_by_name(bad, restore_threads):
    with pytest.raises(ValueError, match="cpu_threads must be a positive integer"):
        set_cpu_threads(bad)


def test_numerics_names_kernel_set_and_the_environment_variables_that_are_set(monkeypatch):
    for name in NUMERICS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    settings = numerics()
    assert settings["torch"] == torch.__version__
    assert settings["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert settings["environment"] == {"MKL_CBWR": "AVX2"}
    line = describe(settings)
    assert line.startswith(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, ")
    assert line.endswith(" kernels (MKL_CBWR=AVX2)")
    assert describe({**settings, "environment": {}}).endswith(" kernels")
