"""One settings object for the whole deployment.

Sources, later ones winning: built-in defaults, a TOML file (``BEAMLINE_LS_CONFIG`` or
``~/.config/beamline-ls/config.toml``), environment variables (``BEAMLINE_LS_DATA_DIR``,
``BEAMLINE_LS_PREFIX``), then explicit arguments. The data directory layout is fixed
here so the IOC, the RunEngine session and data users agree on it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beamline_ls.kafka_stream import KafkaSettings, parse_kafka
from beamline_ls.zmq_stream import check_address

DEFAULT_PREFIX = "BLS:"


def _default_config_file() -> Path | None:
    env = os.environ.get("BEAMLINE_LS_CONFIG")
    if env:
        return Path(env)
    candidate = Path.home() / ".config" / "beamline-ls" / "config.toml"
    return candidate if candidate.exists() else None


@dataclass
class Settings:
    """Deployment settings.

    Attributes
    ----------
    data_dir:
        Root of everything written: camera frames, catalog, persisted RunEngine state.
    prefix:
        EPICS PV prefix of this microscope (one prefix per microscope).
    hardware:
        Per-device backend configuration (``{"camera": {"backend": "sim"}, ...}``).
    mirror_dir:
        Slow destination (e.g. a network share) that the camera IOC copies every closed
        frame file to, verified; the catalog then reads the copy. None: no copies.
    access:
        Who may write which PV (``[access]`` table, see :mod:`beamline_ls.iocs.access`);
        empty: writes from this host only.
    mirror_roots:
        The only directories (and their subdirectories) that ``HDF1:MirrorPath`` may
        name. The IOC runs with rights a remote client should not borrow, so copies go
        only where the deployment said; ``mirror_dir`` is always allowed.
    path_map:
        For a catalog served from another host (``beamline-ls serve``): where that host
        sees the directories the acquisition host wrote (``[path_map]`` table,
        ``"/data/lightsheet" = "/mnt/lightsheet"``). The catalog keeps the acquisition
        host's paths; the server reads frames through this map.
    kafka:
        Every document also to a Kafka topic (``[kafka]`` table, see
        :mod:`beamline_ls.kafka_stream`); None: no Kafka.
    """

    data_dir: Path = field(default_factory=lambda: Path.home() / "beamline-ls-data")
    prefix: str = DEFAULT_PREFIX
    hardware: dict[str, dict[str, Any]] = field(default_factory=dict)
    mirror_dir: Path | None = None
    mirror_roots: list[Path] = field(default_factory=list)
    access: dict[str, Any] = field(default_factory=dict)  # the IOC's write rules
    path_map: dict[Path, Path] = field(default_factory=dict)
    catalog_database: str | None = None
    zmq_publish: str | None = None
    kafka: KafkaSettings | None = None

    @property
    def catalog_uri(self) -> str:
        """SQLAlchemy URI of the catalog database (asyncpg driver for PostgreSQL)."""
        if self.catalog_database is None:
            return f"sqlite:///{self.catalog_dir / 'catalog.db'}"
        scheme, rest = self.catalog_database.split("://", 1)
        return f"postgresql+asyncpg://{rest}" if scheme == "postgresql" else \
            self.catalog_database

    @property
    def catalog_is_sqlite(self) -> bool:
        return self.catalog_database is None

    @property
    def allowed_mirror_roots(self) -> list[Path]:
        """Every destination root copies may go to: ``mirror_roots`` and ``mirror_dir``."""
        roots = list(self.mirror_roots)
        if self.mirror_dir is not None:
            roots.append(self.mirror_dir)
        return list(dict.fromkeys(roots))

    @property
    def frames_dir(self) -> Path:
        """Where the camera IOC writes HDF5 frame files."""
        return self.data_dir / "frames"

    @property
    def catalog_dir(self) -> Path:
        """Embedded catalog: SQLite metadata, DuckDB tables, array storage."""
        return self.data_dir / "catalog"

    @property
    def runs_dir(self) -> Path:
        """One self-describing HDF5 file per run (``runs/<date>/<scan_id>-<uid>.h5``)."""
        return self.data_dir / "runs"

    @property
    def autosave_dir(self) -> Path:
        """The IOC's saved settings that must survive a restart (motor calibrations)."""
        return self.data_dir / "autosave"

    @property
    def state_dir(self) -> Path:
        """Persisted RunEngine metadata (scan_id survives restarts)."""
        return self.data_dir / "state"

    def ensure_dirs(self, writable: tuple[Path, ...] = ()) -> None:
        """Create the data directory's folders; a data directory that cannot hold them
        (read-only, not permitted, a file in the way) is refused naming the folder and
        the cause, not with a traceback from the first write. ``writable``: the folders
        the caller itself writes (the IOC: frames, state, autosave), checked too; the
        IOC and the sessions may run as different users."""
        for d in (self.frames_dir, self.catalog_dir, self.state_dir, self.autosave_dir):
            try:
                d.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RuntimeError(f"the data directory {self.data_dir} cannot be used: "
                                   f"{d} cannot be created ({exc.strerror or exc})") from exc
            if d in writable and not os.access(d, os.W_OK | os.X_OK):
                why = "a read-only file system" if _read_only(d) else "no write permission"
                raise RuntimeError(f"the data directory {self.data_dir} cannot be used: "
                                   f"{d} is not writable ({why})")


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def parse_path_map(table: Any, where: str) -> dict[Path, Path]:
    """``{"/acquisition/path": "/path/here"}`` with absolute paths on both sides."""
    if not isinstance(table, dict):
        raise ValueError(f"{where} must map acquisition-host directories to directories "
                         f"on this host, got {table!r}")
    out: dict[Path, Path] = {}
    for src, dst in table.items():
        if not isinstance(dst, str) or not Path(src).is_absolute() \
                or not Path(dst).is_absolute():
            raise ValueError(f"{where}: {src!r} = {dst!r}: both must be absolute paths")
        out[Path(src)] = Path(dst)
    return out


