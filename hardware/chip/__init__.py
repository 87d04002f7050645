"""The passport chip (ICAO 9303 eMRTD): access control, secure messaging, the LDS files,
passive and chip authentication. Devices are reached through one ``transmit(apdu) ->
(data, sw)`` seam (:mod:`hardware.chip.api`); the PC/SC backend is one implementation."""
