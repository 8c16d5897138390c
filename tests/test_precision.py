"""runtime.precision: the setting (TOML, --set, --precision), the auto choice from the CPU's flags, bf16 really
running in bfloat16, determinism of bf16 through the real CLI, and the equivalence report's candidate matching."""

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import WEIGHTS, pdac

from pdac.cli import build_parser, config_from_args
from pdac.config import PipelineConfig, load_config, parse_overrides
from pdac.errors import UsageError
from pdac.infer.models import choose_precision, cpu_flags, load_model, predict_logits, resolve_precision
from pdac.infer.weights import verify_weights
from pdac.lab.precision import match_candidates, support_dice

SAPPHIRE_RAPIDS = frozenset({"fpu", "avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})
ICE_LAKE = frozenset({"fpu", "avx2", "avx512f", "avx512_vnni"})


def test_precision_defaults_to_the_toml_value_and_is_overridable():
    assert load_config().runtime.precision == PipelineConfig().runtime.precision
    assert load_config(overrides=parse_overrides(["runtime.precision=bf16"])).runtime.precision == "bf16"
    with pytest.raises(UsageError, match="runtime.precision"):
        load_config(overrides=parse_overrides(["runtime.precision=fp16"]))


@pytest.mark.parametrize("value", ["auto", "fp32", "bf16"])
def test_precision_flag_reaches_the_config(value):
    args = build_parser().parse_args(["detect", "scan.mha", "-o", "out", "--precision", value])
    assert config_from_args(args).runtime.precision == value


def test_unknown_precision_flag_is_a_usage_error(tmp_path):
    r = pdac("detect", str(tmp_path), "-o", str(tmp_path / "out"), "--precision", "fp16")
    assert r.returncode == 2
    assert "invalid choice: 'fp16'" in r.stderr


@pytest.mark.parametrize(("flags", "expected"), [(SAPPHIRE_RAPIDS, "bf16"), (frozenset({"avx512_bf16"}), "bf16"),
                                                 (frozenset({"amx_bf16"}), "bf16"), (ICE_LAKE, "fp32"),
                                                 (frozenset(), "fp32")])
def test_auto_picks_bf16_only_with_native_bfloat16(flags, expected):
    assert choose_precision("auto", "cpu", flags) == expected


def test_explicit_settings_win_on_the_cpu_and_cuda_keeps_nnunets_mixed_precision():
    assert choose_precision("fp32", "cpu", SAPPHIRE_RAPIDS) == "fp32"
    assert choose_precision("bf16", "cpu", ICE_LAKE) == "bf16"
    for setting in ("auto", "fp32", "bf16"):
        assert choose_precision(setting, "cuda", SAPPHIRE_RAPIDS) == "amp"


def test_resolve_precision_logs_the_choice(caplog):
    caplog.set_level("INFO", logger="pdac.infer.models")
    assert resolve_precision("auto", torch.device("cpu"), ICE_LAKE) == "fp32"
    assert "precision: fp32 on the CPU (setting auto; native bfloat16: no)" in caplog.text
    caplog.clear()
    assert resolve_precision("bf16", torch.device("cpu"), ICE_LAKE) == "bf16"
    assert "no native bfloat16" in caplog.text


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\nbugs\t\t: spectre_v1\n\n"
                    "processor\t: 1\nflags\t\t: fpu avx512f amx_bf16\n")
    assert cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16", "amx_bf16"}
    assert cpu_flags(tmp_path / "missing") == frozenset()
    assert choose_precision("auto", "cpu", cpu_flags(info)) == "bf16"


def test_bf16_runs_the_network_in_bfloat16_and_returns_float32_logits():
    config = load_config()
    verified = verify_weights(WEIGHTS)
    model = load_model(verified.model(config.stage2.model), config.stage2, torch.device("cpu"))
    patch = model.configuration_manager.patch_size
    data = torch.from_numpy(np.random.default_rng(0).normal(size=(1, *patch)).astype(np.float32))
    seen = []
    first_conv = next(m for m in model.predictor.network.modules() if isinstance(m, torch.nn.Conv3d))
    first_conv.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    logits = {}
    for precision in ("fp32", "bf16"):
        model.precision = precision
        logits[precision] = predict_logits(model, data)
    assert seen == [torch.float32, torch.bfloat16]
    assert logits["bf16"].dtype == torch.float32 and logits["bf16"].shape == logits["fp32"].shape
    assert not torch.equal(logits["bf16"], logits["fp32"])  # really computed differently ...
    assert (logits["bf16"] - logits["fp32"]).abs().mean() < 0.1  # ... yet the same logits up to rounding
    assert not model.predictor.network._forward_hooks  # the float32 cast is removed after the call


def test_two_bf16_runs_are_bit_identical(tmp_path, phantom_scans):
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}"
        r = pdac("detect", str(phantom_scans["oblique"]), "-o", str(out), "--precision", "bf16", "--device", "cpu")
        assert r.returncode == 0, r.stderr[-2000:]
        assert r.stderr.count("precision: bf16") == 1, r.stderr[-2000:]  # logged once per run
        assert "; stage 1 in fp32" in r.stderr
        outs.append(out)
    a, b = (sitk.GetArrayFromImage(sitk.ReadImage(str(o / "case_oblique_detection_map.mha"))) for o in outs)
    assert a.max() > 0
    assert np.array_equal(a, b)
    assert (outs[0] / "pdac-likelihood.json").read_text() == (outs[1] / "pdac-likelihood.json").read_text()


