"""Read cohort tables in any of the formats users have: CSV(.gz/.zip), TSV, parquet."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lego.errors import InputError


def _check_delimiter(df: pd.DataFrame, path: Path) -> None:
    """One column whose name holds another separator: the file uses a delimiter we did not expect."""
    if len(df.columns) != 1:
        return
    header = str(df.columns[0])
    for sep, name in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe"), (",", "comma")):
        if sep in header:
            fix = "save it as .tsv" if sep == "\t" else "save it with ',' as the delimiter (or as .tsv)"
            raise InputError(f"{path}: read as one column {header[:60]!r}: the file looks {name}-delimited; {fix}")


def _check_header(path: Path, sep: str) -> None:
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
    try:
        if name.endswith((".parquet", ".pq")):
            df = pd.read_parquet(path)
        elif name.endswith((".tsv", ".tsv.gz", ".txt", ".txt.gz", ".tsv.zip")):
            df = pd.read_csv(path, sep="\t", low_memory=False, **kwargs)
            _check_header(path, "\t")
        elif name.endswith((".csv", ".csv.gz", ".csv.zip", ".zip", ".gz", ".csv.bz2", ".csv.xz")):
            df = pd.read_csv(path, low_memory=False, **kwargs)
            _check_header(path, ",")
        else:
            raise InputError(f"{path}: unknown table format; use .csv(.gz/.zip), .tsv or .parquet")
    except InputError:
        raise
    except Exception as exc:  # pandas raises many types for malformed files
        raise InputError(f"{path}: cannot be read as a table ({type(exc).__name__}: {exc})") from None
    _check_delimiter(df, path)
    first = df.columns[0] if len(df.columns) else None
    if first is not None and (str(first).startswith("Unnamed: 0") or str(first) == ""):
        df = df.drop(columns=[first])
    return df

