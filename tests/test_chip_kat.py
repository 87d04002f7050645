"""Known answers from ICAO 9303-11 (Appendix D: BAC and 3DES secure messaging; Appendix G.1:
PACE ECDH generic mapping, Appendix H.1: PACE ECDH integrated mapping, both on
brainpoolP256r1 with AES-128), checked against the reader's
own code with a scripted chip that replays ICAO's responses: they test the reader
independently of our emulator. The vectors are those of ../shared/docs/epassport.md
(D.2, D.4's SELECT, G.1), plus the rest of the same worked examples (D.3's mutual
authentication, D.4's READ BINARY); H.1's from the same Appendix of Doc 9303-11 (8th ed.)."""

from __future__ import annotations

import pytest

from hardware.chip import apdu, bac, pace, sm
from hardware.chip.api import AccessDenied
from hardware.docreader.mrz import check_digit

H = bytes.fromhex


class ScriptedChip:
    """A card that expects exactly these commands and gives these answers."""

    def __init__(self, script: list[tuple[str, str, int]]) -> None:
        self.script = list(script)
        self.sent: list[str] = []

    def transmit(self, raw: bytes) -> tuple[bytes, int]:
        expected, response, sw = self.script.pop(0)
        self.sent.append(raw.hex().upper())
        assert raw.hex().upper() == expected
        return H(response), sw

    def close(self) -> None:
        pass


# ------------------------------------------------------------------ BAC (Appendix D)

MRZ_INFO = "L898902C<369080619406236"


def test_bac_key_derivation_d2() -> None:
    assert bac.key_seed(MRZ_INFO).hex().upper() == "239AB9CB282DAF66231DC5A4DF6BFBAE"
    k_enc, k_mac = bac.derive_keys(MRZ_INFO)
    assert k_enc.hex().upper() == "AB94FDECF2674FDFB9B391F85D7F76F2"
    assert k_mac.hex().upper() == "7962D9ECE03D1ACD4C76089DCE131543"


def test_mrz_information_from_the_specimen_td3() -> None:
    mrz = ("P<UTOERIKSSON<<ANNA<MARIA<<<<<<<<<<<<<<<<<<<\n"
           "L898902C<3UTO6908061F9406236ZE184226B<<<<<14")
    assert bac.mrz_information(mrz) == MRZ_INFO


def test_mrz_information_of_a_td1_long_document_number() -> None:
    # Doc 9303-5: number D23145890734 -> 'D23145890' '<' and '734' + check digit in optional
    number = "D23145890734"
    digit = check_digit(number)
    line1 = f"I<UTOD23145890<734{digit}<<<<<<<<<<<"
    line2 = "7408122F1204159UTO<<<<<<<<<<<6"
    line3 = "ERIKSSON<<ANNA<MARIA<<<<<<<<<<"
    info = bac.mrz_information("\n".join([line1[:30], line2, line3]))
    assert info == f"{number}{digit}7408122" + "1204159"


def test_bac_mutual_authentication_d3_and_session_keys() -> None:
    chip = ScriptedChip([
        ("0084000008", "4608F91988702212", 0x9000),
        ("0082000028" "72C29C2371CC9BDB65B779B8E8D37B29ECC154AA56A8799FAE2F498F76ED92F2"
         "5F1448EEA8AD90A728",
         "46B9342A41396CD7386BF5803104D7CEDC122B9132139BAF2EEDC94EE178534F"
         "2F2D235D074D7449", 0x9000)])
    randoms = [H("781723860C06C226"), H("0B795240CB7049B01C19B33E32804F0B")]
    session = bac.perform_bac(chip, MRZ_INFO, rng=lambda n: randoms.pop(0))
    assert session.k_enc.hex().upper() == "979EC13B1CBFE9DCD01AB0FED307EAE5"
    assert session.k_mac.hex().upper() == "F1CB1F1FB5ADF208806B89DC579DC1F8"
    assert session.ssc == 0x887022120C06C226
    assert not chip.script


def test_bac_refuses_a_chip_answer_with_a_bad_mac() -> None:
    chip = ScriptedChip([
        ("0084000008", "4608F91988702212", 0x9000),
        ("0082000028" "72C29C2371CC9BDB65B779B8E8D37B29ECC154AA56A8799FAE2F498F76ED92F2"
         "5F1448EEA8AD90A728",
         "46B9342A41396CD7386BF5803104D7CEDC122B9132139BAF2EEDC94EE178534F"
         "2F2D235D074D7448", 0x9000)])
    randoms = [H("781723860C06C226"), H("0B795240CB7049B01C19B33E32804F0B")]
    with pytest.raises(AccessDenied, match="MAC"):
        bac.perform_bac(chip, MRZ_INFO, rng=lambda n: randoms.pop(0))


