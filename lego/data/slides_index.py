"""Index the cohort's slides: slide ID, patient ID (by a configurable rule) and path.

Paths are stored resolved (one slide reached through a folder and a list, or a link, is one entry)
and relative to the working folder when inside it (:func:`lego.io.project_path`), so a copied or
moved project reads its own slides, never the original's.

Slides whose patient has no outcome, and patients with no slide, are reported (not fatal): they
are the normal state of real cohorts, and the cohort table records who has which modality.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import unicodedata
from pathlib import Path

import pandas as pd

from lego.config import regex_problem
from lego.errors import InputError
from lego.io import project_path
from lego.settings import default
from lego.slides.params import SLIDE_EXTENSIONS
from lego.tabular.tables import read_table

log = logging.getLogger(__name__)


def patient_of(slide_id: str, prefix_length: int = default("slides.patient_id.prefix_length"), regex: str | None = None) -> str | None:
    """Patient ID of a slide: regex group 1 when given, else the first ``prefix_length`` characters."""
    if regex:
        m = re.search(regex, slide_id)
        return m.group(1) if m and m.re.groups else None
    return slide_id[:prefix_length] if len(slide_id) >= prefix_length else None


def slide_id_of(path: Path, extensions: list[str]) -> str:
    """File name without the slide extension (TCGA names contain dots, so strip only the extension),
    in Unicode NFC form like every patient ID (macOS writes file names decomposed)."""
    name = unicodedata.normalize("NFC", path.name)
    for ext in sorted(extensions, key=len, reverse=True):
        if name.lower().endswith(ext.lower()):
            return name[: -len(ext)]
    return path.stem


PATH_COMPONENTS = ("", ".", "..")  # "..svs" and "...svs": outputs planned outside the slide's own folder
UNSAFE_NAME = re.compile(r"[{}\x00-\x1f]")  # Snakemake reads braces as wildcards; control characters break logs


def patient_id_hint(slide_id: str, patients: list[str] | set[str]) -> str:
    """The ``slides.patient_id`` setting that would match ``slide_id`` to a labelled patient."""
    found = [(slide_id.find(p), p) for p in patients if p and p in slide_id]
    if not found:
        return ("no labelled patient ID occurs in the slide ID (check the labels table, or list the "
                "slides in slides.list with a patient_id column)")
    start, pid = min(found, key=lambda f: (f[0], -len(f[1])))
    if start == 0:
        return f"slides.patient_id: {{prefix_length: {len(pid)}}} would match it to patient {pid!r}"
    return f'slides.patient_id: {{regex: "^.{{{start}}}(.{{{len(pid)}}})"}} would match it to patient {pid!r}'


def named_file(folder: str | Path, slide_id: str, suffix: str = ".h5") -> str:
    """The file of ``folder`` named ``<slide_id><suffix>``, matched in Unicode NFC like the slide IDs:
    a file name written decomposed (macOS) is still found on file systems that keep names as given."""
    path = Path(folder) / f"{slide_id}{suffix}"
    if path.exists() or not Path(folder).is_dir():
        return str(path)
    other = _nfc_names(str(folder), Path(folder).stat().st_mtime_ns).get(f"{slide_id}{suffix}")
    return str(Path(folder) / other) if other else str(path)


@functools.lru_cache(maxsize=64)
def _nfc_names(folder: str, mtime_ns: int) -> dict[str, str]:
    """NFC name -> the name on disk (the first in sorted order), one listing per folder version:
    an input function asks once per slide."""
    names: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        names.setdefault(unicodedata.normalize("NFC", name), name)
    return names


def _check_regex(regex: str | None) -> None:
    problem = regex_problem(regex, groups=1) if regex else None
    if problem:
        raise InputError(f"slides.patient_id.regex {problem}")


def _unusable(p: Path, extensions: list[str], where: str = "") -> dict | None:
    """A QC record for a slide entry that cannot be used (why, and the fix), else None."""
    reason = None
    if p.is_symlink() and not p.exists():
        reason = "broken symbolic link or link loop; fix or remove the link"
    elif UNSAFE_NAME.search(p.name):
        reason = "file name contains '{', '}' or a control character; rename the file"
    elif slide_id_of(p, extensions) in PATH_COMPONENTS:
        reason = f"the slide ID would be {slide_id_of(p, extensions)!r}, a path component, not a name; rename the file"
    elif not p.exists():
        reason = f"file not found{where}; fix the path (relative paths are read from the list's folder)"
    elif not p.is_file():
        reason = f"not a file{where}; list the slide file itself"
    return None if reason is None else {"slide_id": slide_id_of(p, extensions), "path": str(p), "reason": reason}


def _scan_dir(d: Path, extensions: list[str]) -> tuple[list[dict], list[dict]]:
    """Slide files of a folder, and entries that look like slides but cannot be used (QC records)."""
    rows, bad = [], []
    suffixes = tuple(e.lower() for e in extensions)
    for p in sorted(d.iterdir()):
        if not p.name.lower().endswith(suffixes):
            continue
        if (record := _unusable(p, extensions)) is not None:
            bad.append(record)
        else:
            rows.append({"slide_id": slide_id_of(p, extensions), "path": project_path(p), "patient_id": None})
    return rows, bad


def _read_list(slide_list: str | Path, extensions: list[str]) -> tuple[list[dict], list[dict]]:
    """Slides named by a list file (a ``path`` column, optionally ``patient_id``), and unusable entries."""
    table = read_table(slide_list, text_columns=("path", "patient_id"))  # "0011" stays "0011"
    if "path" not in table.columns:
        raise InputError(f"{slide_list}: slide list needs a 'path' column (and optionally 'patient_id')")
    base = Path(slide_list).parent
    rows, bad = [], []
    for i, r in enumerate(table.to_dict("records")):
        p = Path(str(r["path"]))
        p = p if p.is_absolute() else (base / p)
        if (record := _unusable(p, extensions, f" (listed in {slide_list}, line {i + 2})")) is not None:
            bad.append(record)
            continue
        pid = r.get("patient_id")
        pid = None if pid is None or pd.isna(pid) or not str(pid).strip() else unicodedata.normalize("NFC", str(pid).strip())
        rows.append({"slide_id": slide_id_of(p, extensions), "path": project_path(p), "patient_id": pid})
    return rows, bad


def _scan_dirs(dirs: list[str | Path], extensions: list[str]) -> tuple[list[dict], list[dict]]:
    """Slide files of one or more folders. Several folders are imported feature sets (one per WSI
    modality) naming the same slides, so a slide ID met again in a later folder is the same slide."""
    rows, bad, seen = [], [], set()
    for d in map(Path, dirs):
        if not d.is_dir():
            raise InputError(f"{d}: slide directory not found; check slides.dir (or the modality's features_dir) in the config")
        found, unusable = _scan_dir(d, extensions)
        rows += [r for r in found if r["slide_id"] not in seen]
        seen |= {r["slide_id"] for r in found}
        bad += unusable
    return rows, bad


def index_slides(
    slide_dir: str | Path | list[str | Path] | None = None,
    slide_list: str | Path | None = None,
    extensions: list[str] | None = None,
    prefix_length: int = default("slides.patient_id.prefix_length"),
    regex: str | None = None,
    patients: list[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(slides, unmatched)``: matched slides and those naming no known patient."""
    extensions = extensions or list(SLIDE_EXTENSIONS)
    _check_regex(regex)
    rows, bad = [], []
    if slide_dir:
        rows, bad = _scan_dirs(slide_dir if isinstance(slide_dir, list) else [slide_dir], extensions)
    if slide_list:
        listed, listed_bad = _read_list(slide_list, extensions)
        rows, bad = rows + listed, bad + listed_bad
    slides = pd.DataFrame(rows, columns=["slide_id", "patient_id", "path"])
    # One file reached twice (found in the folder and named by the list) is one slide; the list's
    # patient_id, if it gives one, wins.
    slides = slides.sort_values("patient_id", na_position="last", kind="stable").drop_duplicates(["slide_id", "path"])
    dup = slides["slide_id"].duplicated(keep=False)
    if dup.any():
        first = slides.loc[dup, "slide_id"].iloc[0]
        raise InputError(f"slide ID {first!r} names more than one file ({slides.loc[slides['slide_id'] == first, 'path'].tolist()}); "
                         "slide file names must be unique")
    missing_pid = slides["patient_id"].isna()
    slides.loc[missing_pid, "patient_id"] = [patient_of(s, prefix_length, regex) for s in slides.loc[missing_pid, "slide_id"]]
    known = set(patients) if patients is not None else None
    matched = slides["patient_id"].notna() & (slides["patient_id"].isin(known) if known is not None else True)
    unmatched = slides[~matched].copy()
    unmatched["reason"] = [
        "no patient ID could be derived (check slides.patient_id)" if pd.isna(p) else f"patient {p} has no outcome in the labels table"
        for p in unmatched["patient_id"]
    ]
    if len(unmatched) and known is not None:
        example = unmatched["slide_id"].iloc[0]
        setting = patient_id_hint(example, known)
        hint = f"{unmatched['reason'].iloc[0]}; {setting}"
        if not matched.any():
            raise InputError(f"none of the {len(slides)} slides matches a labelled patient (e.g. slide {example!r}); {hint}")
        log.warning("%d slide(s) match no labelled patient and are left out, e.g. %s; %s", len(unmatched), example, hint)
        unmatched["hint"] = setting  # the setting that would match: shown on the console too
    unmatched = pd.concat([unmatched, pd.DataFrame(bad, columns=["slide_id", "path", "reason"])], ignore_index=True)
    for r in bad:
        log.warning("slide %s left out: %s", r["path"], r["reason"])
    return slides[matched].sort_values("slide_id").reset_index(drop=True), unmatched
