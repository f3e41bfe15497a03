"""Synthetic demo cohort with a planted multimodal survival signal.

Generative model (all draws from one ``numpy.random.default_rng(seed)``):

* Each patient ``i`` has three hidden factors ``u_i, v_i, w_i ~ N(0, 1)`` and an age ``a_i ~ N(62, 9)``.
* Linear predictor ``eta_i = 1.2 (u_i + v_i + w_i) + 0.01 (a_i - 62)``; event time
  ``T_i ~ Exponential(rate = exp(eta_i) / 36 months)``, censoring time ``C_i ~ Uniform(6, 120)``;
  observed ``time = min(T, C)``, ``censorship = 1`` when ``C < T`` (MCAT convention).
* A three-class ``grade`` (G1/G2/G3) is the tertile of ``u + v + w + N(0, 0.5)``: the classification task.
* ``u`` is visible only in the slides: tissue is made of two textures derived from scikit-image's
  real IHC image -- "stroma" (weak DAB) and "tumour" (strong DAB and haematoxylin) -- and the
  fraction of tumour-textured tissue is ``sigmoid(1.5 u)``, laid out in random blobs.
* ``v`` is visible only in the RNA: 6 signature genes are ``0.8 v + N(0, 0.5)``.
* ``w`` is visible only in the genome: the copy number of MYC, ERBB2, CCND1 and EGFR is
  ``round(0.9 w + N(0, 0.5))`` clipped to -2..2, and TP53 is mutated with probability ``sigmoid(1.5 w - 0.5)``.
* Every other feature is noise (with rare huge RNA outliers, as in TCGA-BLCA).

So each modality holds one third of the signal and a model that combines them can beat every
single modality. About 60 % of patients have no slide and about 10 % no omics row, so missing
modalities occur; clinical data exists for all. Slides are 20x (0.5 um/px); one in five is
"scanned" at 40x (0.25 um/px, twice the pixels). One extra slide (``...-DX9``) of a patient who has
other slides is blank glass: the pipeline must record it in ``qc/failed.tsv`` ("no tissue") and go on.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from skimage import color, data

from lego.demo.aperio import write_aperio_tiff
from lego.errors import InputError
from lego.io import atomic_path
from lego.settings import default

FIELD_PX = 64  # level-0 pixels per cell of the random fields that shape tissue and tumour
SIGNAL_CNV = ["MYC_cnv", "ERBB2_cnv", "CCND1_cnv", "EGFR_cnv"]
SIGNAL_RNA = ["ESR1_rnaseq", "FOXA1_rnaseq", "GATA3_rnaseq", "KRT5_rnaseq", "MKI67_rnaseq", "CCNB1_rnaseq"]
MCAT_META = ["case_id", "slide_id", "site", "is_female", "oncotree_code", "age", "survival_months", "censorship", "train"]


@functools.cache
def _ihc_stains() -> np.ndarray:
    """The IHC image mirrored into a 1024x1024 mosaic, as stain densities (HED); the same for
    every slide, so each process separates the stains once."""
    ihc = data.immunohistochemistry()
    tiles = [ihc, ihc[:, ::-1], ihc[::-1], ihc[::-1, ::-1]]
    mosaic = np.concatenate([np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0)
    hed = color.rgb2hed(mosaic)
    hed.flags.writeable = False
    return hed


def _textures(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stroma and tumour textures (1024x1024 RGB) from the IHC image, by stain re-weighting."""
    hed = _ihc_stains()

    def restain(h: float, d: float) -> np.ndarray:
        out = hed.copy()
        out[..., 0] *= h
        out[..., 2] *= d
        return (np.clip(color.hed2rgb(out), 0, 1) * 255).round().astype(np.uint8)

    jitter = float(np.exp(rng.normal(0, 0.08)))
    return restain(0.9 * jitter, 0.3 * jitter), restain(1.25 * jitter, 1.7 * jitter)


def _field(rng: np.random.Generator, shape: tuple[int, int], sigma: float, envelope: bool) -> np.ndarray:
    noise = cv2.GaussianBlur(rng.normal(size=shape).astype(np.float32), (0, 0), sigma)
    noise /= noise.std() + 1e-6
    if envelope:
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
        r2 = ((yy / shape[0] - 0.5) * 2) ** 2 + ((xx / shape[1] - 0.5) * 2) ** 2
        noise = noise - 2.5 * r2
    return noise


@dataclass
class SlideSpec:
    width: int
    height: int
    mpp: float
    tumour_fraction: float
    blank: bool = False  # glass only, no tissue


