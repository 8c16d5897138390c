"""Label-map folders -> a synthetic training or test set in nnU-Net/PANORAMA layout, split by subject.

Subjects (multi-organ maps) and lesion donors (PANORAMA's hand-drawn PDAC) are each split train / validation /
test by patient, from a hash of the patient's name, so a patient never gives volumes to two splits and adding
maps does not move the others. Deterministic per seed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pdac.errors import InputError
from pdac.lab.cases import make_layout, write_case
from pdac.lab.synth.lesions import DonorLesion, extract_lesion
from pdac.lab.synth.paint import SynthSpec, synthesize
from pdac.lab.synth.sources import SOURCES, Subject, find_maps, load_subject

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_SHARES = (0.7, 0.12, 0.18)  # of patients, by hash


def split_of(key: str) -> str:
    """A patient's split, stable whatever else is in the folder."""
    u = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 16**8
    return SPLITS[0] if u < SPLIT_SHARES[0] else SPLITS[1] if u < SPLIT_SHARES[0] + SPLIT_SHARES[1] else SPLITS[2]


@dataclass
class Library:
    """The loaded label maps of one folder: multi-organ subjects and lesion donors, with their splits."""

    subjects: list[Subject]
    donors: list[DonorLesion]
    skipped: list[str]  # one line per map that could not be used
    sources: dict[str, int]  # maps used per source

    def of_split(self, split: str) -> tuple[list[Subject], list[DonorLesion]]:
        subjects = [s for s in self.subjects if split_of(s.key) == split]
        donors = [d for d in self.donors if split_of(d.donor) == split]
        return subjects, donors


def _load(item) -> tuple[Subject | None, str | None]:
    path, source, folder = item
    try:
        return load_subject(path, source, folder), None
    except InputError as e:
        return None, str(e)


def load_library(root: Path, sources: list[str] | None = None, strict: bool = False, workers: int = 1) -> Library:
    """Every usable map under `root`. A map that is refused is logged (one line) and skipped, or, with
    `strict`, stops the run with its reason."""
    maps = find_maps(root, sources)
    subjects, donors, skipped, used = [], [], [], {}
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            loaded = list(tqdm(pool.map(_load, maps), total=len(maps), desc="label maps", unit="map"))
    else:
        loaded = [_load(m) for m in tqdm(maps, desc="label maps", unit="map")]
    for (_, source, _), (subject, error) in zip(maps, loaded, strict=True):
        if error is not None:
            if strict:
                raise InputError(error)
            log.warning("skipped: %s", error)
            skipped.append(error)
            continue
        used[source.name] = used.get(source.name, 0) + 1
        donor = extract_lesion(subject)
        if donor is not None:
            donors.append(donor)
        if source.multi_organ:
            subjects.append(subject)
    if not subjects:
        raise InputError(f"{root}: no usable multi-organ label map (sources: "
                         f"{', '.join(n for n, s in SOURCES.items() if s.multi_organ)})")
    if not donors:
        raise InputError(f"{root}: no label map with a PDAC lesion to transplant (e.g. the panorama/ folder)")
    log.info("label maps: %d subjects, %d lesion donors (%s)", len(subjects), len(donors),
             ", ".join(f"{k} {v}" for k, v in used.items()))
    return Library(subjects, donors, skipped, used)


def _job(args) -> dict:
    out, case, subject, donor, seed, spec, preview = args
    image, label, truth = synthesize(subject, donor, seed, spec, case)
    title = None
    if preview:
        what = (f"PDAC {truth['lesion'].get('volume_ml', '?')} mL ({truth['lesion'].get('location')})"
                if truth["lesion_present"] else "no PDAC")
        title = f"{case} (synthetic, {subject.key}, {truth['phase']}): {what}"
    write_case(out, case, image, label, title)
    return truth


def generate_from_labelmaps(out: Path, library: Library, plan: dict[str, int], seed: int,
                            spec: SynthSpec | None = None, positive_fraction: float = 0.5, previews: int = 0,
                            workers: int = 1, prefix: str = "lm") -> list[dict]:
    """`plan` = volumes per split (e.g. {"train": 50, "val": 10}); writes them plus `truth.json` (each case's
    split, subject, lesion donor, phase, geometry). Subjects are used in turn; lesion donors drawn from the
    same split."""
    spec = spec or SynthSpec()
    out = make_layout(out)
    jobs, index = [], 0
    for split, n in plan.items():
        subjects, donors = library.of_split(split)
        if not subjects or not donors:
            raise InputError(f"no {split} subjects or lesion donors in the label maps ({len(subjects)} subjects, "
                             f"{len(donors)} donors): add maps")
        rng = np.random.default_rng([int(seed), SPLITS.index(split)])
        positive = rng.permutation(n) < int(round(n * positive_fraction))
        order = rng.permutation(len(subjects))
        for i in range(n):
            subject = subjects[order[i % len(subjects)]]
            donor = donors[int(rng.integers(len(donors)))]
            case_spec = replace(spec, lesion=bool(positive[i]))
            jobs.append((out, f"{prefix}{seed}_{index:05d}", subject, donor, np.random.SeedSequence([seed, index]),
                         case_spec, index < previews))
            index += 1
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            truths = list(tqdm(pool.map(_job, jobs), total=len(jobs), desc="synthetic CT", unit="case"))
    else:
        truths = [_job(j) for j in tqdm(jobs, desc="synthetic CT", unit="case")]
    for truth, job in zip(truths, jobs, strict=True):
        truth["split"] = split_of(job[2].key)
    (out / "truth.json").write_text(json.dumps({
        "synthetic": True, "generator": "labelmaps", "seed": seed, "spec": json.loads(json.dumps(asdict(spec))),
        "sources": library.sources, "skipped": library.skipped, "cases": truths}, indent=1))
    log.info("wrote %d synthetic volumes from real label maps (%d with PDAC) to %s", len(truths),
             sum(t["lesion_present"] for t in truths), out)
    return truths
