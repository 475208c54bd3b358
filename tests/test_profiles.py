import pytest

from depthlib.cli import main
from depthlib.errors import ConfigError
from depthlib.profiles import PROFILES, get_profile


def test_profiles_have_the_three_names():
    assert set(PROFILES) == {"quick", "cpu", "paper"}


def test_env_var_selects_profile(monkeypatch):
    monkeypatch.setenv("DEPTHLIB_PROFILE", "paper")
    assert get_profile().name == "paper"
    monkeypatch.delenv("DEPTHLIB_PROFILE")
    assert get_profile().name == "cpu"


def test_unknown_profile_names_the_choices():
    with pytest.raises(ConfigError, match="quick, cpu, paper"):
        get_profile("laptop")


def test_paper_profile_is_the_reports_recipe():
    ft = get_profile("paper").finetune
    assert (ft.epochs, ft.lr, ft.batch_size, ft.encoder) == (15, 1e-4, 32, "resnet34")


def test_quick_profile_is_smaller_than_cpu():
    quick, cpu = get_profile("quick"), get_profile("cpu")
    assert quick.rooms.n < cpu.rooms.n
    assert quick.finetune.height * quick.finetune.width < cpu.finetune.height * cpu.finetune.width


def test_cli_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "COMMAND" in capsys.readouterr().out
