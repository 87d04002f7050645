"""The shipped calibration belongs to the pack that the converter builds here."""

from models.pack import SHIPPED_CALIBRATIONS, read_calibration, read_manifest, resolve_pack


def test_shipped_calibration_matches_the_converted_pack() -> None:
    folder = resolve_pack()
    shipped = SHIPPED_CALIBRATIONS / f"{folder.name}.json"
    assert shipped.is_file()
    calibration = read_calibration(folder)
    assert calibration is not None
    # If the converter's output changes, this fails until `gate calibrate` is run again.
    assert calibration["pack_hash"] == read_manifest(folder).pack_hash
    point = next(p for p in calibration["operating_points"] if p["target_fmr"] == 1e-3)
    assert point["measurable"] and point["fmr"] <= 1e-3
    assert calibration["thresholds"]["1e-03"] == point["threshold"]
