"""The shipped calibrations belong to the packs that are built here."""

import pytest

from models.pack import (
    DEFAULT_PACK,
    DLIB_PACK,
    SFACE_PACK,
    SHIPPED_CALIBRATIONS,
    read_calibration,
    read_manifest,
    resolve_pack,
)


@pytest.mark.parametrize("pack", [DLIB_PACK, SFACE_PACK])
def test_shipped_calibration_matches_the_built_pack(pack: str) -> None:
    folder = resolve_pack(pack)
    shipped = SHIPPED_CALIBRATIONS / f"{folder.name}.json"
    assert shipped.is_file()
    calibration = read_calibration(folder)
    assert calibration is not None
    # If a builder's output changes, this fails until `gate calibrate` is run again.
    assert calibration["pack_hash"] == read_manifest(folder).pack_hash
    if pack == DLIB_PACK:  # simulated pairs, made before thresholds needed the 95 % bound
        point = next(p for p in calibration["operating_points"] if p["target_fmr"] == 1e-3)
        assert point["measurable"] and point["fmr"] <= 1e-3
        assert calibration["thresholds"]["1e-03"] == point["threshold"]
        return
    # real photographs; a threshold only where the set shows FMR <= target at 95 %
    assert calibration["kind"] == "real photographs" and "every pair" in calibration["pairs"]
    for point in calibration["operating_points"]:
        key = f"{point['target_fmr']:.0e}"
        if point["measurable"]:
            assert calibration["thresholds"][key] == point["threshold"]
            assert point["fmr_upper95"] <= point["target_fmr"]
        else:
            assert key not in calibration["thresholds"] and point["threshold"] is None
    at = calibration["at_threshold"]  # the pack's default threshold, on the same pairs
    assert at["threshold"] == read_manifest(folder).data["embedder"]["default_threshold"]


def test_the_default_pack_is_the_measured_choice() -> None:
    assert DEFAULT_PACK == SFACE_PACK  # docs/face.md, "Choosing the default pack"
