"""The run folder's own files are written whole or not at all."""

from pathlib import Path

import pytest

from gpo.run_dir import RunDir, _write_atomic


def test_a_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "run.json"
    _write_atomic(target, '{"old": 1}')

    write_text = Path.write_text

    def full_disk(self, content, **kwargs):  # the disk fills up half-way through the write
        write_text(self, content[: len(content) // 2], **kwargs)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(OSError, match="No space"):
        _write_atomic(target, '{"new": 2, "and": "more"}')
    assert target.read_text() == '{"old": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_a_calibration_file_that_is_not_json_is_named(tmp_path):
    run_dir = tmp_path
    (run_dir / "calibration.json").write_text('{"format": 1, "lev')
    with pytest.raises(ValueError, match="calibration.json: not valid JSON.*gpo calibrate"):
        RunDir(run_dir).calibration()
    (run_dir / "calibration.json").write_text('{"format": 99}')
    with pytest.raises(ValueError, match="calibration.json: not a gpo interval calibration"):
        RunDir(run_dir).calibration()