class SlideRenderer:
    """Renders any region of a synthetic slide at any downsample from a few small random fields."""

    def __init__(self, spec: SlideSpec, rng: np.random.Generator):
        self.spec = spec
        self.scale = 0.5 / spec.mpp  # level-0 pixels per 20x pixel (2 for 40x slides)
        cells = (int(spec.height / self.scale / FIELD_PX) + 2, int(spec.width / self.scale / FIELD_PX) + 2)
        self.tissue = _field(rng, cells, sigma=2.5, envelope=True)
        self.tissue_thr = np.inf if spec.blank else float(np.quantile(self.tissue, 0.55))
        self.tumour = _field(rng, cells, sigma=1.5, envelope=False)
        self.tumour_thr = float(np.quantile(self.tumour, min(1.0, 1.0 - spec.tumour_fraction)))
        self.stroma_tex, self.tumour_tex = _textures(rng)
        self.background = np.array([238, 236, 240], np.uint8)
        self._tex_cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def _tex(self, ds20: float) -> tuple[np.ndarray, np.ndarray]:
        """Textures resized to a downsample expressed in 20x pixels."""
        if ds20 not in self._tex_cache:
            side = max(8, int(round(1024 / ds20)))
            interp = cv2.INTER_AREA if ds20 > 1 else cv2.INTER_LINEAR
            self._tex_cache[ds20] = (
                cv2.resize(self.stroma_tex, (side, side), interpolation=interp),
                cv2.resize(self.tumour_tex, (side, side), interpolation=interp),
            )
        return self._tex_cache[ds20]

    def __call__(self, ds: float, x: int, y: int, w: int, h: int) -> np.ndarray:
        ds20 = ds / self.scale  # downsample relative to 20x
        fx = ((x + np.arange(w) + 0.5) * ds20 / FIELD_PX - 0.5).astype(np.float32)
        fy = ((y + np.arange(h) + 0.5) * ds20 / FIELD_PX - 0.5).astype(np.float32)
        mx, my = np.meshgrid(fx, fy)
        tissue = cv2.remap(self.tissue, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) > self.tissue_thr
        tumour = cv2.remap(self.tumour, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT) > self.tumour_thr
        if not tissue.any():  # glass only: most tiles of the coarse levels' margins
            return np.broadcast_to(self.background, (h, w, 3))
        stroma_tex, tumour_tex = (_tiled(tex, x, y, w, h) for tex in self._tex(ds20))
        out = np.where(tumour[..., None], tumour_tex, stroma_tex)
        out[~tissue] = self.background
        return out


