"""Launching more jobs into an existing sweep directory: the job-folder numbering of detector/sweeps.py, on a real
Hydra multirun of a trivial app (no training)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from detector.sweeps import launch_records

ROOT = Path(__file__).resolve().parents[2]


APP = '''
import os
from pathlib import Path

import hydra


@hydra.main(version_base="1.3", config_path="conf", config_name="app")
def main(cfg):
    from hydra.core.hydra_config import HydraConfig

    (Path(HydraConfig.get().runtime.output_dir) / "done.txt").write_text(f"{cfg.x}")


if __name__ == "__main__":
    main()
'''


def test_a_second_launch_into_a_sweep_dir_continues_the_job_numbers(tmp_path):
    """configs/hydra/default.yaml with its callback, on a trivial Hydra app: the first launch is numbered as Hydra
    does (0, 1), a second one into the same directory after it (2, 3, 4), and the first grid stays on record."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.yaml").write_text(
        f"defaults:\n  - hydra: default\n  - _self_\nhydra:\n  searchpath: ['file://{ROOT / 'configs'}']\n"
        f"task_name: app\npaths:\n  log_dir: {tmp_path / 'logs'}\nx: 0\n")
    (tmp_path / "app.py").write_text(APP)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def launch(*overrides: str) -> None:
        result = subprocess.run([sys.executable, "app.py", "-m", *overrides], check=False, capture_output=True,
                                text=True, cwd=tmp_path, timeout=120, env=env)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]

    sweep = tmp_path / "sweep"
    launch("x=1,2", f"hydra.sweep.dir={sweep}")
    launch("x=3,4,5", f"hydra.sweep.dir={sweep}")
    assert {p.name: (p / "done.txt").read_text() for p in sweep.iterdir() if p.name.isdigit()} == {
        "0": "1", "1": "2", "2": "3", "3": "4", "4": "5"}
    assert [p.name for p in launch_records(sweep)] == ["multirun.0.yaml", "multirun.yaml"]
    assert "- x=1,2" in (sweep / "multirun.0.yaml").read_text() and "- x=3,4,5" in (sweep / "multirun.yaml").read_text()
    assert "hydra.sweep.subdir=${offset_job_num:2}" in (sweep / "2" / ".hydra" / "hydra.yaml").read_text()
    # an explicit subdir is the user's choice: left alone
    launch("x=6", f"hydra.sweep.dir={sweep}", "hydra.sweep.subdir=extra")
    assert (sweep / "extra" / "done.txt").read_text() == "6" and not (sweep / "5").exists()