def _d4_session() -> sm.SecureMessaging:
    return sm.SecureMessaging("3DES", H("979EC13B1CBFE9DCD01AB0FED307EAE5"),
                              H("F1CB1F1FB5ADF208806B89DC579DC1F8"), 0x887022120C06C226)


def test_secure_messaging_3des_d4() -> None:
    s = _d4_session()
    select = s.protect(apdu.parse(H("00A4020C02011E")))
    assert select.hex().upper() == "0CA4020C158709016375432908C044F68E08BF8B92D635FF24F800"
    assert s.unprotect(H("990290008E08FA855A5D4C50A8ED"), 0x9000) == (b"", 0x9000)
    read = s.protect(apdu.Command(0x00, 0xB0, 0x00, 0x00, b"", 4))
    assert read.hex().upper() == "0CB000000D9701048E08ED6705417E96BA5500"
    data, sw = s.unprotect(H("8709019FF0EC34F9922651990290008E08AD55CC17140B2DED"), 0x9000)
    assert (data.hex().upper(), sw) == ("60145F01", 0x9000)


def test_secure_messaging_refuses_a_tampered_response() -> None:
    s = _d4_session()
    s.protect(apdu.parse(H("00A4020C02011E")))
    with pytest.raises(sm.SmError, match="MAC"):
        s.unprotect(H("990290008E08FA855A5D4C50A8EE"), 0x9000)


# ------------------------------------------------------------------ PACE (Appendix G.1)

G1_SCRIPT = [
    ("0022C1A412800A04007F0007020204020283010184010D", "", 0x9000),
    ("10860000027C0000", "7C12801095A3A016522EE98D01E76CB6B98B42C3", 0x9000),
    ("10860000457C43814104"
     "7ACF3EFC982EC45565A4B155129EFBC74650DCBFA6362D896FC70262E0C2CC5E"
     "544552DCB6725218799115B55C9BAA6D9F6BC3A9618E70C25AF71777A9C4922D00",
     "7C43824104"
     "824FBA91C9CBE26BEF53A0EBE7342A3BF178CEA9F45DE0B70AA601651FBA3F57"
     "30D8C879AAA9C9F73991E61B58F4D52EB87A0A0C709A49DC63719363CCD13C54", 0x9000),
    ("10860000457C43834104"
     "2DB7A64C0355044EC9DF190514C625CBA2CEA48754887122F3A5EF0D5EDD301C"
     "3556F3B3B186DF10B857B58F6A7EB80F20BA5DC7BE1D43D9BF850149FBB3646200",
     "7C43844104"
     "9E880F842905B8B3181F7AF7CAA9F0EFB743847F44A306D2D28C1D9EC65DF6DB"
     "7764B22277A2EDDC3C265A9F018F9CB852E111B768B326904B59A0193776F094", 0x9000),
    ("008600000C7C0A8508C2B0BD78D94BA86600", "7C0A86083ABB9674BCE93C08", 0x9000),
]
G1_KEYS = (0x7F4EF07B9EA82FD78AD689B38D0BC78CF21F249D953BC46F4C6E19259C010F99,
           0xA73FB703AC1436A18E0CFA5ABB3F7BEC7A070E7A6788486BEE230C4A22762595)


def _g1_mrz_info() -> str:
    number, birth, expiry = "T22000129", "640812", "101031"
    return (number + check_digit(number) + birth + check_digit(birth)
            + expiry + check_digit(expiry))


def test_pace_generic_mapping_g1() -> None:
    chip = ScriptedChip(G1_SCRIPT)
    keys = list(G1_KEYS)
    info = pace.PaceInfo(f"{pace.ID_PACE}.2.2", 2, 13)
    assert pace.PROTOCOLS[info.protocol].name == "id-PACE-ECDH-GM-AES-CBC-CMAC-128"
    result = pace.perform_pace(chip, info, pace.mrz_password(_g1_mrz_info()),
                               private_key=lambda n: keys.pop(0))
    assert result.session.k_enc.hex().upper() == "F5F0E35C0D7161EE6724EE513A0D9A7F"
    assert result.session.cipher == "AES" and result.session.ssc == 0
    assert not chip.script  # every command sent, byte for byte


