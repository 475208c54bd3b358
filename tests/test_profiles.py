import dataclasses

import pytest

from depthlib.cli import build_parser, main
from depthlib.errors import ConfigError
from depthlib.profiles import PROFILES, FinetuneConfig, PretrainConfig, TrainConfig, get_profile


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


def test_every_setting_has_a_help_and_the_cli_keeps_todays_flags():
    for settings in (TrainConfig, FinetuneConfig, PretrainConfig):
        for f in dataclasses.fields(settings):
            assert f.metadata.get("help"), f"{settings.__name__}.{f.name} has no help"
    argv = ["finetune", "--workers", "2", "--time-budget", "5", "--micro-batch", "auto"]
    args = build_parser().parse_args([*argv, "--sync-batchnorm", "--label-fraction", "0.1"])
    assert (args.num_workers, args.time_budget_s, args.micro_batch) == (2, 5.0, "auto")
    assert (args.sync_batchnorm, args.label_fraction, args.epochs) == (True, 0.1, None)
    assert build_parser().parse_args(["finetune", "--micro-batch", "4"]).micro_batch == 4
    args = build_parser().parse_args(["pretrain", "--masking", "zero-out", "--n-images", "8"])
    assert (args.masking, args.n_images, args.mask_ratio, args.data) == (
        "zero-out",
        8,
        None,
        "rooms",
    )


def test_job_settings_extend_the_loops_settings():
    assert issubclass(FinetuneConfig, TrainConfig) and issubclass(PretrainConfig, TrainConfig)
    assert get_profile("paper").finetune.warmup_epochs == 0.0
    assert get_profile("cpu").pretrain.weight_decay_end == 0.2
