"""detector.atomic: a failed write keeps the previous file; temporary files of dead processes are removed, those of
running ones kept."""

import logging
import os
import subprocess
import sys

import pytest

from detector.atomic import atomic_write, remove_stale_temporaries, write_text


def test_a_failed_write_keeps_the_previous_content_and_no_temporary_file(tmp_path):
    path = tmp_path / "metrics.json"
    write_text(path, "old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_write(path) as f:
            f.write("half of the new")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    write_text(path, "new")
    assert path.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_only_the_temporary_files_of_dead_processes_are_removed(tmp_path, caplog):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(finished.stdout)
    (tmp_path / "checkpoints").mkdir()
    stale = [tmp_path / f"metrics.json.tmp{dead}", tmp_path / "checkpoints" / f"best.ckpt.tmp{dead}"]
    kept = [tmp_path / f"last.ckpt.tmp{os.getpid()}", tmp_path / "notes.tmp", tmp_path / "train_images.txt"]
    for path in stale + kept:
        path.write_text("x")
    with caplog.at_level(logging.INFO, logger="detector.atomic"):
        removed = remove_stale_temporaries([tmp_path, tmp_path / "checkpoints", tmp_path / "absent"])
    assert sorted(removed) == sorted(stale)
    assert all(not p.exists() for p in stale) and all(p.exists() for p in kept)
    assert len(caplog.records) == 1 and "removed 2 temporary file(s)" in caplog.records[0].getMessage()
    caplog.clear()
    assert remove_stale_temporaries([tmp_path]) == [] and not caplog.records  # nothing left: no line
