"""detector/cli.py: what the commands make of their arguments before any library function runs (the commands
themselves: tests/scripts/test_console_scripts.py, tests/data/test_doctor.py, tests/diagnostics/)."""

from __future__ import annotations

from detector.cli import _shell_word, path_overrides, sweep_labels
from detector.sweeps import expand_grid

from .conftest import ROOT


def test_sweep_labels_name_a_group_by_its_option_and_a_value_by_its_key():
    rows = expand_grid(["data=shapes", "assigner=tal,atss", "assigner.topk=9,13"])
    assert sweep_labels(rows, ROOT / "configs") == ["tal assigner.topk=9", "tal assigner.topk=13",
                                                    "atss assigner.topk=9", "atss assigner.topk=13"]
    assert sweep_labels(expand_grid(["assigner=tal,tal_small"]), ROOT / "configs") == ["tal", "tal_small"]
    assert sweep_labels(expand_grid(["model=ssd_csp_n"]), ROOT / "configs") == [""]  # one job: no label


def test_a_dataset_path_becomes_data_auto_quoted_for_hydra_and_the_shell(tmp_path):
    plain = tmp_path / "data"
    assert path_overrides(plain) == ["data=auto", f"data.root={plain}"]
    spaced = tmp_path / "my data"
    overrides = path_overrides(spaced)
    assert overrides[1] == f"data.root='{spaced}'"
    assert _shell_word(overrides[1]) == f"\"data.root='{spaced}'\"" and _shell_word("data=auto") == "data=auto"


def test_printing_the_composed_config_imports_no_torch(tmp_path):
    """`python train.py ... --cfg job` only composes: it stays well under a second because torch is not imported."""
    import subprocess
    import sys

    probe = ("import runpy, sys; sys.argv = ['train.py', 'data=auto', 'data.root=/nowhere', '--cfg', 'job']\n"
             "try:\n    runpy.run_path('train.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
             "print('torch imported' if 'torch' in sys.modules else 'no torch')")
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "root: /nowhere" in result.stdout and result.stdout.strip().endswith("no torch")
