"""A local stand-in for Grand Challenge running one algorithm job through its runtime wrapper,
sagemaker-shim (PyPI). Used by tests/test_gc_shim.py; run it with the shim's own interpreter
(`make shim-env` makes .venv-shim, Python 3.12), as root:

    .venv-shim/bin/python tests/gc_job.py --input test/input [--input CASE2 ...] --model model.tar.gz --out OUT \
        --entrypoint '["python", "/repo/process.py"]' --user user --home /tmp --workdir /repo \
        --env PATH=... --env KEY=VALUE ... [--open PATH ...] [--api-method invoke] [--health-timeout S]

What GC does, in the same order: moto's S3 server on 127.0.0.1 (a free port) stands in for S3; the
input folder's files (scan, inputs.json, clinical information) are uploaded as the task's inputs and
the model tarball as the job's model; `sagemaker-shim invoke` runs the tasks (one per --input, in order,
in one shim run) with GC's environment
(entry point and CMD as base64 JSON, the image's user, memory limit, signing key) inside
gc_sandbox.sh, where /input, /output and /opt/ml/model are the real paths and the image's user exists.

With `--api-method invoke` (GC's label `org.grand-challenge.api-method="invoke"`) the shim starts the
entry point once as a server, polls its /health and sends one POST /invoke per task.

Written to OUT: job.json (task ids, buckets, prefixes, signing key), shim.log (the shim's JSON log
lines), output/ (every object under the first task's output prefix, including the shim's
.sagemaker_shim/inference_result.json; task N's, from 0, in output-N/ for N > 0), runtime_output/ (the
shim's runtime_setup_result.json) and metadata.json (each object's user metadata). The exit status is
the shim's own (it exits 0 when it ran the tasks, whatever their exit codes), or 124 when it ran past
its time limits plus a minute.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import subprocess
import sys
import uuid
from base64 import b64encode
from pathlib import Path

import boto3
from moto.server import ThreadedMotoServer

SANDBOX = Path(__file__).resolve().parent / "gc_sandbox.sh"
INPUTS_BUCKET = "grand-challenge-components-inputs"
OUTPUTS_BUCKET = "grand-challenge-components-outputs"
# GC's defaults for an algorithm job's environment (its invocation environment); the paths are the
# shim's defaults too.
WRITABLE_DIRECTORIES = "/opt/ml/output/data:/opt/ml/model:/opt/ml/input/data/ground_truth:/opt/ml/checkpoints:/tmp"
POST_CLEAN_DIRECTORIES = "/opt/ml/output/data:/opt/ml/model:/opt/ml/input/data/ground_truth"


def b64json(value) -> str:
    return b64encode(json.dumps(value).encode()).decode()


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--input", type=Path, action="append", required=True,
                   help="folder laid out like GC's /input: one task (repeat for more tasks in one shim run)")
    p.add_argument("--model", type=Path, help="model tarball, extracted by the shim to /opt/ml/model")
    p.add_argument("--out", type=Path, required=True, help="folder for the results (created)")
    p.add_argument("--entrypoint", required=True, help="the image's ENTRYPOINT, JSON")
    p.add_argument("--cmd", default="null", help="the image's CMD, JSON (default: none)")
    p.add_argument("--user", required=True, help="the image's USER")
    p.add_argument("--home", required=True, help="that user's home folder (its passwd entry)")
    p.add_argument("--workdir", required=True, help="the image's WORKDIR")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="the image's ENV")
    p.add_argument("--open", action="append", default=[], metavar="PATH",
                   help="a path the image's user must reach (its parent folders get o+x in the sandbox)")
    p.add_argument("--timeout", type=int, default=1200, help="each task's time limit in seconds (GC: 1200)")
    p.add_argument("--api-method", choices=("exec", "invoke"), default="exec",
                   help="GC's API method, as it reads it from the image's label (default exec: no label)")
    p.add_argument("--health-timeout", type=int,
                   help="invoke: the shim's cap on the server's start and health phase (GC: 300 s)")
    p.add_argument("--memory-mb", type=int, default=7168,
                   help="GC's memory limit for the job (the instance's memory minus 1 GB; default 8 GB)")
    return p.parse_args(argv)


def upload_task_inputs(s3, input_dir: Path, prefix: str) -> list[dict]:
    inputs = []
    for path in sorted(p for p in input_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(input_dir).as_posix()
        key = f"{prefix}{relative}"
        s3.upload_file(str(path), INPUTS_BUCKET, key)
        inputs.append({"relative_path": relative, "bucket_name": INPUTS_BUCKET, "bucket_key": key})
    return inputs


def download_prefix(s3, bucket: str, prefix: str, dest: Path) -> dict[str, dict]:
    metadata = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            relative = obj["Key"][len(prefix):]
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(bucket, obj["Key"], str(target))
            metadata[relative] = s3.head_object(Bucket=bucket, Key=obj["Key"])["Metadata"]
    return metadata


def run_job(args: argparse.Namespace, endpoint: str) -> int:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                      aws_access_key_id="testing", aws_secret_access_key="testing")
    for bucket in (INPUTS_BUCKET, OUTPUTS_BUCKET):
        s3.create_bucket(Bucket=bucket)

    pks = [str(uuid.uuid4()) for _ in args.input]
    pk = pks[0]
    job = {"pk": pk, "pks": pks, "output_bucket": OUTPUTS_BUCKET,
           "output_prefixes": [f"io/algorithms/job/{p}/output/" for p in pks],
           "runtime_output_prefix": f"io/algorithms/job/{pk}/runtime/", "signing_key_hex": secrets.token_hex(16)}
    job["output_prefix"] = job["output_prefixes"][0]
    tasks = [{"pk": p, "inputs": upload_task_inputs(s3, folder, f"io/algorithms/job/{p}/input/"),
              "output_bucket_name": OUTPUTS_BUCKET, "output_prefix": prefix, "timeout": args.timeout}
             for p, folder, prefix in zip(pks, args.input, job["output_prefixes"], strict=True)]
    env = dict(item.split("=", 1) for item in args.env)
    env.update({
        "LOG_LEVEL": "INFO",
        "PYTHONUNBUFFERED": "1",
        "GRAND_CHALLENGE_COMPONENT_ENTRYPOINT_B64J": b64json(json.loads(args.entrypoint)),
        "GRAND_CHALLENGE_COMPONENT_CMD_B64J": b64json(json.loads(args.cmd)),
        "GRAND_CHALLENGE_COMPONENT_USER": args.user,
        "GRAND_CHALLENGE_COMPONENT_API_METHOD": args.api_method,
        "GRAND_CHALLENGE_COMPONENT_WRITABLE_DIRECTORIES": WRITABLE_DIRECTORIES,
        "GRAND_CHALLENGE_COMPONENT_POST_CLEAN_DIRECTORIES": POST_CLEAN_DIRECTORIES,
        "GRAND_CHALLENGE_COMPONENT_MAX_MEMORY_MB": str(args.memory_mb),
        "GRAND_CHALLENGE_COMPONENT_SIGNING_KEY_HEX": job["signing_key_hex"],
        "GRAND_CHALLENGE_COMPONENT_RUNTIME_OUTPUT_BUCKET_NAME": OUTPUTS_BUCKET,
        "GRAND_CHALLENGE_COMPONENT_RUNTIME_OUTPUT_PREFIX": job["runtime_output_prefix"],
        "AWS_S3_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "NO_PROXY": "127.0.0.1",
        "no_proxy": "127.0.0.1",
    })
    if args.health_timeout:
        env["GRAND_CHALLENGE_COMPONENT_START_AND_HEALTH_TIMEOUT_SECONDS"] = str(args.health_timeout)
    if args.model:
        key = f"auxiliary-data/algorithms/job/{pk}/algorithm-model.tar.gz"
        s3.upload_file(str(args.model), INPUTS_BUCKET, key)
        env["GRAND_CHALLENGE_COMPONENT_MODEL"] = f"s3://{INPUTS_BUCKET}/{key}"
    (args.out / "job.json").write_text(json.dumps(job, indent=1))

    shim = Path(sys.executable).parent / "sagemaker-shim"
    scratch = args.out / "sandbox"
    scratch.mkdir()
    opened = [str(Path(p).resolve()) for p in [*args.open, args.workdir]]
    command = ["bash", str(SANDBOX), str(scratch), args.user, args.home, args.workdir, ":".join(opened), "--",
               str(shim), "invoke", "--tasks", json.dumps(tasks)]
    with open(args.out / "shim.log", "wb") as log:
        try:
            rc = subprocess.run(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                timeout=args.timeout * len(tasks) + (args.health_timeout or 300) + 60).returncode
        except subprocess.TimeoutExpired:
            rc = 124
    scratch.rmdir()

    folders = {"runtime_output": job["runtime_output_prefix"]}
    for i, prefix in enumerate(job["output_prefixes"]):
        folders["output" if i == 0 else f"output-{i}"] = prefix
    metadata = {name: download_prefix(s3, OUTPUTS_BUCKET, prefix, args.out / name) for name, prefix in folders.items()}
    (args.out / "metadata.json").write_text(json.dumps(metadata, indent=1))
    return rc


def main(argv=None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=False)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        return run_job(args, f"http://{host}:{port}")
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
