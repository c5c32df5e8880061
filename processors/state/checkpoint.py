"""Engine state in a file, so a restarted sidecar resumes instead of warming up again.

A weekly profile needs two weeks of data; losing it at every restart or rollout would make
the detector useless where it matters most. The whole learned state (series index, detector
and calibration arrays, alert state, counter baselines, open windows, deploys, silences,
multivariate models) is saved from each component's ``state_dict()``.

The file is an ``.npz`` archive (a zip of ``.npy`` arrays, CRC-checked member by member)
and nothing else, read with ``allow_pickle=False``: a checkpoint is data and cannot run
code, whoever wrote it. Its members, in order:

- ``header``: JSON (UTF-8 bytes): ``magic``, the format ``version``, a ``settings``
  fingerprint and the ingest ``clock`` at the save;
- ``state``: JSON, the state tree as ``processors.state.codec`` encodes it;
- ``a0``, ``a1``...: the arrays the state refers to.

Members are stored, not deflated. The arrays are written from the engine's own memory
(``SlotArrays`` hand them out under ``no_copies``) and read straight into the arrays the
restored engine keeps, each checked against its CRC: neither side holds a second copy of
the state.

A checkpoint written under other settings (other detector rules, windows...) is refused
rather than misread; so is one of a future format. Older formats are upgraded by
``processors.state.migrations``. River-based multivariate models (``dbstream``,
``one_class_svm``) cannot be saved without pickle: they are left out and restart cold.

The ingest clock (series TTL) is not event time and restarts with the process: restored
"last seen" times are shifted so each series keeps the idle time it had at the checkpoint.
"""

from __future__ import annotations

import gc
import json
import struct
import zipfile
import zlib
from typing import IO, Any

import numpy as np

from otel_anomaly.processors.engine import Engine
from otel_anomaly.processors.series.slot_arrays import no_copies
from otel_anomaly.processors.settings import EngineSettings
from otel_anomaly.processors.state.codec import decode, encode
from otel_anomaly.processors.state.migrations import FIRST_FORMAT, upgrade

MAGIC = "otel-anomaly-checkpoint"
FORMAT = 21  # bump (and add a migration) whenever a component's saved state changes shape
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"otel-anomaly-checkpoint\n"  # formats 1 to 3: a pickle behind this line


class CheckpointError(ValueError):
    """A checkpoint that cannot be restored: corrupt, foreign, future, or of other settings."""


# Settings read afresh after a restore, so changing them keeps the learned state.
_RETUNABLE = ("clock", "series_ttl_s", "deploy_grace_s", "latest_event_time", "silence_after_s")


def fingerprint(settings: EngineSettings) -> str:
    """What the learned state depends on: detectors and routing, windows, limits.

    Alert thresholds are left out (they can be retuned without losing what was learned);
    so are the TTL and the deploy grace period.
    """
    fields: dict[str, Any] = {
        name: getattr(settings, name)
        for name in settings.__dataclass_fields__
        if name not in _RETUNABLE
    }
    # The tail keys size the calibration state; the other alert keys can change freely.
    fields["rules"] = [(r.name, r.match, r.detector, sorted(dict(r.params).items()),
                        r.alert.tail_calibration, r.alert.tail_quantile, r.alert.tail_window)
                       for r in settings.rules]
    return repr(sorted(fields.items()))


def _json_member(value: Any) -> np.ndarray[Any, np.dtype[np.uint8]]:
    return np.frombuffer(json.dumps(value).encode(), np.uint8)


def dump(engine: Engine, out: IO[bytes]) -> None:
    """Write the engine's learned state to ``out`` (a binary file, written front to back).

    Streamed: the arrays are the engine's own (not copies), each written into its member
    in slices; only the JSON document is built whole. Call it on the thread that owns the
    engine, which must not change until it returns.
    """
    with no_copies():
        doc, arrays = encode(engine.state_dict())
    header = {"magic": MAGIC, "version": FORMAT, "settings": fingerprint(engine.settings),
              "clock": engine.settings.clock()}
    # Stored, not deflated: zlib would take several times longer than the disk.
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        # ``header`` and ``state`` go first: a reader checks them before touching any array.
        _write_member(archive, "header", _json_member(header))
        _write_member(archive, "state", _json_member(doc))
        for name, array in arrays.items():
            _write_member(archive, name, array)


