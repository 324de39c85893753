"""Evaluate a :class:`~dpmesh_infer.pipeline.Pipeline` on a ``dpmesh-dataset`` (``dpmesh evaluate``).

Protocol (ARCHITECTURE §10, upstream §7), per person with a usable GT SMPL fit:

- **Inputs** (``inputs``): ``"detected"`` — the person's ``input_keypoints`` in their own format
  (e.g. 3DPW OpenPose); a person without them is an error naming the record. ``"gt"`` — the GT
  ``keypoints_2d`` (J30), visibility used as confidence. ``"auto"`` — ``input_keypoints`` when the
  person has them, else the GT keypoints; every person result says which one was used. Persons are
  reconstructed from keypoints only: the dataset's ``bbox`` is never passed (no GT box leaks in).
- **Prediction**: the pipeline's posed mesh ``vertices`` (6890, 3), metres.
- **GT mesh**: SMPL(global_orient, body_pose, betas, transl) with the body of the person's gender
  (``gt_bodies``); with ``allow_neutral_gt`` a missing gendered body falls back to the neutral one and
  the report carries a warning (numbers are then not comparable with published ones).
- **Metrics**: :func:`dpmesh_infer.metrics.evaluate_meshes` — MPJPE and PA-MPJPE on the 14 H36M joints
  of the 17×6890 H36M regressor, pelvis-relative; MPVE with each mesh made relative to its own SMPL
  pelvis (``J_regressor`` row 0 of the pipeline's body for the prediction, of the GT body for the GT).
  All three are root-relative, so the camera (focal, translation) does not enter them.
- **Accounting**: persons whose GT ``smpl`` is missing or marked ``valid: false`` are *excluded*
  (counted, not run). Persons the pipeline skips (no usable box from their keypoints) are *failed*:
  they stay in ``count``, are listed with the reason, and the means are over the evaluated ones.

Report rows: one per split (``subset`` None) and, within each split, one per tag found on the split's
images or persons (a person belongs to the union of its image's and its own tags), e.g. "3dpw-oc".
Metric means are in millimetres over the row's evaluated persons (NaN / JSON null when none).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .atomic import write_text
from .errors import InputError, WeightsError
from .metrics import evaluate_meshes
from .models.body_io import check_regressor, read_regressor_npy
from .weights.layout import H36M_REGRESSOR_FILE, SMPL_DIR

logger = logging.getLogger(__name__)

__all__ = [
    "INPUT_MODES", "REPORT_FORMAT", "REPORT_SCHEMA_VERSION",
    "EvaluationSettings", "PersonResult", "ReportRow", "EvaluationReport",
    "evaluate_dataset", "evaluate_command", "load_h36m_regressor", "load_gt_body", "write_report",
]

INPUT_MODES = ("auto", "gt", "detected")
#: Default location of the H36M regressor inside a weights directory (``<weights>/smpl/``).
REPORT_FORMAT = "dpmesh-evaluation"
REPORT_SCHEMA_VERSION = 1
_SHOW = 5  # persons named per problem in error messages

_REGRESSOR_HINT = (
    "The H36M joint regressor J_regressor_h36m_correct.npy (17x6890) is not part of the DPMesh release: "
    "it ships with the 3DCrowdNet / I2L-MeshNet data (data/Human36M/J_regressor_h36m_correct.npy), the file "
    "upstream DPMesh evaluates with; SPIN's data/J_regressor_h36m.npy is a close variant. Pass it with "
    "--h36m-regressor PATH, or copy it to {default} to make it the default.")
_GENDER_FILES = {"male": "basicModel_m_lbs_10_207_0_v1.0.0.pkl", "female": "basicModel_f_lbs_10_207_0_v1.0.0.pkl"}


# --------------------------------------------------------------------------- results


@dataclasses.dataclass(frozen=True)
class EvaluationSettings:
    """What was evaluated and how (written into the report). Paths are strings, absolute where known."""

    dataset: str
    dataset_name: str
    splits: tuple[str, ...]
    inputs: str
    batch_size: int
    chunk: int
    allow_neutral_gt: bool
    weights: str | None = None
    device: str | None = None
    h36m_regressor: str | None = None  # where the regressor came from
    h36m_regressor_sha256: str | None = None
    gt_smpl: Mapping[str, str] = dataclasses.field(default_factory=dict)  # gender -> source of that body
    refine: Mapping[str, object] | None = None  # the RefineConfig of the run (keypoint refinement), or None


@dataclasses.dataclass(frozen=True)
class PersonResult:
    """One GT person. ``status``: "evaluated" (metrics set, mm), "failed" (the pipeline skipped it;
    ``reason`` says why) or "excluded" (no usable GT SMPL; never run). ``input_source``: "detected" or
    "gt" (None when excluded); ``gt_body``: the SMPL body its GT mesh was built with."""

    split: str
    image: str
    record: int
    person: int
    tags: tuple[str, ...]
    status: str
    reason: str | None = None
    gender: str | None = None
    gt_body: str | None = None
    input_source: str | None = None
    mpjpe: float | None = None
    pa_mpjpe: float | None = None
    mpve: float | None = None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["tags"] = list(self.tags)
        return d


@dataclasses.dataclass(frozen=True)
class ReportRow:
    """One line of the report. ``subset`` None = the whole split, else a tag. ``count`` = persons with GT
    (evaluated + failed); ``excluded`` = persons without usable GT. mpjpe / pa_mpjpe / mpve: mean mm over
    the ``evaluated`` persons (NaN when none). ``inputs_detected`` / ``inputs_gt``: persons run from
    detector keypoints / GT keypoints."""

    split: str
    subset: str | None
    count: int
    evaluated: int
    failed: int
    excluded: int
    mpjpe: float
    pa_mpjpe: float
    mpve: float
    inputs_detected: int
    inputs_gt: int

    def to_dict(self) -> dict:
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class EvaluationReport:
    """Settings, rows (per split, then per tag within it), every person's result, and warnings."""

    settings: EvaluationSettings
    rows: list[ReportRow]
    persons: list[PersonResult]
    warnings: list[str] = dataclasses.field(default_factory=list)

    @property
    def failures(self) -> list[PersonResult]:
        """Persons with GT that the pipeline could not reconstruct (with the reason)."""
        return [p for p in self.persons if p.status == "failed"]

    def row(self, split: str, subset: str | None = None) -> ReportRow:
        """The row of ``split`` (whole split when ``subset`` is None, else the tag's row); KeyError if absent."""
        for r in self.rows:
            if r.split == split and r.subset == subset:
                return r
        raise KeyError(f"no report row for split {split!r}, subset {subset!r}")

    def to_dict(self, per_person: bool = False) -> dict:
        """JSON-able dict (NaN -> null); ``per_person`` adds every person's result."""
        s = dataclasses.asdict(self.settings)
        s["splits"], s["gt_smpl"] = list(self.settings.splits), dict(self.settings.gt_smpl)
        d = {"format": REPORT_FORMAT, "schema_version": REPORT_SCHEMA_VERSION, "units": "mm", "settings": s,
             "rows": [r.to_dict() for r in self.rows],
             "failures": [{k: f.to_dict()[k] for k in ("split", "image", "record", "person", "reason")}
                          for f in self.failures],
             "warnings": list(self.warnings)}
        if per_person:
            d["persons"] = [p.to_dict() for p in self.persons]
        return d

    def _cells(self) -> list[list[str]]:
        def mm(v: float) -> str:
            return "-" if math.isnan(v) else f"{v:.1f}"

        return [[r.split if r.subset is None else "", r.subset or "(all)", str(r.count), str(r.evaluated),
                 str(r.failed), str(r.excluded), mm(r.mpjpe), mm(r.pa_mpjpe), mm(r.mpve)] for r in self.rows]

    #: persons = count (evaluated + failed); eval = evaluated; excl = excluded (no usable GT).
    _HEADER = ["split", "subset", "persons", "eval", "failed", "excl", "MPJPE", "PA-MPJPE", "MPVE"]

    def format_table(self) -> str:
        """Plain-text table (metrics in mm)."""
        rows = [self._HEADER] + self._cells()
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._HEADER))]
        lines = ["  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
                 for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def rich_table(self):
        """The same table as a :class:`rich.table.Table`."""
        from rich import box
        from rich.table import Table

        t = Table(title=f"dpmesh evaluate: {self.settings.dataset_name} (inputs {self.settings.inputs}, mm)",
                  box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
        for i, h in enumerate(self._HEADER):
            t.add_column(h, justify="left" if i < 2 else "right", no_wrap=True)
        for cells in self._cells():
            t.add_row(*cells)
        return t


# --------------------------------------------------------------------------- planning


@dataclasses.dataclass
class _Item:
    """One person to run: its J30 input keypoints (30, 3) px and which GT body to use."""

    record: object
    person_index: int
    tags: tuple[str, ...]
    keypoints30: np.ndarray
    input_source: str
    gt_body: str


def _where(rec, i: int) -> str:
    return f"split {rec.split!r} record {rec.index} ({rec.image}) person {i}"


def _list(items: list[str]) -> str:
    more = f" and {len(items) - _SHOW} more" if len(items) > _SHOW else ""
    return "; ".join(items[:_SHOW]) + more


def _plan(dataset, splits: Sequence[str], inputs: str, available: set[str], allow_neutral_gt: bool):
    """Sort every person into run items / excluded results; raise on missing inputs or GT bodies.

    Returns (records with items in dataset order as [(record, [items])], excluded PersonResults,
    neutral-fallback counts by gender)."""
    from .geometry.joints import to_j30

    plan, excluded, no_input = [], [], []
    need: dict[str, list[str]] = {}
    for split in splits:
        for rec in dataset.records(split):
            items = []
            for i, p in enumerate(rec.persons):
                tags = tuple(sorted(set(rec.tags) | set(p.tags)))
                if p.smpl is None or not p.smpl.valid:
                    why = "no GT SMPL" if p.smpl is None else "GT SMPL marked invalid"
                    excluded.append(PersonResult(split, rec.image, rec.index, i, tags, "excluded", reason=why))
                    continue
                use_detected = inputs == "detected" or (inputs == "auto" and p.input_keypoints is not None)
                if use_detected and p.input_keypoints is None:
                    no_input.append(_where(rec, i))
                    continue
                if use_detected:
                    kp = np.asarray(p.input_keypoints, np.float64)
                    kp30 = kp if p.input_format == "j30" else to_j30(kp[None], p.input_format)[0]
                else:
                    kp30 = np.asarray(p.keypoints_2d, np.float64)
                gender = p.smpl.gender
                if gender not in available:
                    need.setdefault(gender, []).append(_where(rec, i))
                body = gender if gender in available else "neutral"
                items.append(_Item(rec, i, tags, kp30, "detected" if use_detected else "gt", body))
            plan.append((rec, items))
    if no_input:
        raise InputError(f"inputs 'detected': {len(no_input)} person(s) with GT have no input_keypoints "
                         f"(detector output) in the dataset: {_list(no_input)}. Use inputs 'auto' (GT "
                         "keypoints for those persons) or 'gt', or add the detections to the dataset.")
    if need and not allow_neutral_gt:
        lines = ["GT SMPL bodies missing: the GT of these persons needs a gendered SMPL model that was not given:"]
        for g, who in sorted(need.items()):
            lines.append(f"  {g} ({len(who)} person(s); pass --smpl-{g} PATH, gt_bodies[{g!r}] in the API): "
                         f"{_list(who)}")
        lines.append("  PATH: the gendered SMPL model (" + " / ".join(_GENDER_FILES[g] for g in sorted(need)
                     if g in _GENDER_FILES) + " from https://smpl.is.tue.mpg.de), its .pkl or a copy converted "
                     "with `dpmesh weights import-smpl FILE --weights DIR`, DIR a folder of its own, NOT your weights "
                     "directory (then pass DIR or its .npz).")
        lines.append("  Or pass --allow-neutral-gt to build their GT with the neutral body (numbers are then "
                     "not comparable with published results).")
        raise WeightsError("\n".join(lines))
    fallback = {g: len(who) for g, who in need.items()}
    return plan, excluded, fallback


# --------------------------------------------------------------------------- evaluation


def _pelvis_row(body) -> np.ndarray:
    """(6890,) float64 SMPL J_regressor row 0 (pelvis) of an SMPLBody (its J30 rows 0-23 = J_regressor)."""
    return body.J30[0].detach().cpu().double().numpy()


def _gt_vertices(body, smpl_params: list) -> np.ndarray:
    """(B, 6890, 3) float32 metres: SMPL of the GT params with ``body`` (transl None -> 0)."""
    import torch

    def t(rows):
        return torch.as_tensor(np.stack(rows), dtype=torch.float32, device=body.device)

    out = body(t([s.global_orient for s in smpl_params]), t([s.body_pose for s in smpl_params]),
               t([s.betas for s in smpl_params]),
               t([s.transl if s.transl is not None else np.zeros(3, np.float32) for s in smpl_params]))
    return out.vertices.detach().cpu().numpy()


def _aggregate(persons: list[PersonResult], splits: Sequence[str]) -> list[ReportRow]:
    rows = []
    for split in splits:
        in_split = [p for p in persons if p.split == split]
        subsets = [None] + sorted({t for p in in_split for t in p.tags})
        for tag in subsets:
            sel = [p for p in in_split if tag is None or tag in p.tags]
            ev = [p for p in sel if p.status == "evaluated"]
            ran = [p for p in sel if p.status != "excluded"]

            def mean(k: str) -> float:
                return float(np.mean([getattr(p, k) for p in ev])) if ev else float("nan")

            rows.append(ReportRow(
                split=split, subset=tag, count=len(ran), evaluated=len(ev),
                failed=sum(p.status == "failed" for p in sel), excluded=sum(p.status == "excluded" for p in sel),
                mpjpe=mean("mpjpe"), pa_mpjpe=mean("pa_mpjpe"), mpve=mean("mpve"),
                inputs_detected=sum(p.input_source == "detected" for p in ran),
                inputs_gt=sum(p.input_source == "gt" for p in ran)))
    return rows


def evaluate_dataset(pipeline, dataset, *, splits: Sequence[str] | None = None, inputs: str = "auto",
                     h36m_regressor: np.ndarray, gt_bodies: Mapping[str, object], allow_neutral_gt: bool = False,
                     batch_size: int = 16, chunk: int = 8,
                     progress: Callable[[int, int], None] | None = None) -> EvaluationReport:
    """Run ``pipeline`` on every image of ``splits`` and score its meshes against the GT SMPL meshes.

    Args:
        pipeline: a loaded :class:`~dpmesh_infer.pipeline.Pipeline`.
        dataset: an opened :class:`~dpmesh_infer.data.format.Dataset`.
        splits: split names (default: all of the dataset's, in its order).
        inputs: "auto", "gt" or "detected" (module docstring).
        h36m_regressor: (17, 6890) H36M joint regressor.
        gt_bodies: gender ("neutral", "male", "female") -> :class:`~dpmesh_infer.models.body.SMPLBody`;
            "neutral" is required.
        allow_neutral_gt: build GT with the neutral body for persons whose gendered body is absent
            (recorded as a warning) instead of raising.
        batch_size: persons per network batch; chunk: images per pipeline call.
        progress: called as ``progress(images_done, images_total)`` after each chunk.

    Returns:
        :class:`EvaluationReport`; metrics in mm.

    Raises:
        InputError: bad option, unknown split, missing images, or ``inputs="detected"`` with persons
            lacking ``input_keypoints`` (the message names them).
        WeightsError: a gendered GT body is needed but absent (and not ``allow_neutral_gt``), or the
            regressor has the wrong shape.
    """
    if inputs not in INPUT_MODES:
        raise InputError(f"inputs must be one of {', '.join(INPUT_MODES)}, got {inputs!r}")
    if batch_size < 1 or chunk < 1:
        raise InputError("batch_size and chunk must be at least 1")
    if "neutral" not in gt_bodies:
        raise InputError("gt_bodies must contain the 'neutral' SMPL body")
    reg = check_regressor(h36m_regressor, where="h36m_regressor", what="H36M joint regressor", rows=17,
                          dtype=np.float64)
    splits = _check_splits(dataset, splits)
    plan, excluded, fallback = _plan(dataset, splits, inputs, set(gt_bodies), allow_neutral_gt)
    todo = [(rec, items) for rec, items in plan if items]
    missing = [str(dataset.image_path(rec)) for rec, _ in todo if not dataset.image_path(rec).is_file()]
    if missing:
        raise InputError(f"{len(missing)} image(s) of {dataset.root} not found: {_list(missing)}")

    pred_pelvis = _pelvis_row(pipeline.body)
    results: dict[tuple[str, int, int], PersonResult] = {}
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        out = pipeline([str(dataset.image_path(rec)) for rec, _ in part],
                       keypoints=[np.stack([it.keypoints30 for it in items]) for _, items in part],
                       batch_size=batch_size)
        done: list[tuple[_Item, np.ndarray]] = []
        for (rec, items), res in zip(part, out):
            skipped = dict(res.skipped)
            kept = [it for j, it in enumerate(items) if j not in skipped]
            for j, it in enumerate(items):
                if j in skipped:
                    results[(rec.split, rec.index, it.person_index)] = _result(it, "failed", reason=skipped[j])
            done += [(it, person.vertices) for it, person in zip(kept, res.persons, strict=True)]
        for gender in sorted({it.gt_body for it, _ in done}):
            group = [(it, v) for it, v in done if it.gt_body == gender]
            body = gt_bodies[gender]
            gt_v = _gt_vertices(body, [it.record.persons[it.person_index].smpl for it, _ in group])
            m = evaluate_meshes(np.stack([v for _, v in group]), gt_v, h36m_regressor=reg,
                                smpl_regressor=pred_pelvis, gt_smpl_regressor=_pelvis_row(body))
            for k, (it, _) in enumerate(group):
                results[(it.record.split, it.record.index, it.person_index)] = _result(
                    it, "evaluated", mpjpe=float(m.mpjpe[k]), pa_mpjpe=float(m.pa_mpjpe[k]), mpve=float(m.mpve[k]))
        if progress is not None:
            progress(min(start + chunk, len(todo)), len(todo))

    persons = sorted(list(results.values()) + excluded, key=lambda p: (splits.index(p.split), p.record, p.person))
    settings = EvaluationSettings(dataset=str(dataset.root), dataset_name=dataset.name, splits=tuple(splits),
                                  inputs=inputs, batch_size=batch_size, chunk=chunk, allow_neutral_gt=allow_neutral_gt)
    report = EvaluationReport(settings=settings, rows=_aggregate(persons, splits), persons=persons)
    if getattr(pipeline.config, "untrained", False):
        report.warnings.append("the weights are UNTRAINED (random init): the numbers are meaningless")
    if fallback:
        n = ", ".join(f"{c} {g}" for g, c in sorted(fallback.items()))
        report.warnings.append(f"GT of {n} person(s) built with the NEUTRAL SMPL body (allow_neutral_gt): the "
                               "numbers are not comparable with published results")
    if report.failures:
        report.warnings.append(f"{len(report.failures)} person(s) with GT could not be reconstructed (listed under "
                               "failures); they count in 'persons' but not in the metric means")
    return report


def _result(it: _Item, status: str, **kw) -> PersonResult:
    rec = it.record
    return PersonResult(split=rec.split, image=rec.image, record=rec.index, person=it.person_index, tags=it.tags,
                        status=status, gender=rec.persons[it.person_index].smpl.gender, gt_body=it.gt_body,
                        input_source=it.input_source, **kw)


def _check_splits(dataset, splits: Sequence[str] | None) -> list[str]:
    if not splits:
        return list(dataset.splits)
    unknown = [s for s in splits if s not in dataset.splits]
    if unknown:
        raise InputError(f"{dataset.root} has no split {', '.join(map(repr, unknown))} "
                         f"(it has {', '.join(dataset.splits)})")
    return list(dict.fromkeys(splits))


# --------------------------------------------------------------------------- files


def load_h36m_regressor(path: str | os.PathLike | None, weights_dir: str | os.PathLike) -> tuple[np.ndarray, str, str]:
    """The (17, 6890) float64 H36M regressor: ``path`` if given, else ``<weights_dir>/smpl/J_regressor_h36m.npy``.

    Returns (regressor, where it came from, its file's SHA-256). Read with ``allow_pickle=False``.

    Raises:
        WeightsError: not found (naming both places and where to get the file), unreadable, or wrong shape.
    """
    default = Path(weights_dir) / SMPL_DIR / H36M_REGRESSOR_FILE
    p = Path(path) if path is not None else default
    if not p.is_file():
        given = f"--h36m-regressor {p} (not found)" if path is not None else "--h36m-regressor (not given)"
        raise WeightsError(f"H36M joint regressor not found. Looked at: {given}; {default} "
                           f"({'not found' if not default.is_file() else 'not used'}).\n"
                           + _REGRESSOR_HINT.format(default=default))
    a = read_regressor_npy(p, what="H36M joint regressor", rows=17, dtype=np.float64)
    source = f"{p.resolve()}" + (" (--h36m-regressor)" if path is not None else " (weights default)")
    return a, source, hashlib.sha256(p.read_bytes()).hexdigest()


def load_gt_body(path: str | os.PathLike, gender: str):
    """An :class:`~dpmesh_infer.models.body.SMPLBody` from a gendered SMPL model (CPU): a folder or ``.npz``
    written by ``dpmesh weights import-smpl``, or the official ``.pkl`` (read with the restricted,
    non-executing unpickler). Raises WeightsError when missing or invalid."""
    from .models.body import SMPLBody
    from .weights.smpl import load_smpl, read_smpl_source

    p = Path(path)
    if not p.exists():
        raise WeightsError(f"--smpl-{gender} {p}: not found")
    if p.is_file() and p.suffix.lower() == ".pkl":
        return SMPLBody(read_smpl_source(p))
    return load_smpl(p)


def write_report(report: EvaluationReport, path: str | os.PathLike, *, per_person: bool = False) -> Path:
    """Write ``report.to_dict(per_person)`` as JSON to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report.to_dict(per_person=per_person), indent=2, allow_nan=False) + "\n"
    return write_text(path, text)


def _out_path(out: Path | None, dataset_name: str) -> Path:
    name = (re.sub(r"[^A-Za-z0-9._-]+", "_", dataset_name).strip("._") or "dataset") + "-eval.json"
    if out is None:
        return Path.cwd() / name
    out = Path(out)
    if out.is_dir():
        return out / name
    if out.suffix.lower() != ".json":
        raise InputError(f"--out {out}: give a .json file or an existing folder")
    return out


# --------------------------------------------------------------------------- command


def evaluate_command(weights: Path | None, data: Path, *, out: Path | None = None, splits: Sequence[str] | None = None,
                     inputs: str = "auto", h36m_regressor: Path | None = None, smpl_male: Path | None = None,
                     smpl_female: Path | None = None, allow_neutral_gt: bool = False, device: str = "auto",
                     batch_size: int = 16, chunk: int = 8, per_person: bool = False,
                     progress: Callable[[int, int], None] | None = None,
                     refine=None) -> tuple[EvaluationReport, Path]:
    """Body of ``dpmesh evaluate``: check everything that can fail cheaply, then load, run, write the JSON.

    ``out``: a .json path, or an existing folder; default ``./<dataset name>-eval.json`` (current
    directory). Order of checks (all before the pipeline is loaded): options, dataset, weights directory,
    H36M regressor (exit 3 if missing), gendered GT bodies (exit 3 if needed and absent), inputs.

    ``refine``: a :class:`~dpmesh_infer.refine.RefineConfig` to evaluate the refined bodies (recorded in
    the report's settings).

    Returns (report, path of the written JSON).
    """
    from .atomic import check_writable_file
    from .data.format import open_dataset
    from .inputs import refuse_overwriting_inputs
    from .weights.resolve import resolve_weights_dir

    if inputs not in INPUT_MODES:
        raise InputError(f"--inputs must be one of {', '.join(INPUT_MODES)}, got {inputs!r}")
    if batch_size < 1 or chunk < 1:
        raise InputError("--batch-size and --chunk must be at least 1")
    dataset = open_dataset(data)
    split_list = _check_splits(dataset, splits)
    out_path = _out_path(out, dataset.name)
    dataset_files = [("dataset description", dataset.root / "dataset.json")]
    dataset_files += [("annotation file", dataset.root / "annotations" / f"{sp}.jsonl") for sp in split_list]
    refuse_overwriting_inputs(inputs=dataset_files, files=[out_path])
    check_writable_file(out_path)  # before minutes of computation
    loc = resolve_weights_dir(weights)
    regressor, reg_source, reg_sha = load_h36m_regressor(h36m_regressor, loc.path)
    given = {g: p for g, p in (("male", smpl_male), ("female", smpl_female)) if p is not None}
    for g, p in given.items():
        if not Path(p).exists():
            raise WeightsError(f"--smpl-{g} {p}: not found")
    _plan(dataset, split_list, inputs, {"neutral", *given}, allow_neutral_gt)  # fail before loading anything big
    bodies = {g: load_gt_body(p, g) for g, p in given.items()}

    from .pipeline import Pipeline

    pipe = Pipeline.from_pretrained(loc.path, device=device, refine=refine)
    gt_bodies = {"neutral": pipe.body, **{g: b.to(pipe.device) for g, b in bodies.items()}}
    report = evaluate_dataset(pipe, dataset, splits=split_list, inputs=inputs, h36m_regressor=regressor,
                              gt_bodies=gt_bodies, allow_neutral_gt=allow_neutral_gt, batch_size=batch_size,
                              chunk=chunk, progress=progress)
    gt_smpl = {"neutral": f"{loc.path.resolve()}/smpl (the weights' body)",
               **{g: str(Path(p).resolve()) for g, p in given.items()}}
    report.settings = dataclasses.replace(report.settings, weights=str(loc.path.resolve()), device=str(pipe.device),
                                          h36m_regressor=reg_source, h36m_regressor_sha256=reg_sha, gt_smpl=gt_smpl,
                                          refine=None if refine is None else refine.to_dict())
    return report, write_report(report, out_path, per_person=per_person)
