from depthlib.cli import main
from depthlib.profiles import get_profile, rooms_path


def test_reproduce_renders_rooms_and_prints_summary(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DEPTHLIB_DATA", str(tmp_path))
    assert main(["reproduce", "--profile", "quick"]) == 0
    out = capsys.readouterr().out
    path = rooms_path(get_profile("quick").rooms)
    assert path.is_file() and path.parent == tmp_path
    assert "40 images of 48x64" in out
    assert "time per stage" in out
    # second run reuses the cached file
    mtime = path.stat().st_mtime_ns
    assert main(["reproduce", "--profile", "quick"]) == 0
    assert path.stat().st_mtime_ns == mtime


def test_reproduce_unknown_profile_is_a_user_error(capsys):
    assert main(["reproduce", "--profile", "gpu"]) == 2
    assert "Unknown profile 'gpu'" in capsys.readouterr().err