def test_pace_refuses_a_chip_token_that_does_not_verify() -> None:
    script = [*G1_SCRIPT[:-1], (G1_SCRIPT[-1][0], "7C0A86083ABB9674BCE93C09", 0x9000)]
    keys = list(G1_KEYS)
    with pytest.raises(AccessDenied, match="token"):
        pace.perform_pace(ScriptedChip(script), pace.PaceInfo(f"{pace.ID_PACE}.2.2", 2, 13),
                          pace.mrz_password(_g1_mrz_info()), private_key=lambda n: keys.pop(0))


def test_pace_refuses_a_mapping_point_off_the_curve() -> None:
    bad = G1_SCRIPT[2][1][:-2] + "55"  # last byte of y changed
    script = [*G1_SCRIPT[:2], (G1_SCRIPT[2][0], bad, 0x9000)]
    keys = list(G1_KEYS)
    with pytest.raises(AccessDenied, match="not on the curve"):
        pace.perform_pace(ScriptedChip(script), pace.PaceInfo(f"{pace.ID_PACE}.2.2", 2, 13),
                          pace.mrz_password(_g1_mrz_info()), private_key=lambda n: keys.pop(0))


# ------------------------------------------------------------------ PACE (Appendix H.1)

H1_S, H1_T = "2923BE84E16CD6AE529049F1F1BBE9EB", "5DD4CBFC96F5453B130D890A1CDBAE32"
H1_SK_IFD = 0xA73FB703AC1436A18E0CFA5ABB3F7BEC7A070E7A6788486BEE230C4A22762595
H1_PK_IFD = ("89CBA23FFE96AA18D824627C3E934E54A9FD0B87A95D1471DC1C0ABFDCD640D4"
             "6755DE9B7B778280B6BEBD57439ADFEB0E21FD4ED6DF42578C13418A59B34C37")
H1_PK_IC = ("67F78E5F7F7686082B293E8D087E056916D0F74BC01A5F8957D0DE45691E51E8"
            "932B69A962B52A0985AD2C0A271EE6A13A8ADDDCD1A3A994B9DED257F4D22753")
H1_SCRIPT = [
    ("0022C1A412800A04007F0007020204040283010184010D", "", 0x9000),
    ("10860000027C0000", "7C128010143DC40C08C8E891FBED7DEDB92B64AD", 0x9000),
    (f"10860000147C128110{H1_T}00", "7C028200", 0x9000),
    (f"10860000457C43834104{H1_PK_IFD}00", f"7C43844104{H1_PK_IC}", 0x9000),
    ("008600000C7C0A8508450F02B86F6A090900", "7C0A860875D4D96E8D5B0308", 0x9000),
]


def test_pace_integrated_mapping_pseudo_random_and_point_h1() -> None:
    protocol = pace.PROTOCOLS[f"{pace.ID_PACE}.4.2"]
    assert protocol.name == "id-PACE-ECDH-IM-AES-CBC-CMAC-128"
    curve = pace.CURVES[13]
    r = pace.pseudo_random(protocol, H(H1_S), H(H1_T), curve.curve.p())
    assert r.hex().upper() == ("E4447E2DFB3586BAC05DDB00156B57FBB2179A3949294C97254189800C517BAA"
                               "8DA0FF397ED8C445D3E421E4FEB57322")
    g = pace.integrated_generator(protocol, curve, H(H1_S), H(H1_T))
    assert (int(g.x()), int(g.y())) == (
        0x8E82D31559ED0FDE92A4D0498ADD3C23BABA94FB77691E31E90AEA77FB17D427,
        0x4C1AE14BD0C3DBAC0C871B7F3608169364437CA30AC243A089D3F266C1E60FAD)


#: H.1 gives K_pi itself ("the MRZ-derived key of the previous example", whose MRZ it does
#: not print); K_pi's derivation from an MRZ is G.1's known answer
H1_K_PI = H("591468CDA83D65219CCCB8560233600F")


def test_pace_integrated_mapping_h1(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pace, "password_key", lambda password, protocol: H1_K_PI)
    chip = ScriptedChip(H1_SCRIPT)
    info = pace.PaceInfo(f"{pace.ID_PACE}.4.2", 2, 13)
    result = pace.perform_pace(chip, info, b"unused: K_pi is given",
                               private_key=lambda n: H1_SK_IFD, terminal_nonce=H(H1_T))
    assert result.session.k_enc.hex().upper() == "0D3FEB33251A6370893D62AE8DAAF51B"
    assert result.session.k_mac.hex().upper() == "B01E89E3D9E8719E586B50B4A7506E0B"
    assert not chip.script


