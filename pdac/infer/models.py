"""Loading nnU-Net model folders in-process and running them on in-memory images.

The network is built from the folder's plans (`get_network_from_plans`), not from its trainer
class, so folders from trainers we do not have (the official baseline's
`nnUNetTrainer_Loss_CE_checkpoints`, for one) load unchanged.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import SimpleITK as sitk
import torch

from pdac.config import ModelConfig
from pdac.errors import UsageError, WeightsError
from pdac.infer.weights import ModelFiles, is_plain_name
from pdac.safe_read import loads_json

log = logging.getLogger(__name__)

# CPU flags (Linux /proc/cpuinfo names) of native bfloat16 arithmetic: AVX-512 BF16 and AMX-BF16.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})

# What a network runs in: fp32; bf16 (bfloat16 autocast on the CPU, the lesion network only, see
# `stage1_precision`); amp (CUDA: nnU-Net's own autocast).
Precision = Literal["fp32", "bf16", "amp"]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("runtime.device = 'cuda' (--device cuda) but CUDA is not available on this machine; "
                         "use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise UsageError(f"runtime.device: unknown device {name!r} (auto, cpu or cuda)")
    return torch.device(name)


class ChannelsLastInstanceNorm3d(torch.nn.InstanceNorm3d):
    """nnU-Net's InstanceNorm3d, computed without leaving the channels-last layout.

    For one sample, instance norm is batch norm with batch statistics (both normalise each channel over its
    voxels), and PyTorch's CPU batch norm works on channels-last tensors in place, where its instance norm
    first copies them to the contiguous layout (measured: the copies took a third of a bf16 forward pass).
    Parameters and state-dict keys are InstanceNorm3d's, so every fold's checkpoint still loads."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[0] != 1 or self.track_running_stats:
            return super().forward(x)
        return torch.nn.functional.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)


def use_channels_last(network: torch.nn.Module) -> torch.nn.Module:
    """Channels-last 3D layout for CPU inference (oneDNN convolves it without reordering each input; with the
    real-size plans, measured in `pdac bench`), the instance norms swapped for the layout-keeping form above.
    Float reassociation changes outputs slightly (~1e-3 of a logit); results stay deterministic."""
    for module in network.modules():
        if type(module) is torch.nn.InstanceNorm3d:
            module.__class__ = ChannelsLastInstanceNorm3d
    return network.to(memory_format=torch.channels_last_3d)


def _fold_key(fold: str):
    return (not fold.isdigit(), int(fold) if fold.isdigit() else 0, fold)


def fold_checkpoints(files: ModelFiles, cfg: ModelConfig) -> list[tuple[str, str]]:
    """(fold, checkpoint name relative to the model folder) per fold to use: the configured folds, or
    every fold_* folder among `files`; per fold the first present name of `cfg.checkpoints`. Checkpoint
    names must be plain file names: a path from the configuration never reaches the loader."""
    for name in cfg.checkpoints:
        if not is_plain_name(name):
            raise WeightsError(f"checkpoint name must be a file name inside the fold folder, got {name!r}")
    if cfg.folds:
        folds = [str(f) for f in cfg.folds]
    else:
        folds = sorted({n.split("/", 1)[0][5:] for n in files.names if n.startswith("fold_") and "/" in n},
                       key=_fold_key)
    chosen = []
    for fold in folds:
        ckpt = next((f"fold_{fold}/{c}" for c in cfg.checkpoints if f"fold_{fold}/{c}" in files.names), None)
        if ckpt is None:
            raise WeightsError(f"{files.folder / f'fold_{fold}'}: no checkpoint ({', '.join(cfg.checkpoints)})")
        chosen.append((fold, ckpt))
    if not chosen:
        raise WeightsError(f"{files.folder}: no fold_N folder with a checkpoint")
    return chosen


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The processor's feature flags as Linux reports them (empty where /proc/cpuinfo does not exist)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return frozenset()
    return frozenset(word for line in text.splitlines() if line.startswith("flags") for word in line.split()[2:])


def choose_precision(setting: str, device_type: str, flags: frozenset[str]) -> Precision:
    """The arithmetic the networks run in, from the `runtime.precision` setting, the device and the CPU's flags.

    On CUDA nnU-Net's own mixed precision always runs (the setting is for the CPU). On the CPU, `auto` is
    bf16 only where the processor computes bfloat16 natively: elsewhere autocast emulates it, slower than fp32."""
    if device_type == "cuda":
        return "amp"
    if setting == "auto":
        return "bf16" if flags & NATIVE_BF16_FLAGS else "fp32"
    if setting in ("fp32", "bf16"):
        return setting
    raise ValueError(f"unknown precision setting {setting!r}")  # the config's Literal refuses it first


def stage1_precision(chosen: Precision) -> Precision:
    """Stage 1 stays in fp32 on the CPU. Its thresholded low-resolution mask decides the crop, and there bf16's
    rounding flipped border voxels and moved the crop in 2 of 40 held-out phantoms, losing a lesion in one
    (docs/performance.md), while the stage-1 network takes ~1% of the time. CUDA keeps nnU-Net's mixed precision."""
    return "amp" if chosen == "amp" else "fp32"


