"""PANORAMA's label values: the one table that preparation, phantoms, previews, evaluation and the
configuration share."""

from __future__ import annotations

from enum import IntEnum


class Label(IntEnum):
    BACKGROUND = 0
    PDAC = 1
    VEINS = 2
    ARTERIES = 3
    PANCREAS = 4
    PANCREATIC_DUCT = 5
    COMMON_BILE_DUCT = 6

    @property
    def display_name(self) -> str:
        return _DISPLAY[self]


_DISPLAY = {Label.BACKGROUND: "background", Label.PDAC: "PDAC", Label.VEINS: "veins", Label.ARTERIES: "arteries",
            Label.PANCREAS: "pancreas", Label.PANCREATIC_DUCT: "pancreatic duct", Label.COMMON_BILE_DUCT: "CBD"}

# Each label's colour in the PNG previews and the case viewer pages (matplotlib's red, royalblue, orange, lime,
# yellow and magenta).
DISPLAY_COLOURS: dict[Label, str] = {Label.PDAC: "#ff0000", Label.VEINS: "#4169e1", Label.ARTERIES: "#ffa500",
                                     Label.PANCREAS: "#00ff00", Label.PANCREATIC_DUCT: "#ffff00",
                                     Label.COMMON_BILE_DUCT: "#ff00ff"}

# Labels that belong to the pancreas (stage 1 is trained on their union).
PANCREAS_LABELS: tuple[int, ...] = (int(Label.PDAC), int(Label.PANCREAS), int(Label.PANCREATIC_DUCT))


def dataset_json_labels() -> dict[str, int]:
    """nnU-Net's dataset.json `labels` entry for the 7-class stage-2 dataset (PANORAMA's names)."""
    return {("PDAC" if label is Label.PDAC else label.name.lower()): int(label) for label in Label}