def _tiled(tex: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """The region (x, y, w, h) of the plane tiled with ``tex``: a view when it does not wrap."""
    side = tex.shape[0]
    x0, y0 = x % side, y % side
    if x0 + w <= side and y0 + h <= side:
        return tex[y0 : y0 + h, x0 : x0 + w]
    ix, iy = (x + np.arange(w)) % side, (y + np.arange(h)) % side
    return tex[np.ix_(iy, ix)]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _write_slide(job: tuple) -> None:
    """Render one slide; its random stream depends only on the seed and the slide ID."""
    path, sid, spec, seed = job
    srng = np.random.default_rng([seed, int.from_bytes(sid.encode(), "little") % (2**31)])
    write_aperio_tiff(path, spec.width, spec.height, SlideRenderer(spec, srng), mpp=spec.mpp,
                      app_mag=40 if spec.mpp < 0.4 else 20)


@dataclass
class _Patients:
    """The demo's patients: IDs, hidden factors and outcome (one entry per patient)."""

    ids: list[str]
    u: np.ndarray
    v: np.ndarray
    w: np.ndarray
    age: np.ndarray
    is_female: np.ndarray
    time: np.ndarray
    censorship: np.ndarray
    clinical: pd.DataFrame


def _patients(rng: np.random.Generator, n: int, prefix: str) -> _Patients:
    """Hidden factors u (slides), v (RNA), w (genome); survival from all three plus age."""
    if len(prefix) != 4 or not prefix.isalpha() or not prefix.isascii():
        raise InputError(f"demo prefix {prefix!r}: four letters (patient IDs keep 12 characters)")
    ids = [f"{prefix}-{(i // 100):02d}-{i:04d}" for i in range(n)]  # 12 characters, TCGA-like
    u, v, w = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    age = np.clip(rng.normal(62, 9, n), 30, 90).round(0)
    eta = 1.2 * (u + v + w) + 0.01 * (age - 62)
    t_event = rng.exponential(36.0 / np.exp(eta))
    t_cens = rng.uniform(6, 120, n)
    time = np.maximum(np.minimum(t_event, t_cens), 0.1).round(2)
    censorship = (t_cens < t_event).astype(int)
    score = u + v + w + rng.normal(0, 0.5, n)
    grade = np.array(["G1", "G2", "G3"])[np.searchsorted(np.quantile(score, [1 / 3, 2 / 3]), score)]
    is_female = rng.integers(0, 2, n)
    clinical = pd.DataFrame({"case_id": ids, "age": age, "is_female": is_female, "survival_months": time,
                             "censorship": censorship, "grade": grade})
    return _Patients(ids, u, v, w, age, is_female, time, censorship, clinical)


def _omics(rng: np.random.Generator, pat: _Patients) -> dict[str, tuple[list[str], np.ndarray]]:
    """Mutation (TP53 follows w), CNV (4 genes follow w) and RNA (6 genes follow v, rare outliers)."""
    n = len(pat.ids)
    mut_genes = ["TP53", "PTEN", "PIK3CA", "ARID1A", "KRAS", "CTNNB1"] + [f"GENE{i:03d}" for i in range(24)]
    mutation = (rng.random((n, len(mut_genes))) < rng.uniform(0.03, 0.2, len(mut_genes))).astype(int)
    mutation[:, 0] = (rng.random(n) < _sigmoid(1.5 * pat.w - 0.5)).astype(int)
    cnv_genes = SIGNAL_CNV + [f"GENE{i:03d}_cnv" for i in range(36)]
    cnv = rng.choice([-1, 0, 1], size=(n, len(cnv_genes)), p=[0.1, 0.8, 0.1])
    k = len(SIGNAL_CNV)
    cnv[:, :k] = np.clip(np.round(0.9 * pat.w[:, None] + rng.normal(0, 0.5, (n, k))), -2, 2)
    rna_genes = SIGNAL_RNA + [f"GENE{i:03d}_rnaseq" for i in range(54)]
    rna = rng.normal(size=(n, len(rna_genes)))
    rna[:, : len(SIGNAL_RNA)] = 0.8 * pat.v[:, None] + rng.normal(0, 0.5, (n, len(SIGNAL_RNA)))
    outliers = rng.random(rna.shape) < 0.002
    rna[outliers] = rng.uniform(2000, 16000, outliers.sum())  # like BLCA's extreme values
    return {"mutation": (mut_genes, mutation), "cnv": (cnv_genes, cnv), "rna": (rna_genes, rna.round(4))}


def _slide_specs(rng: np.random.Generator, pat: _Patients, n_slides: np.ndarray) -> tuple[list, list]:
    """(patient index, slide ID) of every omics row, and the spec of every slide to draw (one blank)."""
    slide_rows, specs = [], []
    blank_owner = int(np.flatnonzero(n_slides > 0)[0])
    for i, pid in enumerate(pat.ids):
        if i == blank_owner:
            specs.append((f"{pid}-01Z-00-DX9", SlideSpec(2048, 1536, 0.5, 0.0, blank=True)))
        for k in range(max(1, n_slides[i])):
            sid = f"{pid}-01Z-00-DX{k + 1}"
            slide_rows.append((i, sid))
            if n_slides[i] > 0:
                forty_x = rng.random() < 0.2
                w20, h20 = int(rng.integers(1536, 2561)), int(rng.integers(1280, 2049))
                f = 2 if forty_x else 1
                frac = float(np.clip(_sigmoid(1.5 * pat.u[i]), 0.05, 0.95))
                specs.append((sid, SlideSpec(w20 * f, h20 * f, 0.25 if forty_x else 0.5, frac)))
    return slide_rows, specs


def _omics_table(pat: _Patients, omics: dict, slide_rows: list, has_omics: np.ndarray) -> pd.DataFrame:
    """The MCAT "all_clean" table: one row per slide (or per patient without one), omics repeated."""
    names = [c for genes, _ in omics.values() for c in genes]
    rows = []
    for i, sid in slide_rows:
        if not has_omics[i]:
            continue
        meta = {"case_id": pat.ids[i], "slide_id": f"{sid}.svs", "site": "DE", "is_female": pat.is_female[i],
                "oncotree_code": "DEMO", "age": pat.age[i], "survival_months": pat.time[i],
                "censorship": pat.censorship[i], "train": 1.0}
        feats = {}
        for genes, values in omics.values():
            feats |= dict(zip(genes, values[i]))
        rows.append(meta | feats)
    return pd.DataFrame(rows, columns=MCAT_META + names)


DEMO_SLIDE = re.compile(r"^[A-Za-z]{4}-\d{2}-\d{4}-01Z-00-DX\d\.svs$")


def _check_slide_folder(slide_dir: Path) -> None:
    """Before anything is written: ``--out`` may be a folder of real data by mistake, so anything in
    its slides folder that is not a demo slide stops the run (it is never deleted or overwritten)."""
    for p in sorted(slide_dir.iterdir()) if slide_dir.is_dir() else []:
        if not DEMO_SLIDE.match(p.name) or not p.is_file():
            raise InputError(f"{p}: not a demo slide; write the demo cohort to a new or empty folder")


def _clear_stale_slides(slide_dir: Path, keep: set[str]) -> None:
    """Remove a previous demo's slides this cohort does not write: left behind, a smaller cohort's
    index would hold them, some under this cohort's patient IDs."""
    _check_slide_folder(slide_dir)
    for p in sorted(slide_dir.iterdir()):
        if p.name not in keep:
            p.unlink()


def _write_slides(slide_dir: Path, specs: list, seed: int, workers: int) -> None:
    _clear_stale_slides(slide_dir, {f"{sid}.svs" for sid, _ in specs})
    jobs = [(slide_dir / f"{sid}.svs", sid, spec, seed) for sid, spec in specs]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_write_slide, jobs))
    else:
        for job in jobs:
            _write_slide(job)