def resolve_precision(setting: str, device: torch.device, flags: frozenset[str] | None = None) -> Precision:
    """`choose_precision` for this machine, logged once (per pipeline)."""
    flags = cpu_flags() if flags is None else flags
    chosen = choose_precision(setting, device.type, flags)
    native = sorted(flags & NATIVE_BF16_FLAGS)
    if chosen == "amp":
        if setting != "auto":
            log.warning("precision %s applies to the CPU only; CUDA runs nnU-Net's own mixed precision", setting)
        log.info("precision: nnU-Net's CUDA mixed precision")
    elif chosen == "bf16" and not native:
        log.warning("precision bf16: this CPU has no native bfloat16 (avx512_bf16/amx_bf16); expect it to be "
                    "slower than fp32")
    else:
        log.info("precision: %s on the CPU (setting %s; native bfloat16: %s)%s", chosen, setting,
                 ", ".join(native) or "no", "; stage 1 in fp32" if chosen == "bf16" else "")
    return chosen


@dataclass
class Model:
    """A loaded nnU-Net model: predictor (all folds) plus what is needed to run it on arrays."""

    name: str
    predictor: object  # nnUNetPredictor
    folds: list[str]
    precision: Precision = "fp32"  # set by the pipeline from runtime.precision (`resolve_precision`)

    @property
    def plans_manager(self):
        return self.predictor.plans_manager

    @property
    def configuration_manager(self):
        return self.predictor.configuration_manager

    @property
    def num_outputs(self) -> int:
        """Output channels of the network (background included)."""
        return int(self.predictor.label_manager.num_segmentation_heads)

    @property
    def spacing_xyz(self) -> tuple[float, float, float]:
        """The spacing nnU-Net resamples its input to, in SimpleITK's (x, y, z) order."""
        zyx = [0.0, 0.0, 0.0]
        for i, axis in enumerate(self.plans_manager.transpose_forward):
            zyx[axis] = float(self.configuration_manager.spacing[i])
        return tuple(zyx[::-1])


def _json(files: ModelFiles, name: str) -> dict:
    if name not in files.names:
        raise WeightsError(f"weights file missing: {files.folder / name}")
    data = loads_json(files.read_bytes(name), str(files.folder / name), WeightsError)  # bounded nesting depth
    if not isinstance(data, dict):
        raise WeightsError(f"{files.folder / name}: expected a JSON object")
    return data


def _checkpoint(files: ModelFiles, name: str) -> dict:
    """Unpickle a checkpoint from the bytes `files` verified, and check the metadata the loader uses."""
    shown = files.folder / name
    data = files.read_bytes(name)
    try:
        # nnU-Net checkpoints are pickles (numpy scalars, dicts): weights_only=False is required under
        # torch >= 2.6. These bytes are the ones whose SHA-256 matched the manifest (see pdac.infer.weights).
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a bad file
        raise WeightsError(f"cannot load checkpoint {shown}: {type(e).__name__}: {str(e)[:160]}") from None
    del data
    odd = None
    if not isinstance(ckpt, dict):
        odd = f"a {type(ckpt).__name__}, not a dict"
    elif not isinstance(ckpt.get("network_weights"), dict):
        odd = "no network_weights"
    elif not isinstance(ckpt.get("init_args", {}), dict) or not isinstance(
            ckpt.get("init_args", {}).get("configuration", ""), str):
        odd = "init_args is not {configuration: name}"
    elif not isinstance(ckpt.get("trainer_name", ""), str):
        odd = "trainer_name is not a string"
    else:
        axes = ckpt.get("inference_allowed_mirroring_axes")
        if axes is not None and (not isinstance(axes, list | tuple) or not all(
                isinstance(a, int) and not isinstance(a, bool) and 0 <= a <= 2 for a in axes)):
            odd = "inference_allowed_mirroring_axes is not a list of axes 0..2"
    if odd:
        raise WeightsError(f"checkpoint {shown}: unexpected contents ({odd})")
    return ckpt