def test_pace_integrated_mapping_refuses_a_mapping_answer_with_data(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pace, "password_key", lambda password, protocol: H1_K_PI)
    script = [*H1_SCRIPT[:2], (H1_SCRIPT[2][0], "7C03820101", 0x9000)]
    with pytest.raises(AccessDenied, match="not empty"):
        pace.perform_pace(ScriptedChip(script), pace.PaceInfo(f"{pace.ID_PACE}.4.2", 2, 13),
                          pace.mrz_password(_g1_mrz_info()), private_key=lambda n: H1_SK_IFD,
                          terminal_nonce=H(H1_T))


def test_point_encoding_needs_p_3_mod_4() -> None:
    assert not pace.PaceInfo(f"{pace.ID_PACE}.4.2", 2, 10).supported  # P-224: p = 1 mod 4
    assert pace.PaceInfo(f"{pace.ID_PACE}.4.2", 2, 12).supported
    with pytest.raises(ValueError, match="3 mod 4"):
        pace.point_encoding(pace.CURVES[10], 5)
    curve = pace.CURVES[12]
    for t in (2, 3, 2**200 + 7, curve.curve.p() - 2):  # each lands on the curve
        point = pace.point_encoding(curve, t)
        assert curve.curve.contains_point(int(point.x()), int(point.y()))
    for t in (1, curve.curve.p() - 1):  # alpha = -1: alpha + alpha^2 = 0, no inverse
        with pytest.raises(ValueError, match="undefined"):
            pace.point_encoding(curve, t)


def test_card_access_round_trip_and_choice() -> None:
    infos = [pace.PaceInfo(f"{pace.ID_PACE}.2.2", 2, 13),
             pace.PaceInfo(f"{pace.ID_PACE}.4.2", 2, 10),  # integrated mapping on P-224
             pace.PaceInfo(f"{pace.ID_PACE}.6.2", 2, 12)]
    parsed = pace.parse_card_access(pace.encode_card_access(infos))
    assert sorted(parsed, key=lambda i: i.protocol) == sorted(infos, key=lambda i: i.protocol)
    assert pace.choose(parsed) == infos[2]  # CAM first: it also authenticates the chip
    assert pace.choose([infos[1]]) is None  # not defined there
    with pytest.raises(ValueError, match="CardAccess"):
        pace.parse_card_access(b"\x31\x05\x30\x03\x06\x01")


# ------------------------------------------------------------------ APDUs and SM plumbing


@pytest.mark.parametrize("raw", ["00A4020C02011E", "00B0000004", "00B0000000",
                                 "0088000008" "0102030405060708" "00", "00B00000000800",
                                 "00B1000000000354017F0000"])
def test_apdu_parse_encode_round_trip(raw: str) -> None:
    command = apdu.parse(H(raw))
    assert command.encode().hex().upper() == raw.upper()


def test_apdu_rejects_a_body_that_does_not_match_its_length() -> None:
    with pytest.raises(apdu.ApduError):
        apdu.parse(H("00A4020C05011E"))


@pytest.mark.parametrize("cipher,size", [("3DES", 16), ("AES", 16), ("AES", 24), ("AES", 32)])
@pytest.mark.parametrize("ins,data,le", [(0xB0, b"", 0xDF), (0xB1, b"\x54\x02\x80\x00", 1024),
                                         (0xA4, b"\x01\x1e", None)])
def test_secure_messaging_both_ends_agree(cipher: sm.CipherName, size: int, ins: int,
                                          data: bytes, le: int | None) -> None:
    k_enc, k_mac = sm.session_keys(b"shared secret", cipher, size)
    terminal = sm.SecureMessaging(cipher, k_enc, k_mac, 7)
    chip = sm.SecureMessaging(cipher, k_enc, k_mac, 7)
    command = apdu.Command(0x00, ins, 0x01, 0x02, data, le)
    opened = chip.open_command(terminal.protect(command))
    assert opened == command
    body = bytes(range(200)) * 3
    response = chip.seal_response(ins, body, 0x9000)
    assert terminal.unprotect(response[:-2], int.from_bytes(response[-2:], "big")) == \
        (body, 0x9000)
    tampered = bytearray(terminal.protect(command))
    tampered[6] ^= 1
    with pytest.raises(sm.SmError):
        chip.open_command(bytes(tampered))