def check_database(uri: Any, where: str) -> str:
    """A PostgreSQL URI (``postgresql://user@host:port/db``) for the catalog."""
    if not isinstance(uri, str) or not uri.startswith(("postgresql://",
                                                       "postgresql+asyncpg://")):
        raise ValueError(f"{where} must be a PostgreSQL URI such as "
                         f"postgresql://user@host:5432/lightsheet, got {uri!r}")
    return uri


#: what a configuration file may hold at its top level, and the type of each
TOP_LEVEL: dict[str, type] = {
    "data_dir": str, "prefix": str, "mirror_dir": str, "mirror_roots": list,
    "zmq_publish": str, "catalog_database": str, "hardware": dict, "access": dict,
    "path_map": dict, "kafka": dict,
}


def _read_toml(path: Path) -> dict:
    """The file's table, its top-level keys checked: a misspelt key (``dat_dir``)
    would otherwise be ignored and the data written to the default directory."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 text; this is some other file
        raise ValueError(f"{path}: not valid TOML: not UTF-8 text (byte "
                         f"{exc.start}: {exc.reason})") from None
    unknown = sorted(set(doc) - set(TOP_LEVEL))
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {', '.join(unknown)} (allowed at "
                         f"the top level: {', '.join(TOP_LEVEL)})")
    for key, kind in TOP_LEVEL.items():
        if key in doc and not isinstance(doc[key], kind):
            what = {str: "a string", list: "a list", dict: "a table ([" + key + "])"}[kind]
            raise ValueError(f"{path}: {key} must be {what}, got {doc[key]!r}")
    return doc


def load_settings(
    config_file: str | Path | None = None,
    *,
    data_dir: str | Path | None = None,
    prefix: str | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults, TOML, environment and arguments."""
    settings = Settings()
    path = Path(config_file) if config_file else _default_config_file()
    if path is not None:
        if not path.exists():
            raise FileNotFoundError(f"configuration file not found: {path}")
        doc = _read_toml(path)
        if "data_dir" in doc:
            settings.data_dir = Path(doc["data_dir"]).expanduser()
        if "prefix" in doc:
            settings.prefix = str(doc["prefix"])
        settings.hardware = dict(doc.get("hardware", {}))
        if "mirror_dir" in doc:
            settings.mirror_dir = Path(doc["mirror_dir"]).expanduser()
        roots = doc.get("mirror_roots", [])
        if not isinstance(roots, list) or not all(isinstance(r, str) for r in roots):
            raise ValueError(f"{path}: mirror_roots must be a list of directory paths "
                             f"(got {roots!r})")
        settings.mirror_roots = [Path(r).expanduser() for r in roots]
        settings.access = dict(doc.get("access", {}))
        settings.path_map = parse_path_map(doc.get("path_map", {}), f"{path}: [path_map]")
        if "zmq_publish" in doc:
            settings.zmq_publish = check_address(str(doc["zmq_publish"]),
                                                 f"{path}: zmq_publish")
        if "kafka" in doc:
            settings.kafka = parse_kafka(doc["kafka"], f"{path}: [kafka]")
        if "catalog_database" in doc:
            settings.catalog_database = check_database(doc["catalog_database"],
                                                       f"{path}: catalog_database")
    if os.environ.get("BEAMLINE_LS_DATA_DIR"):
        settings.data_dir = Path(os.environ["BEAMLINE_LS_DATA_DIR"])
    if os.environ.get("BEAMLINE_LS_PREFIX"):
        settings.prefix = os.environ["BEAMLINE_LS_PREFIX"]
    if os.environ.get("BEAMLINE_LS_MIRROR_DIR"):
        settings.mirror_dir = Path(os.environ["BEAMLINE_LS_MIRROR_DIR"])
    if os.environ.get("BEAMLINE_LS_ZMQ_PUBLISH"):
        settings.zmq_publish = check_address(os.environ["BEAMLINE_LS_ZMQ_PUBLISH"],
                                             "BEAMLINE_LS_ZMQ_PUBLISH")
    if os.environ.get("BEAMLINE_LS_CATALOG_DATABASE"):
        settings.catalog_database = check_database(os.environ["BEAMLINE_LS_CATALOG_DATABASE"],
                                                   "BEAMLINE_LS_CATALOG_DATABASE")
    if data_dir is not None:
        settings.data_dir = Path(data_dir)
    if prefix is not None:
        settings.prefix = prefix
    settings.data_dir = settings.data_dir.expanduser().resolve()
    if settings.mirror_dir is not None:
        settings.mirror_dir = settings.mirror_dir.expanduser().resolve()
        if settings.mirror_dir == settings.frames_dir:
            raise ValueError(f"mirror_dir {settings.mirror_dir} is the staging directory itself")
    for root in settings.mirror_roots:
        if not root.is_absolute():
            raise ValueError(f"mirror_roots entry {str(root)!r} is not an absolute path")
    settings.mirror_roots = [r.resolve() for r in settings.mirror_roots]
    for root in settings.mirror_roots:
        if root == settings.frames_dir or root in settings.frames_dir.parents \
                or settings.frames_dir in root.parents:
            raise ValueError(f"mirror_roots entry {root} overlaps the staging directory "
                             f"{settings.frames_dir}")
    if not settings.prefix or ":" not in settings.prefix:
        raise ValueError(f"prefix must be non-empty and end with ':' (got {settings.prefix!r})")
    return settings