def test_bf16_runs_the_lesion_network_only_and_stage1_stays_fp32():
    from pdac.infer.models import stage1_precision
    from pdac.infer.pipeline import Pipeline

    for setting, lesion in (("bf16", "bf16"), ("fp32", "fp32")):
        pipeline = Pipeline(load_config(overrides={"runtime": {"precision": setting, "device": "cpu"}}), str(WEIGHTS))
        assert (pipeline.lesion_model.precision, pipeline.pancreas_model.precision) == (lesion, "fp32")
    assert stage1_precision("amp") == "amp"  # CUDA: nnU-Net's mixed precision for both stages


def _blob(shape, centre, radius, value):
    z, y, x = np.ogrid[tuple(slice(0, s) for s in shape)]
    inside = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= radius**2
    return np.where(inside, np.float32(value), np.float32(0))


def test_candidates_are_matched_one_to_one_by_iou():
    shape = (30, 30, 60)
    a = _blob(shape, (15, 15, 10), 5, 0.9) + _blob(shape, (15, 15, 45), 4, 0.4)
    b = _blob(shape, (15, 16, 11), 5, 0.85) + _blob(shape, (15, 15, 30), 3, 0.2)  # one moved, one elsewhere
    m = match_candidates(a, b)
    assert (m["a"], m["b"], m["matched"]) == (2, 2, 1)
    assert m["pairs"][0]["a"] == pytest.approx(0.9) and m["pairs"][0]["b"] == pytest.approx(0.85)
    assert 0.1 <= m["pairs"][0]["iou"] < 1
    far = _blob(shape, (15, 15, 17), 5, 0.9)  # overlaps the first candidate of `a` with IoU < 0.1
    assert match_candidates(a, far)["matched"] == 0
    assert support_dice(a, a) == 1.0 and support_dice(a * 0, b * 0) is None
    assert 0 < support_dice(a, b) < 1


def test_equivalence_command_refuses_bad_arguments(tmp_path):
    r = pdac("bench", "--precision-equivalence", "--cases", "1")
    assert r.returncode == 2 and "--cases" in r.stderr
    r = pdac("bench", "--precision-equivalence", "--scans", str(tmp_path / "missing.nii.gz"))
    assert r.returncode == 2 and "missing.nii.gz" in r.stderr