# MCAT's six functional gene groups, for the demo's genes: the real ones by their role, the
# numbered noise genes dealt round-robin (a table like ../shared/data/tcga/signatures/mcat_signatures.csv).
SIGNATURE_GROUPS = ("Tumor Suppressor Genes", "Oncogenes", "Protein Kinases", "Cell Differentiation Markers",
                    "Transcription Factors", "Cytokines and Growth Factors")
KNOWN_GROUPS = {"TP53": 0, "PTEN": 0, "ARID1A": 0, "MYC": 1, "KRAS": 1, "CTNNB1": 1, "ERBB2": 2, "EGFR": 2,
                "PIK3CA": 2, "KRT5": 3, "MKI67": 3, "CCNB1": 3, "ESR1": 4, "FOXA1": 4, "GATA3": 4, "CCND1": 5}


def _signatures(omics: dict) -> pd.DataFrame:
    """The demo's gene-group table (no random draw: the cohort is unchanged by it)."""
    genes = sorted({c.rsplit("_", 1)[0] if c.endswith(("_cnv", "_rnaseq")) else c
                    for names, _ in omics.values() for c in names})
    groups: list[list[str]] = [[] for _ in SIGNATURE_GROUPS]
    for i, gene in enumerate(genes):
        groups[KNOWN_GROUPS.get(gene, i % len(SIGNATURE_GROUPS))].append(gene)
    longest = max(map(len, groups))
    return pd.DataFrame({name: g + [None] * (longest - len(g)) for name, g in zip(SIGNATURE_GROUPS, groups)})


def _write_csv(df: pd.DataFrame, path: Path, **kwargs) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, **kwargs)


def make_demo_cohort(out_dir: str | Path, n_patients: int = default("demo.n_patients"), seed: int = default("demo.seed"),
                     write_slides: bool = True, workers: int = 1, prefix: str = default("demo.prefix")) -> dict:
    """Write ``clinical.csv``, ``omics_all_clean.csv.gz`` (MCAT format) and ``slides/*.svs``.

    ``prefix`` (4 letters) starts every patient ID: a second cohort from another seed and prefix
    shares no patient with the first (an external cohort for ``predict``).

    Returns a summary dict (counts) for logging.
    """
    out = Path(out_dir)
    if seed < 0 or n_patients < 1:
        raise InputError(f"demo: seed {seed} and patients {n_patients} must be >= 0 and >= 1")
    _check_slide_folder(out / "slides")
    rng = np.random.default_rng(seed)
    pat = _patients(rng, n_patients, prefix)
    # Modality availability: ~60 % without slides (keeps the demo's slide count, and run time, modest
    # while the omics blocks see enough patients), ~10 % without omics, nobody without both.
    n_slides = rng.choice([0, 1, 2], size=n_patients, p=[0.6, 0.32, 0.08])
    has_omics = rng.random(n_patients) >= 0.10
    has_omics[n_slides == 0] = True
    omics = _omics(rng, pat)
    slide_rows, specs = _slide_specs(rng, pat, n_slides)

    out.mkdir(parents=True, exist_ok=True)
    _write_csv(pat.clinical, out / "clinical.csv")
    no_time = {"method": "gzip", "mtime": 0}  # the same seed writes the same bytes
    _write_csv(_omics_table(pat, omics, slide_rows, has_omics), out / "omics_all_clean.csv.gz", compression=no_time)
    (out / "slides").mkdir(exist_ok=True)
    if write_slides:
        _write_slides(out / "slides", specs, seed, workers)
    _write_csv(pd.DataFrame({"case_id": pat.ids, "u": pat.u, "v": pat.v, "w": pat.w, "n_slides": n_slides,
                             "has_omics": has_omics}), out / "hidden_factors.csv")
    _write_csv(_signatures(omics), out / "signatures.csv")
    return {
        "patients": n_patients,
        "slides": len(specs),
        "blank_slides": sum(spec.blank for _, spec in specs),
        "patients_without_slides": int((n_slides == 0).sum()),
        "patients_without_omics": int((~has_omics).sum()),
        "events": int((pat.censorship == 0).sum()),
    }