_SLICE_BYTES = 16 << 20


def _write_member(archive: zipfile.ZipFile, name: str, array: np.ndarray[Any, Any]) -> None:
    """``array`` as the ``.npy`` member ``name``, written from its memory in slices."""
    array = np.ascontiguousarray(array)
    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_2_0(
            member, np.lib.format.header_data_from_array_1_0(array))
        data = _bytes_of(array)
        for start in range(0, len(data), _SLICE_BYTES):
            member.write(data[start:start + _SLICE_BYTES])


def _bytes_of(array: np.ndarray[Any, Any]) -> memoryview:
    """The memory of a C-contiguous ``array``, as bytes (no copy)."""
    flat: Any = array.reshape(-1).view(np.uint8)
    return memoryview(flat)


def load(source: IO[bytes], settings: EngineSettings) -> Engine:
    """An engine with the state saved in ``source`` (a seekable binary file), under ``settings``.

    Raises
    ------
    CheckpointError
        If ``source`` is not a whole checkpoint of a known format written under equal
        settings.
    """
    start = source.read(len(_PICKLE_MAGIC))
    source.seek(0)
    if start.startswith(_PICKLE_MAGIC):
        msg = "a checkpoint of an older, pickle-based format (3 or earlier): not loaded"
        raise CheckpointError(msg)
    if not start.startswith(_ZIP_MAGIC):
        msg = "not an otel-anomaly checkpoint (not an npz archive)"
        raise CheckpointError(msg)
    # Millions of small objects (keys, labels) are built and none is garbage: collections
    # would only scan them again and again.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _load(source, settings)
    finally:
        if collecting:
            gc.enable()


def _load(source: IO[bytes], settings: EngineSettings) -> Engine:
    try:
        with zipfile.ZipFile(source) as archive:
            members = _Members(archive, source)
            header, doc = _read_head(members)
            _check_header(header, settings)
            state = decode(doc, members)
    except (CheckpointError, MemoryError):  # too large for this machine is not corrupt
        raise
    except Exception as exc:  # noqa: BLE001 - a corrupt file raises what its parser does
        # zipfile, numpy's .npy header parser and json raise many types on a flipped bit
        # (NotImplementedError for a compression method, SyntaxError and tokenize.TokenError
        # from the header's literal); each is a file to set aside, not a failed start-up.
        msg = f"checkpoint is truncated or corrupt ({type(exc).__name__}: {exc})"
        raise CheckpointError(msg) from None
    return _restore(state, int(header["version"]), float(header["clock"]), settings)


