"""Three-letter codes an ICAO 9303 MRZ may carry for an issuing state or a nationality.

Doc 9303 Part 3 uses ISO 3166-1 alpha-3 plus its own codes: ``D`` for Germany (printed
``D<<``), the British variants, UN and other organisations, the stateless/refugee codes, and
``UTO`` — the fictitious state of the ICAO specimens, accepted so that specimen pages read.
A lane that must refuse specimens does so with its nationality allow-list, not here.
"""

from __future__ import annotations


def _words(text: str) -> list[str]:
    return text.split()


ISO_3166_ALPHA3 = frozenset(
    _words(
        """
    AFG ALA ALB DZA ASM AND AGO AIA ATA ATG ARG ARM ABW AUS AUT AZE BHS BHR BGD BRB BLR
    BEL BLZ BEN BMU BTN BOL BES BIH BWA BVT BRA IOT BRN BGR BFA BDI CPV KHM CMR CAN CYM
    CAF TCD CHL CHN CXR CCK COL COM COG COD COK CRI CIV HRV CUB CUW CYP CZE DNK DJI DMA
    DOM ECU EGY SLV GNQ ERI EST SWZ ETH FLK FRO FJI FIN FRA GUF PYF ATF GAB GMB GEO DEU
    GHA GIB GRC GRL GRD GLP GUM GTM GGY GIN GNB GUY HTI HMD VAT HND HKG HUN ISL IND IDN
    IRN IRQ IRL IMN ISR ITA JAM JPN JEY JOR KAZ KEN KIR PRK KOR KWT KGZ LAO LVA LBN LSO
    LBR LBY LIE LTU LUX MAC MDG MWI MYS MDV MLI MLT MHL MTQ MRT MUS MYT MEX FSM MDA MCO
    MNG MNE MSR MAR MOZ MMR NAM NRU NPL NLD NCL NZL NIC NER NGA NIU NFK MKD MNP NOR OMN
    PAK PLW PSE PAN PNG PRY PER PHL PCN POL PRT PRI QAT REU ROU RUS RWA BLM SHN KNA LCA
    MAF SPM VCT WSM SMR STP SAU SEN SRB SYC SLE SGP SXM SVK SVN SLB SOM ZAF SGS SSD ESP
    LKA SDN SUR SJM SWE CHE SYR TWN TJK TZA THA TLS TGO TKL TON TTO TUN TUR TKM TCA TUV
    UGA UKR ARE GBR USA UMI URY UZB VUT VEN VNM VGB VIR WLF ESH YEM ZMB ZWE
    """
    )
)

#: Codes Doc 9303 adds to ISO 3166 (Part 3, §5): organisations, British variants, specials.
ICAO_SPECIAL = frozenset(
    _words(
        """
    D GBD GBN GBO GBP GBS UNO UNA UNK XBA XIM XCC XCE XCO XEC XPO XES XMP XOM XDC XXA
    XXB XXC XXX EUE RKS UTO
    """
    )
)

ICAO_CODES = ISO_3166_ALPHA3 | ICAO_SPECIAL

#: EU member states as they appear in an MRZ (Germany is ``D``).
EU = frozenset(
    _words(
        """
    AUT BEL BGR HRV CYP CZE DNK EST FIN FRA D GRC HUN IRL ITA LVA LTU LUX MLT NLD POL
    PRT ROU SVK SVN ESP SWE
    """
    )
)
EEA = EU | {"ISL", "LIE", "NOR"}
EU_EEA_CH = EEA | {"CHE"}

#: Named presets a lane's configuration may use instead of spelling out a list.
PRESETS: dict[str, frozenset[str]] = {"EU": EU, "EEA": EEA, "EU_EEA_CH": EU_EEA_CH}


def is_known(code: str) -> bool:
    """Whether ``code`` (fillers stripped, e.g. ``"D"`` or ``"UTO"``) is an ICAO code."""
    return code in ICAO_CODES
