"""Issue 30, class 1: every setting (TOML, $PDAC_CONFIG, --set, flags) is validated once against the range
declared beside it in pdac/config.py; a violation is one line naming the setting and its range (exit 2)."""

from __future__ import annotations

import dataclasses
import math

import pytest
import SimpleITK as sitk
from conftest import pdac, process
from hypothesis import given, settings
from hypothesis import strategies as st

from pdac.config import PipelineConfig, Range, load_config, parse_overrides
from pdac.errors import UsageError


def _numeric_settings() -> list[tuple[str, str, Range, bool]]:
    """(section, key, range, is_tuple) of every setting with a declared range."""
    out = []
    for section in dataclasses.fields(PipelineConfig):
        for f in dataclasses.fields(section.default_factory):
            if "range" in f.metadata:
                out.append((section.name, f.name, f.metadata["range"], isinstance(f.default, tuple)))
    return out


NUMERIC = _numeric_settings()


def test_every_numeric_setting_declares_its_range():
    declared = {(s, k) for s, k, _, _ in NUMERIC}
    for section in dataclasses.fields(PipelineConfig):
        for f in dataclasses.fields(section.default_factory):
            value = f.default if f.default is not dataclasses.MISSING else None
            items = value if isinstance(value, tuple) else (value,)
            if any(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
                assert (section.name, f.name) in declared, f"{section.name}.{f.name} has no declared range"


numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**12, 10**12),
                    st.integers(min_value=10**300, max_value=10**400), st.sampled_from([0, -1, 1e-9, 1e308, -1e308]))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(NUMERIC), numbers, st.booleans())
def test_any_number_is_either_inside_the_declared_range_or_refused_in_one_line(spec, value, as_text):
    section, key, allowed, is_tuple = spec
    raw = [value] * 3 if is_tuple and key.endswith("_mm") else [value] if is_tuple else value
    text = repr(raw).replace("nan", "NaN").replace("inf", "Infinity")
    override = {section: {key: text if as_text else raw}}
    try:
        config = load_config(overrides=override)
    except UsageError as e:
        message = str(e)
        assert "\n" not in message and f"{section}.{key}" in message
        return
    got = getattr(getattr(config, section), key)
    items = got if isinstance(got, tuple) else (got,)
    assert all(allowed.holds(v) and (not isinstance(v, float) or math.isfinite(v)) for v in items), (section, key, got)


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_numbers_are_refused_for_every_float_setting(text):
    for section, key, _, is_tuple in NUMERIC:
        value = f"[{text}, 1, 1]" if is_tuple and key.endswith("_mm") else text
        with pytest.raises(UsageError, match=f"{section}.{key}"):
            load_config(overrides=parse_overrides([f"{section}.{key}={value}"]))


@pytest.mark.parametrize("args,setting", [
    (["--set", "stage2.tile_step_size=0"], "tile_step_size = 0.0: allowed [0.25, 1]"),
    (["--step", "0.001"], "tile_step_size = 0.001: allowed [0.25, 1]"),
    (["--set", "detection.num_lesions_to_extract=-1"], "detection.num_lesions_to_extract = -1: allowed [1, 1000]"),
    (["--set", "limits.max_extent_mm=NaN"], "limits.max_extent_mm = nan: allowed [1, 100000]"),
    (["--set", "stage1.spacing_mm=[0, 0, 0]"], "stage1.spacing_mm = [0.0, 0.0, 0.0]: allowed each in [0.1, 50]"),
    (["--threads", "100000"], "runtime.threads = 100000: allowed [0, 1024]"),
    (["--set", "detection.dynamic_threshold_factor=0"], "detection.dynamic_threshold_factor = 0.0: allowed (1, 1000]"),
    (["--set", "plausibility.min_volume_ml=900"], "plausibility.min_volume_ml (900) must not exceed"),
    (["--set", "detection.min_voxels_detection=" + "[" * 5000], "nested more than 64 levels deep"),
])
def test_cli_refuses_out_of_range_settings_in_one_line_with_exit_2(tmp_path, args, setting):
    r = pdac("detect", str(tmp_path / "no-such-scan.mha"), "-o", str(tmp_path / "out"), *args)
    assert r.returncode == 2, r.stderr[-2000:]
    assert setting in r.stderr.strip().splitlines()[-1]
    assert "Traceback" not in r.stderr


def _gc_input(tmp_path):
    image = sitk.Image([8, 8, 8], sitk.sitkInt16)
    folder = tmp_path / "input" / "images" / "venous-ct"
    folder.mkdir(parents=True)
    sitk.WriteImage(image, str(folder / "scan.mha"))
    return tmp_path / "input"


@pytest.mark.parametrize("toml,message", [
    ("[detection]\nnum_lesions_to_extract = -3\n", "detection.num_lesions_to_extract = -3"),
    ("[limits]\nmax_stage2_voxels = 0\n", "limits.max_stage2_voxels = 0"),
    ("[detection]\npancreas_dilation_mm = nan\n", "detection.pancreas_dilation_mm = nan"),
    ("[crop]\nmargins_mm = [inf, 1, 1]\n", "crop.margins_mm = [inf, 1.0, 1.0]"),
    ("[detection]\nmin_voxels_detection = " + "[" * 3000 + "]" * 3000 + "\n", "nested more than 64 levels deep"),
])
def test_process_refuses_a_config_file_out_of_range_in_one_line(tmp_path, toml, message):
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    r = process(_gc_input(tmp_path), tmp_path / "output", env={"PDAC_CONFIG": str(config)})
    assert r.returncode == 2, r.stderr[-2000:]
    assert message in r.stderr.strip().splitlines()[-1]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "output" / "pdac-likelihood.json").exists()


def test_device_cuda_without_a_gpu_is_a_usage_error_not_the_weights_code(tmp_path):
    scan = tmp_path / "scan.mha"
    scan.write_bytes(b"")  # never read: the device is checked before the weights and the scans
    r = pdac("detect", str(scan), "-o", str(tmp_path / "out"), "--device", "cuda",
             env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 2, r.stderr[-2000:]
    assert "CUDA is not available" in r.stderr.strip().splitlines()[-1]


def test_a_lesion_channel_beyond_the_models_outputs_is_refused_before_any_case(tmp_path):
    scan = tmp_path / "scan.mha"
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkInt16), str(scan))
    r = pdac("detect", str(scan), "-o", str(tmp_path / "out"), "--device", "cpu",
             "--set", "stage2.lesion_channel=9")
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert "stage2.lesion_channel = 9" in last and "has outputs 0..6" in last
    assert not (tmp_path / "out" / "scan_lesions.json").exists()
