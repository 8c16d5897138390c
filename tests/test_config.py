"""Typed configuration: the TOML defaults, command-line overrides and their refusals."""

import pytest

from pdac.config import load_config, parse_overrides
from pdac.errors import UsageError


def test_defaults_come_from_the_toml_and_stage2_tta_follows_the_device():
    config = load_config()
    assert config.stage1.spacing_mm == (4.5, 4.5, 9.0)
    assert config.crop.margins_mm == (100.0, 50.0, 15.0)
    assert config.stage2.tta == "auto"
    assert config.stage2.mirroring_on("cuda") is True
    assert config.stage2.mirroring_on("cpu") is False
    assert config.stage1.mirroring_on("cuda") is False  # stage 1: tta = false in the TOML


@pytest.mark.parametrize(("text", "expected"), [("true", True), ("False", False), ("auto", "auto")])
def test_tta_override_accepts_true_false_and_auto(text, expected):
    config = load_config(overrides=parse_overrides([f"stage2.tta={text}"]))
    assert config.stage2.tta == expected
    assert config.stage2.mirroring_on("cpu") is (expected is True)


def test_overrides_are_typed():
    config = load_config(overrides=parse_overrides(["stage2.folds=[0, 2]", "detection.dynamic_threshold_factor=3",
                                                    "crop.margins_mm=[10, 20, 30]"]))
    assert config.stage2.folds == (0, 2)
    assert config.detection.dynamic_threshold_factor == 3.0
    assert config.crop.margins_mm == (10.0, 20.0, 30.0)


@pytest.mark.parametrize("item", ["stage2.tta=sometimes", "stage2.folds=[0.5]", "crop.margins_mm=[1, 2]",
                                  "stage9.tta=true", "stage2.nope=1", "detection.min_voxels_detection=1.5",
                                  "stage2tta=true"])
def test_bad_overrides_are_refused_with_a_usage_error(item):
    with pytest.raises(UsageError):
        load_config(overrides=parse_overrides([item]))


def test_the_committed_toml_states_exactly_the_built_in_defaults():
    """One source of defaults: resources/pipeline.toml (the file users edit) must equal the dataclasses that
    ship in the package, so a wheel installed outside the repo behaves like a checkout."""
    import tomllib

    from pdac.config import DEFAULT_CONFIG, PipelineConfig, _apply

    with open(DEFAULT_CONFIG, "rb") as f:
        toml = tomllib.load(f)
    assert _apply(PipelineConfig(), toml) == PipelineConfig()
    defaults = PipelineConfig().to_dict()
    missing = {f"{s}.{k}" for s, v in defaults.items() for k in v if k not in toml.get(s, {})}
    assert not missing, f"keys not stated in {DEFAULT_CONFIG.name}: {sorted(missing)}"


def test_pdac_config_env_selects_another_file_and_a_missing_one_is_refused(tmp_path, monkeypatch):
    custom = tmp_path / "custom.toml"
    custom.write_text("[detection]\ndynamic_threshold_factor = 15\n")
    monkeypatch.setenv("PDAC_CONFIG", str(custom))
    assert load_config().detection.dynamic_threshold_factor == 15.0
    monkeypatch.setenv("PDAC_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(UsageError):
        load_config()
