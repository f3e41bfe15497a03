"""Read cohort tables in any of the formats users have: CSV(.gz/.zip), TSV, parquet."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from lego.errors import InputError

log = logging.getLogger(__name__)


def _read_text(path: Path, sep: str, kwargs: dict) -> pd.DataFrame:
    """A delimited text table. ``index_col=False``: a first data row with one field more than the
    header would otherwise silently become the index, shifting every value one column left
    (the patient ID read from the first feature); here it is an error naming the line."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", pd.errors.ParserWarning)
        try:
            return pd.read_csv(path, sep=sep, low_memory=False, index_col=False, **kwargs)
        except pd.errors.ParserWarning:
            rows = _first_rows(path, sep)
            if sep == "," and ";" in sep.join(rows[0]):
                raise InputError(f"{path}: the header is semicolon-delimited (decimal commas?); save it with ',' "
                                 "as the delimiter and '.' as the decimal mark, or as .tsv") from None
            # R's write.table: a row-name field with no header cell, on every row
            if len(rows) > 1 and all(len(r) == len(rows[0]) + 1 for r in rows[1:] if r):
                log.warning("%s: the first field of every row has no header (row names, as R writes them); "
                            "it is left out", path)
                return pd.read_csv(path, sep=sep, low_memory=False, index_col=0, **kwargs).reset_index(drop=True)
            raise InputError(f"{path}: line 2 has more fields than the header (line 1); every row needs one value "
                             "per header column") from None


def _first_rows(path: Path, sep: str, rows: int = 200) -> list[list[str]]:
    """The header and the first ``rows`` data rows, split into fields (gzip-aware)."""
    import csv
    import gzip

    opener = gzip.open if path.name.lower().endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        return [r for _, r in zip(range(rows + 1), csv.reader(fh, delimiter=sep))]


def stripped_text(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Text cells (IDs, class labels) with surrounding spaces and invisible characters (zero-width
    spaces and joiners, byte-order marks, NUL) removed, and which are empty (missing, or only
    spaces): " P1", "P1\u200b" and "P1" are one patient, and "" names nobody. Unicode is put in
    NFC form: macOS file names and some exports write "Müller" decomposed (NFD), which looks the
    same but would silently match nobody."""
    text = values.astype("string").str.replace(INVISIBLE, "", regex=True).str.strip().str.normalize("NFC")
    return text, text.isna() | (text == "")


INVISIBLE = "[\u200b\u200c\u200d\u2060\ufeff\x00]"  # copy-paste debris that no ID spells on purpose


def _check_delimiter(df: pd.DataFrame, path: Path, used: str | None = None) -> None:
    """One column whose name holds another separator: the file uses a delimiter we did not expect."""
    if len(df.columns) != 1:
        return
    header = str(df.columns[0])
    for sep, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe"), (",", "comma")):
        if sep in header:
            if sep == "," and used == "\t":
                fix = "name it .csv (a .txt/.tsv file is read as tab-delimited)"
            elif sep == "\t":
                fix = "name it .tsv"
            else:
                fix = "save it with ',' as the delimiter (or as .tsv)"
            raise InputError(f"{path}: read as one column {header[:60]!r}: the file looks {name}-delimited; {fix}")


def check_header(path: Path, sep: str) -> None:
    """Refuse a header naming a column twice. Why: pandas silently renames the second ``x`` to
    ``x.1``, so an ID, time or feature column would be read from whichever copy comes first."""
    head = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str).iloc[0].tolist()
    seen: dict[str, int] = {}
    for i, col in enumerate(head, start=1):
        if isinstance(col, str) and col in seen:
            raise InputError(f"{path}: column {col!r} appears twice in the header (columns {seen[col]} and {i}); "
                             "rename or drop one")
        if isinstance(col, str):
            seen[col] = i


def read_table(path: str | Path, text_columns: tuple[str, ...] = (), **kwargs) -> pd.DataFrame:
    """Read a table by extension; drop a leading unnamed index column (as in the BLCA file).

    ``text_columns`` (IDs) are read as text: "00012" must not become the number 12.
    """
    if text_columns:
        kwargs["dtype"] = {**kwargs.get("dtype", {}), **{c: str for c in text_columns}}
    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a table file; name the table itself in the config")
    if not path.is_file():
        raise InputError(f"{path}: file not found; check the path in the config")
    name = path.name.lower()
    sep = None
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
            if any(name is not None for name in df.index.names):  # IDs kept in a named (Multi)Index
                df = df.reset_index()  # (an unnamed index is row numbers: dropped, as pandas does)
        elif name.endswith((".tsv", ".tsv.gz", ".txt", ".txt.gz", ".tsv.zip")):
            sep = "\t"
        elif name.endswith((".csv", ".csv.gz", ".csv.zip", ".zip", ".gz", ".csv.bz2", ".csv.xz")):
            sep = ","
        else:
            raise InputError(f"{path}: unknown table format; use .csv(.gz/.zip), .tsv or .parquet")
        if sep is not None:
            df = _read_text(path, sep, kwargs)
            check_header(path, sep)
    except InputError:
        raise
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text (e.g. UTF-16 from Excel, or compressed without a .gz/.zip "
                         "name); save it as UTF-8 CSV or TSV") from None
    except Exception as exc:  # pandas raises many types for malformed files
        raise InputError(f"{path}: cannot be read as a table ({type(exc).__name__}: {' '.join(str(exc).split())})") from None
    _check_delimiter(df, path, sep)
    if df.empty:
        raise InputError(f"{path}: the table has no data rows (columns {list(df.columns)[:5]}); "
                         "check that it is the file you meant")
    first = df.columns[0] if len(df.columns) else None
    if first is not None and (str(first).startswith("Unnamed: 0") or str(first) == ""):
        df = df.drop(columns=[first])
    return df

