"""Atomic writes and small file helpers.

Every artefact is written to a temporary sibling and renamed into place, so an interrupted run
never leaves a half-written file under a final name that Snakemake (or a user) takes as done.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pandas costs ~0.3 s to import; per-slide jobs (embedding) never need it
    import pandas as pd
    import pyarrow as pa


def _private_folder(final: Path) -> Path:
    """A new folder next to ``final`` that only this process's user can enter (0700), created
    exclusively under an unpredictable name (``mkdtemp``).

    Why a folder and not a predictable sibling name: in a group-writable results folder another
    user could plant a symlink under a name known in advance (``.x.tmp-<pid>``) and have the write
    follow it into any file this job can write. Nobody else can create anything inside this folder,
    and writers (pyarrow, safetensors, h5py, PIL) still get an ordinary path with the final name's
    suffix."""
    import tempfile

    stem = final.name.encode()[:60].decode(errors="ignore")
    return Path(tempfile.mkdtemp(prefix=f".{stem}.tmp-", dir=final.parent))


def file_mode() -> int:
    """The mode an ordinary new file gets under this process's umask (0666 & ~umask).

    Read from /proc where it can be (setting and restoring the umask is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def project_path(path: str | os.PathLike, resolve: bool = True) -> str:
    """One spelling of a path: relative to the working folder when it lies inside it.

    Inside or not is judged on real paths (a cluster's /home link to /gpfs does not matter).
    ``resolve``: links are followed and a path outside is given absolute and real (the slide
    index: one file reached two ways is one entry). Without it (configured paths) a relative
    spelling is only normalised (``./results/`` -> ``results``, ``../shared/x`` stays), and an
    absolute one outside the working folder stays as written."""
    if not resolve and not os.path.isabs(path):
        return os.path.normpath(path)
    p = os.path.abspath(path)
    real = os.path.realpath(p) if resolve else os.path.join(os.path.realpath(os.path.dirname(p)), os.path.basename(p))
    try:
        rel = Path(real).relative_to(os.path.realpath(os.getcwd()))
    except ValueError:
        return real if resolve else os.path.normpath(p)
    return str(rel)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    The file is given the umask's mode before the rename, whatever the writer chose: safetensors
    writes 0600, which locks the other members of a shared project out of the owner's models."""
    import shutil

    final = Path(path)
    if final.is_dir():
        raise IsADirectoryError(21, "is a folder; give a file path", str(final))
    final.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder = _private_folder(final)
    except OSError as exc:  # name the file asked for, not the temporary folder
        raise type(exc)(exc.errno, exc.strerror, str(final)) from None
    tmp = folder / final.name
    try:
        yield tmp
        if tmp.is_file() and not tmp.is_symlink():
            os.chmod(tmp, file_mode())
        os.replace(tmp, final)
    except OSError as exc:  # name the file asked for, not the temporary one
        if exc.filename is not None and Path(str(exc.filename)).parent == folder:
            raise type(exc)(exc.errno, exc.strerror, str(final)) from None
        raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


TEXT_SUFFIXES = (".csv", ".tsv", ".txt", ".csv.gz", ".tsv.gz", ".json", ".xlsx")


def write_parquet(df: pd.DataFrame, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
    """Write ``df`` as parquet atomically; ``metadata`` goes into the schema's key-value metadata.
    A text-table name (``x.csv``) is refused: parquet bytes under it fool every later reader."""
    import pyarrow as pa

    write_arrow_table(pa.Table.from_pandas(df, preserve_index=False), path, metadata)


def write_arrow_table(table: pa.Table, path: str | os.PathLike, metadata: dict[str, Any] | None = None) -> None:
    """:func:`write_parquet` of a pyarrow table (per-slide jobs write theirs without pandas)."""
    import pyarrow.parquet as pq

    from lego.errors import InputError

    if str(path).lower().endswith(TEXT_SUFFIXES):
        raise InputError(f"{path}: this output is a parquet table; name it .parquet")
    if metadata:
        merged = dict(table.schema.metadata or {})
        merged.update({f"lego.{k}".encode(): json.dumps(v).encode() for k, v in metadata.items()})
        table = table.replace_schema_metadata(merged)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_parquet_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Return the ``lego.*`` key-value metadata written by :func:`write_parquet`."""
    import pyarrow.parquet as pq

    raw = pq.read_schema(path).metadata or {}
    return {k.decode()[5:]: json.loads(v) for k, v in raw.items() if k.startswith(b"lego.")}


def read_json(path: str | os.PathLike, kind: type = dict) -> Any:
    """A JSON file of the expected top-level type; any problem is one InputError naming the file."""
    from lego.errors import InputError

    try:
        obj = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found; run the step that writes it") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not valid JSON ({exc}); re-run the step that wrote it") from None
    if not isinstance(obj, kind):
        raise InputError(f"{path}: expected a JSON {kind.__name__}, found {type(obj).__name__}; re-run the step that wrote it")
    return obj


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def copy_atomic(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy ``src`` to ``dst`` through a temporary name, so ``dst`` is whole or absent."""
    import shutil

    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def write_tsv(df: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``df`` as a tab-separated table atomically (text under a binary table's name is refused)."""
    from lego.errors import InputError

    if str(path).lower().endswith((".parquet", ".pq", ".h5", ".feather")):
        raise InputError(f"{path}: this output is a tab-separated text table; name it .tsv")
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# The tables one stage writes and another reads: the columns a reader relies on, and the command
# that writes them (named in the error, so a hand-made or stale file says how to remake it).
TABLES: dict[str, tuple[tuple[str, ...], str]] = {
    "labels": (("patient_id",), "lego ingest-labels"),
    "folds": (("patient_id", "fold", "subset"), "lego make-folds"),
    "slides": (("slide_id", "patient_id", "path"), "lego index-slides"),
    "manifest": (("slide_id", "patient_id", "features", "status", "reason"), "lego feature-manifest"),
    "modality": (("patient_id",), "lego prepare-modality"),
    "patients": (("patient_id",), "lego cohort-table"),
    "slide-QC": (("slide_id", "patient_id", "reason"), "lego index-slides --unmatched"),
}
TSV_TABLES = frozenset({"slide-QC"})  # QC tables are TSV, for people to read


def read_frame(path: str | os.PathLike, kind: str):
    """A parquet table written by one of the project's stages, with the columns its readers need.

    Why: a table from another tool (or an older release) otherwise fails as a KeyError
    deep inside the reader; here it is one line naming the file, what is missing and the fix."""
    import pandas as pd

    from lego.errors import InputError

    need, writer = TABLES[kind]
    if not Path(path).is_file():
        raise InputError(f"{path}: file not found; make it with `{writer}` (or check the path)")
    tsv = kind in TSV_TABLES
    try:
        df = pd.read_table(path, dtype=str, keep_default_na=False) if tsv else pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for damaged or non-parquet files
        raise InputError(f"{path}: not a readable {'TSV' if tsv else 'parquet'} {kind} table "
                         f"({' '.join(str(exc).split())[:160]}); make it with `{writer}`") from None
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise InputError(f"{path}: a {kind} table needs column(s) {missing} (has {list(df.columns)[:6]}); "
                         f"make it with `{writer}`")
    if kind == "labels":  # outcomes from a hand-made table: impossible values are refused wherever read
        from lego.data.labels import check_labels_table

        check_labels_table(df, str(path))
    return df