class _Members:
    """The ``.npy`` members of a checkpoint by name, each read when asked for.

    A stored (not deflated) member is read from the file straight into its array, then
    its CRC checked over that array: no intermediate copy. Object arrays are refused
    (they would need pickle).
    """

    _LOCAL_HEADER = struct.Struct("<4s22xHH")

    def __init__(self, archive: zipfile.ZipFile, source: IO[bytes]) -> None:
        self._archive = archive
        self._source = source
        self._infos = {info.filename.removesuffix(".npy"): info
                       for info in archive.infolist() if info.filename.endswith(".npy")}
        self.files = list(self._infos)

    def __getitem__(self, name: str) -> np.ndarray[Any, Any]:
        info = self._infos[name]
        if info.compress_type != zipfile.ZIP_STORED:
            with self._archive.open(info) as member:
                return np.lib.format.read_array(member, allow_pickle=False)
        return self._read_stored(info)

    def _read_stored(self, info: zipfile.ZipInfo) -> np.ndarray[Any, Any]:
        source = self._source
        source.seek(info.header_offset)
        magic, name_len, extra_len = self._LOCAL_HEADER.unpack(
            source.read(self._LOCAL_HEADER.size))
        if magic != b"PK\x03\x04":
            msg = f"member {info.filename!r} has no local header"
            raise zipfile.BadZipFile(msg)
        start = info.header_offset + self._LOCAL_HEADER.size + name_len + extra_len
        source.seek(start)
        version = np.lib.format.read_magic(source)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(source)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(source)
        else:
            msg = f"member {info.filename!r} is of .npy version {version}"
            raise ValueError(msg)
        if dtype.hasobject:
            msg = f"member {info.filename!r} is an object array (pickle): refused"
            raise ValueError(msg)
        head = source.tell() - start
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if head + size != info.file_size:
            msg = f"member {info.filename!r} does not hold the array its header describes"
            raise ValueError(msg)
        array = np.empty(shape, dtype, order="F" if fortran else "C")
        # A view of the array's memory, in the order it is saved (F-ordered: its transpose).
        data = _bytes_of(array.T if fortran else array)
        source.seek(start)
        crc = zlib.crc32(source.read(head))
        for at in range(0, size, _SLICE_BYTES):
            chunk = data[at:at + _SLICE_BYTES]
            if source.readinto(chunk) != len(chunk):  # type: ignore[attr-defined]
                msg = f"member {info.filename!r} is truncated"
                raise EOFError(msg)
            crc = zlib.crc32(chunk, crc)
        if crc != info.CRC:
            msg = f"bad CRC-32 for member {info.filename!r}"
            raise zipfile.BadZipFile(msg)
        return array


def _read_head(archive: Any) -> tuple[dict[str, Any], Any]:
    if archive.files[:2] != ["header", "state"]:
        msg = f"not an otel-anomaly checkpoint (members {archive.files[:3]})"
        raise CheckpointError(msg)
    try:
        header = json.loads(archive["header"].tobytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        msg = f"checkpoint header is unreadable ({exc})"
        raise CheckpointError(msg) from None
    if not isinstance(header, dict) or header.get("magic") != MAGIC:
        msg = "not an otel-anomaly checkpoint (bad header)"
        raise CheckpointError(msg)
    return header, json.loads(archive["state"].tobytes())


def _check_header(header: dict[str, Any], settings: EngineSettings) -> None:
    version = header.get("version")
    if not isinstance(version, int) or version < FIRST_FORMAT:
        msg = f"checkpoint format {version!r} is foreign (this version reads {FIRST_FORMAT}+)"
        raise CheckpointError(msg)
    if version > FORMAT:
        msg = (f"checkpoint format {version} is newer than this version reads ({FORMAT}); "
               "written by a later release")
        raise CheckpointError(msg)
    if header.get("settings") != fingerprint(settings):
        msg = ("checkpoint was written under other settings (detector rules, windows, limits "
               "or multivariate model differ)")
        raise CheckpointError(msg)
    clock = header.get("clock")
    if (isinstance(clock, bool) or not isinstance(clock, (int, float))
            or not -_LONGEST_CLOCK_S < clock < _LONGEST_CLOCK_S):
        # A NaN clock made every restored series immortal (never expired by the TTL).
        msg = f"checkpoint header has no finite ingest clock; got {clock!r}"
        raise CheckpointError(msg)


_LONGEST_CLOCK_S = 1e15
"""A saved ingest clock (monotonic seconds) beyond this is no clock."""


def _restore(state: Any, version: int, clock: float, settings: EngineSettings) -> Engine:
    engine = Engine(settings)
    try:
        # The arrays were read for this engine alone: it keeps them rather than copies.
        with no_copies():
            engine.load_state_dict(upgrade(state, version, FORMAT))
        engine.stats()  # reads every component: a state that does not hang together fails here
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any part of a foreign state may refuse it
        msg = (f"checkpoint state does not fit this version's engine "
               f"({type(exc).__name__}: {exc})")
        raise CheckpointError(msg) from None
    # Retunable settings (_RETUNABLE, alert policies) are the new engine's own: components
    # keep them out of their saved state.
    engine.shift_ingest_clock(settings.clock() - clock)
    return engine