def load_model(files: ModelFiles, cfg: ModelConfig, device: torch.device) -> Model:
    """Load the folds of an nnU-Net trained-model folder. `files` is where every byte comes from: the
    manifest-verified files of a weights folder (`VerifiedWeights.model`), or one's own training output
    (`unverified_model_folder`)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    dataset_json = _json(files, "dataset.json")
    plans = _json(files, "plans.json")
    chosen = fold_checkpoints(files, cfg)  # names are checked before anything is unpickled
    parameters, configuration, trainer_name, mirror_axes, folds = [], None, None, None, []
    for fold, ckpt_name in chosen:
        ckpt = _checkpoint(files, ckpt_name)
        parameters.append(ckpt["network_weights"])
        configuration = ckpt.get("init_args", {}).get("configuration", configuration)
        trainer_name = ckpt.get("trainer_name", trainer_name)
        mirror_axes = ckpt.get("inference_allowed_mirroring_axes", mirror_axes)
        folds.append(fold)
    configuration = configuration or "3d_fullres"
    try:
        plans_manager = PlansManager(plans)
        configuration_manager = plans_manager.get_configuration(configuration)
        label_manager = plans_manager.get_label_manager(dataset_json)
        network = get_network_from_plans(
            configuration_manager.network_arch_class_name,
            configuration_manager.network_arch_init_kwargs,
            configuration_manager.network_arch_init_kwargs_req_import,
            determine_num_input_channels(plans_manager, configuration_manager, dataset_json),
            label_manager.num_segmentation_heads,
            allow_init=False,
            deep_supervision=False,
        )
        spacing = [float(v) for v in configuration_manager.spacing]
        if len(spacing) != 3 or not all(np.isfinite(v) and v > 0 for v in spacing):
            raise ValueError(f"configuration spacing {configuration_manager.spacing}")
    except Exception as e:  # noqa: BLE001 - nnU-Net raises anything on malformed plans/dataset.json
        msg = re.sub(r"\s+", " ", f"{type(e).__name__}: {e}")[:200]
        raise WeightsError(f"{files.folder}: plans.json/dataset.json unusable for configuration "
                           f"{configuration!r} ({msg})") from None
    for fold, params in zip(folds, parameters, strict=True):
        try:
            network.load_state_dict(params)
        except (RuntimeError, TypeError, ValueError, AttributeError) as e:
            msg = re.sub(r"\s+", " ", str(e))[:200]
            raise WeightsError(f"{files.folder}: fold {fold} checkpoint does not match plans.json ({msg})") from None
    if device.type == "cpu":
        use_channels_last(network)
    mirroring = cfg.mirroring_on(device.type)
    with contextlib.redirect_stdout(io.StringIO()):  # on the CPU it prints a notice on every model load
        predictor = nnUNetPredictor(
            tile_step_size=cfg.tile_step_size,
            use_gaussian=True,
            use_mirroring=mirroring,
            perform_everything_on_device=device.type == "cuda",
            device=device,
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )
    predictor.manual_initialization(network, plans_manager, configuration_manager, parameters, dataset_json,
                                    trainer_name or "nnUNetTrainer", mirror_axes)
    name = files.folder.name
    log.info("loaded %s: %s, folds %s, %s, TTA %s", name, configuration_manager.network_arch_class_name
             .rsplit(".", 1)[-1], ",".join(folds), device, "on" if mirroring and mirror_axes else "off")
    return Model(name, predictor, folds)


def preprocess(model: Model, image: sitk.Image) -> tuple[torch.Tensor, dict]:
    """nnU-Net's preprocessing of an in-memory image: (network input tensor, properties)."""
    pm, cm = model.plans_manager, model.configuration_manager
    data = sitk.GetArrayFromImage(image).astype(np.float32)[None]
    props = {"spacing": list(image.GetSpacing()[::-1])}
    data, _, props = cm.preprocessor_class(verbose=False).run_case_npy(data, None, props, pm, cm,
                                                                       model.predictor.dataset_json)
    return torch.from_numpy(data), props


def _to_float32(module, inputs, output):
    return output.float()


@contextlib.contextmanager
def _network_precision(model: Model) -> Iterator[None]:
    """bf16: the network's layers run under CPU bfloat16 autocast and each patch's logits come back as float32,
    so nnU-Net's Gaussian weighting, TTA averaging and patch accumulation are the same arithmetic as in fp32.
    fp32 and amp (CUDA, where nnU-Net applies its own autocast): nothing changes."""
    if model.precision != "bf16":
        yield
        return
    hook = model.predictor.network.register_forward_hook(_to_float32)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    finally:
        hook.remove()


def predict_logits(model: Model, data: torch.Tensor) -> torch.Tensor:
    """nnU-Net's sliding-window prediction (folds, TTA) of preprocessed data in the model's precision;
    float32 logits on the CPU."""
    with _network_precision(model):
        logits = model.predictor.predict_logits_from_preprocessed_data(data)
    return logits.float().cpu()


def predict_probabilities(model: Model, image: sitk.Image, channels: list[int]) -> np.ndarray:
    """Softmax probabilities of `channels`, summed, on `image`'s own grid ((z, y, x) float32).

    nnU-Net preprocessing and sliding-window prediction; only the requested probability is brought
    back to the input grid (nnU-Net itself would resample every channel)."""
    from acvl_utils.cropping_and_padding.bounding_boxes import insert_crop_into_image

    pm, cm = model.plans_manager, model.configuration_manager
    data, props = preprocess(model, image)
    logits = predict_logits(model, data)
    prob = torch.softmax(logits, 0)[channels].sum(0, keepdim=True).numpy()
    del logits
    spacing_t = [props["spacing"][i] for i in pm.transpose_forward]
    target_shape = props["shape_after_cropping_and_before_resampling"]
    if tuple(prob.shape[1:]) != tuple(target_shape):
        prob = cm.resampling_fn_probabilities(prob, target_shape, cm.spacing, spacing_t)
    full = np.zeros(props["shape_before_cropping"], dtype=np.float32)
    full = insert_crop_into_image(full, np.asarray(prob[0], dtype=np.float32), props["bbox_used_for_cropping"])
    return np.ascontiguousarray(full.transpose(pm.transpose_backward), dtype=np.float32)
