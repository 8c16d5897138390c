"""Who made the DICOM outputs: the model card's name and version (and whether its weights are synthetic), the
pdac version and the weights' manifest hash, all from the lesion list's `provenance` record."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import highdicom as hd
from pydicom.sr.codedict import codes

MANUFACTURER = "pdac toolkit (PANORAMA PDAC detection)"
UNKNOWN = "unknown (no model card)"
SYNTHETIC_TAG = "SYNTHETIC"
LO_MAX = 64  # characters of a DICOM LO value


def _lo(value: Any) -> str:
    """A model card's text as a DICOM LO value: printable, no backslash (LO's value separator), 64 characters."""
    text = "".join(c for c in str(value or "") if c.isprintable() and c != "\\").strip()
    return text[:LO_MAX]


@dataclass(frozen=True)
class Producer:
    model_name: str
    model_version: str
    synthetic: bool | None  # None: the weights have no model card
    pdac_version: str
    weights_sha256: str

    @classmethod
    def from_provenance(cls, provenance: dict[str, Any]) -> Producer:
        model = provenance.get("model") or {}
        return cls(model_name=_lo(model.get("name")) or UNKNOWN, model_version=_lo(model.get("version")) or UNKNOWN,
                   synthetic=model.get("synthetic") if model else None,
                   pdac_version=str(provenance.get("pdac_version") or "unknown"),
                   weights_sha256=str(provenance.get("manifest_sha256") or "unknown"))

    @property
    def caveat(self) -> str | None:
        """The warning that every output must carry, if any."""
        if self.synthetic:
            return (f"{SYNTHETIC_TAG}: the weights ({self.model_name} {self.model_version}) were trained on synthetic "
                    "phantoms; the results are not meaningful on patient scans")
        if self.synthetic is None:
            return "the weights have no model card: which model produced these results is unknown"
        return None

    def series_description(self, what: str) -> str:
        """'<what> <model> <version>' within LO's 64 characters, ending in SYNTHETIC when the weights are; the
        model's name is shortened, never the flag."""
        tail = f" {SYNTHETIC_TAG}" if self.synthetic else (" NO MODEL CARD" if self.synthetic is None else "")
        room = LO_MAX - len(what) - len(tail) - 1
        model = f"{self.model_name} {self.model_version}"
        return f"{what} {model[:room]}".rstrip() + tail

    def algorithm(self) -> hd.AlgorithmIdentificationSequence:
        return hd.AlgorithmIdentificationSequence(
            name=self.model_name[:LO_MAX], family=codes.cid7162.ArtificialIntelligence,
            version=self.model_version[:LO_MAX], source=MANUFACTURER[:LO_MAX],
            parameters={"synthetic_weights": str(self.synthetic).lower(), "pdac_version": self.pdac_version,
                        "weights_manifest_sha256": self.weights_sha256})

    def sr_algorithm(self) -> hd.sr.AlgorithmIdentification:
        return hd.sr.AlgorithmIdentification(name=self.model_name[:LO_MAX], version=self.model_version[:LO_MAX])

    @property
    def software_versions(self) -> list[str]:
        return [f"pdac {self.pdac_version}"[:LO_MAX], f"{self.model_name} {self.model_version}"[:LO_MAX]]

    @property
    def serial(self) -> str:
        """Device Serial Number: the weights' manifest hash (which weights made it), shortened to LO."""
        return self.weights_sha256[:LO_MAX]
