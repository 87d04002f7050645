"""The row's keys and certificates (``gate pki``), and the broker's configuration.

One folder holds a row's whole set; each part is copied to the machine that needs it::

    ca.pem  ca.key                 the row's CA (ca.key stays offline, with this folder)
    broker/  broker.pem broker.key ca.pem nats-server.conf
    station/ station.pem station.key ca.pem signing.key     (signing.key: Ed25519, signs
                                                             every command; never leaves)
    lanes/<lane>/ lane.pem lane.key ca.pem station.pub      (station.pub: the pinned key)

Every connection to the broker is mutual TLS; the broker maps each client certificate to
a user (``verify_and_map``: the subject ``CN=<name>,O=egate-row``) with per-subject
permissions: a lane may publish only its own state and cases and may subscribe only to
its own command subject, the station's heartbeat and its own reply inboxes; only the
station may send commands. A client without a certificate of this CA is refused.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gate.row.commands import StationSigner, check_lane_id

ORG = "egate-row"
STATION = "station"
#: certificates last this long; the CA ten times as long
VALID_DAYS = 398


def inbox_prefix(name: str) -> str:
    """Each client's reply inboxes live under its own prefix (its permissions name it)."""
    return f"_INBOX.{name}"


def _subject(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORG)])


def user_of(common_name: str) -> str:
    """The broker's user for a certificate: its subject as RFC 4514 (nats verify_and_map)."""
    return _subject(common_name).rfc4514_string()


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if private:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
    else:
        path.write_bytes(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class _Ca:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @classmethod
    def create(cls) -> _Ca:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        name = _subject("e-gate row CA")
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=VALID_DAYS * 10))
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(
                    digital_signature=False, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(key, cert)

    @classmethod
    def load(cls, folder: Path) -> _Ca:
        key = serialization.load_pem_private_key((folder / "ca.key").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("ca.key is not the row CA's EC key")
        return cls(key, x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes()))

    def issue(self, common_name: str, *, server_hosts: Sequence[str] = ()) -> tuple[bytes, bytes]:
        """(certificate PEM, key PEM) for a client, or the broker with its host names."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server_hosts else [
            ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (x509.CertificateBuilder().subject_name(_subject(common_name))
                   .issuer_name(self.cert.subject).public_key(key.public_key())
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None),
                                  critical=True)
                   .add_extension(x509.ExtendedKeyUsage(usage), critical=False))
        if server_hosts:
            names: list[x509.GeneralName] = []
            for host in server_hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def _lane_permissions(lane: str) -> dict[str, object]:
    return {
        "publish": {"allow": [f"gate.lane.{lane}.state", f"gate.cases.{lane}"]},
        "subscribe": {"allow": [f"gate.cmd.{lane}", "gate.station.heartbeat",
                                f"{inbox_prefix('lane-' + lane)}.>"]},
        "allow_responses": True,  # answers to the commands it was sent, nothing else
    }


def broker_config(folder: Path, lanes: Sequence[str], *, port: int, store_dir: Path,
                  host: str = "127.0.0.1") -> str:
    """``nats-server.conf`` for the row: mTLS, certificate = user, per-subject permissions
    (JSON is valid nats-server configuration syntax)."""
    broker = folder / "broker"
    users: list[dict[str, object]] = [
        {"user": user_of(STATION), "permissions": {"publish": {"allow": [">"]},
                                                   "subscribe": {"allow": [">"]}}}]
    users += [{"user": user_of(lane), "permissions": _lane_permissions(lane)} for lane in lanes]
    config = {
        "host": host, "port": port,
        "tls": {"cert_file": str(broker / "broker.pem"), "key_file": str(broker / "broker.key"),
                "ca_file": str(broker / "ca.pem"), "verify_and_map": True, "timeout": 2},
        "authorization": {"users": users},
        "jetstream": {"store_dir": str(store_dir)},
    }
    return json.dumps(config, indent=2)


@dataclass(frozen=True)
class RowPki:
    folder: Path

    def lane_dir(self, lane: str) -> Path:
        return self.folder / "lanes" / lane

    @property
    def station_dir(self) -> Path:
        return self.folder / "station"

    def tls_of(self, name: str) -> tuple[str, str, str]:
        """(ca, cert, key) paths for ``station`` or a lane id."""
        if name == STATION:
            d = self.station_dir
            return str(d / "ca.pem"), str(d / "station.pem"), str(d / "station.key")
        d = self.lane_dir(name)
        return str(d / "ca.pem"), str(d / "lane.pem"), str(d / "lane.key")


def lanes_in(folder: Path) -> list[str]:
    lanes = folder / "lanes"
    return sorted(p.name for p in lanes.iterdir() if (p / "lane.pem").exists()) \
        if lanes.is_dir() else []


def write_broker_config(folder: Path) -> Path:
    """``broker/nats-server.conf`` for every lane in the folder (after init and each lane
    added), with the port, host and store of ``broker/broker.json``."""
    settings = json.loads((folder / "broker" / "broker.json").read_text())
    path = folder / "broker" / "nats-server.conf"
    _write(path, broker_config(folder, lanes_in(folder), port=int(settings["port"]),
                               store_dir=Path(settings["store_dir"]),
                               host=str(settings["host"])).encode())
    return path


def init_row(folder: Path, lanes: Sequence[str], hosts: Sequence[str] = ("127.0.0.1",
                                                                          "localhost"),
             *, port: int = 4222, listen: str = "0.0.0.0",
             store_dir: Path | None = None) -> RowPki:
    """A new CA, the broker's, the station's and each lane's certificate, the station's
    signing key, the broker's configuration; refuses a folder that already has a CA
    (never overwrites keys)."""
    if (folder / "ca.key").exists():
        raise FileExistsError(f"{folder} already holds a row CA (gate pki lane adds lanes)")
    ca = _Ca.create()
    ca_pem = ca.cert.public_bytes(serialization.Encoding.PEM)
    _write(folder / "ca.pem", ca_pem)
    _write(folder / "ca.key", _key_pem(ca.key), private=True)
    cert, key = ca.issue("broker", server_hosts=hosts)
    _write(folder / "broker" / "broker.pem", cert)
    _write(folder / "broker" / "broker.key", key, private=True)
    _write(folder / "broker" / "ca.pem", ca_pem)
    cert, key = ca.issue(STATION)
    station = folder / "station"
    _write(station / "station.pem", cert)
    _write(station / "station.key", key, private=True)
    _write(station / "ca.pem", ca_pem)
    signer = StationSigner.generate()
    _write(station / "signing.key", signer.private_pem(), private=True)
    _write(station / "station.pub", signer.public_pem())
    _write(folder / "broker" / "broker.json", json.dumps({
        "port": port, "host": listen,
        "store_dir": str(store_dir or folder / "broker" / "jetstream")}).encode())
    for lane in lanes:
        add_lane(folder, lane)
    write_broker_config(folder)
    return RowPki(folder)


def add_lane(folder: Path, lane: str) -> Path:
    """A lane's certificate and the station's public key, in lanes/<lane>/."""
    check_lane_id(lane)
    ca = _Ca.load(folder)
    out = folder / "lanes" / lane
    if (out / "lane.key").exists():
        raise FileExistsError(f"{out} already has a key")
    cert, key = ca.issue(lane)
    _write(out / "lane.pem", cert)
    _write(out / "lane.key", key, private=True)
    _write(out / "ca.pem", ca.cert.public_bytes(serialization.Encoding.PEM))
    _write(out / "station.pub", (folder / "station" / "station.pub").read_bytes())
    if (folder / "broker" / "broker.json").exists():
        write_broker_config(folder)
    return out
