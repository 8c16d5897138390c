# Grand Challenge algorithm image: PDAC detection (PANORAMA interface).
#
#   ./build.sh                       # or: docker build --platform linux/amd64 -t pdac-panorama .
#   ./build.sh --build-arg API_METHOD=exec    # GC's exec API method instead (one process per case)
#   ./test.sh                        # builds, runs test/input offline, compares with test/output
#
# GC's API method is fixed at build time (ARG API_METHOD, below): invoke (default) makes a warm server
# on port 4743 (/health, POST /invoke: python -m pdac.serve), exec runs process.py once per case.
#
# The base image supplies Python 3.11, CUDA and torch; the project's dependencies are installed on
# top WITHOUT replacing the base's torch (nor its torchvision/torchaudio/triton/nvidia-* libraries).
# Any pytorch/pytorch-like image with Python >= 3.11, pip and torch works as BASE_IMAGE.
# Few instructions on purpose: with podman's vfs storage every step is a full copy of the image.
ARG BASE_IMAGE=docker.io/pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime
FROM ${BASE_IMAGE}

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# Run-time environment. HOME and every cache point into /tmp, the only writable place besides
# /output; nnU-Net's folders are set (it warns when they are not) but unused; inference runs in one
# process (no worker processes, so nothing relies on /dev/shm) and without torch.compile.
ENV PYTHONPATH=/opt/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    MPLCONFIGDIR=/tmp/matplotlib \
    TORCH_HOME=/tmp/torch \
    TRITON_CACHE_DIR=/tmp/triton \
    TORCHINDUCTOR_CACHE_DIR=/tmp/torchinductor \
    CUDA_CACHE_PATH=/tmp/nv-compute-cache \
    nnUNet_raw=/tmp/nnUNet_raw \
    nnUNet_preprocessed=/tmp/nnUNet_preprocessed \
    nnUNet_results=/tmp/nnUNet_results \
    nnUNet_compile=false \
    nnUNet_def_n_proc=1 \
    nnUNet_n_proc_DA=0
WORKDIR /opt/app
# No CMD: GC runs ENTRYPOINT + CMD with Docker's rules, so a CMD would become the entry point's arguments.
# ENTRYPOINT clears the one a base image may set; test.sh checks that the built image has none.
# pdac.serve.entrypoint reads $PDAC_API_METHOD (set from ARG API_METHOD below): invoke starts the server
# on 0.0.0.0:4743, exec runs process.py's main (one case, then exit; the server is not imported).
ENTRYPOINT ["python", "-m", "pdac.serve.entrypoint"]

# 1. Dependencies and the non-root user (one layer, rebuilt only when requirements.txt changes).
#    constraints.txt pins the base's torch-family packages to the versions already installed, with
#    any +local suffix (+cu126, +cpu) stripped, so pip keeps them instead of pulling PyPI's torch.
#    timm (nnunetv2 -> dynamic_network_architectures -> timm) needs torchvision: when the base has
#    one it is pinned here; otherwise pip picks the torchvision release made for the base's torch.
#    Neither timm nor torchvision is imported on the inference path (checked below).
COPY requirements.txt /opt/app/requirements.txt
RUN python -c "import importlib.metadata as md, torch; \
pins = {'torch': torch.__version__}; \
pins.update({d.metadata['Name'].lower(): d.version for d in md.distributions() \
             if (d.metadata['Name'] or '').lower() in ('torchvision', 'torchaudio', 'triton') \
             or (d.metadata['Name'] or '').lower().startswith('nvidia-')}); \
print('\n'.join(f'{n}=={v.split(\"+\")[0]}' for n, v in sorted(pins.items())))" > /opt/app/constraints.txt \
 && echo "base image constraints:" && cat /opt/app/constraints.txt \
 && python -m pip install --no-cache-dir -r /opt/app/requirements.txt -c /opt/app/constraints.txt \
 && python -c "import torch, sys; want = open('/opt/app/constraints.txt').read().split('torch==')[1].split()[0]; \
got = torch.__version__.split('+')[0]; print('torch', torch.__version__); sys.exit(got != want)" \
 && groupadd --system user \
 && useradd --system --no-log-init --gid user --home-dir /tmp --no-create-home --shell /bin/bash user \
 && find /tmp -mindepth 1 -delete

# 2. GC refuses images that run as root. Named like GC's own templates; it resolves inside the image.
# hadolint ignore=DL3066
USER user

# 3. GC's API method, read by GC from the label (case-insensitively; no label means exec) and by the
#    entry point from the environment. Declared after the dependencies so both methods share that layer.
ARG API_METHOD=invoke
LABEL org.grand-challenge.api-method="${API_METHOD}"
ENV PDAC_API_METHOD=${API_METHOD}

# 4. Code, configuration and (demo) weights, last and in one layer: the context is an allow-list
#    (.dockerignore), so this copies pdac/, process.py, pyproject.toml, resources/ and weights/.
#    A model tarball uploaded to GC appears at /opt/ml/model and takes precedence over
#    /opt/app/weights (pdac/infer/weights.py). The check runs as the image's user: everything must be
#    readable, timm/torchvision must stay off the inference path, and /tmp must stay empty.
COPY . /opt/app/
RUN case "$PDAC_API_METHOD" in invoke | exec) ;; *) echo "API_METHOD must be invoke or exec, got '$PDAC_API_METHOD'"; exit 1 ;; esac \
 && python -c "import os, sys, pathlib, nnunetv2, pdac.infer.pipeline, pdac.infer.models, \
dynamic_network_architectures.architectures.unet; from pdac.config import load_config; load_config(); \
unreadable = [str(p) for p in pathlib.Path('/opt/app').rglob('*') if not os.access(p, os.R_OK)]; \
bad = sorted({m.split('.')[0] for m in sys.modules} & {'timm', 'torchvision'}); \
sys.exit(f'not readable by the image user: {unreadable[:5]}' if unreadable else \
         f'unexpected imports on the inference path: {bad}' if bad else 0)" \
 && { [ "$PDAC_API_METHOD" = exec ] || python -c "import fastapi, uvicorn, pdac.serve.server"; } \
 && { python -c "import torchvision" >/dev/null 2>&1 \
      || echo "note: torchvision does not import with this base's torch (e.g. a CPU-only torch);" \
              "it is only needed by timm-based (Primus) architectures, not by the inference path."; } \
 && { test -z "$(ls -A /tmp)" || { echo "/tmp is not empty: $(ls -A /tmp)"; exit 1; }; }
