"""The results store: one tidy table of curves and one table of runs, as Parquet in a run folder.

Writes are atomic (temp file + rename), curves first and runs second, so a killed command
leaves at worst curve rows of a run that is not in runs.parquet; loading drops those, and a
resumed command reruns that run.

Jobs that share a run folder at the same time (a Hydra multirun on joblib, SLURM or Ray) each
write only their own shard, `shards/<name>/`; every reader sees the folder's own tables and all
of its shards as one store, so a run finished by any job counts as finished for all of them.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd

from lhopt_cli.support.files import atomic_write
CURVE_COLUMNS = [
    "run_id", "command", "method", "task", "task_params", "model_params", "seed", "lr0", "schedule",
    "step", "total_steps", "tokens_or_examples", "flops", "train_loss", "valid_loss",
    "lr", "beta1", "beta2", "eps", "weight_decay", "clip", "wall_s",
]
RUN_COLUMNS = [
    "run_id", "command", "method", "task", "task_params", "model_params", "seed", "lr0", "schedule",
    "status", "steps", "total_steps", "final_valid_loss", "wall_s", "error",
]
FINISHED = ("done", "diverged")  # a failed run is retried on resume


class StoreError(ValueError):
    pass


# The sha256 of the table's content, kept in the file's own key-value metadata: page checksums
# do not cover the footer, where a flipped bit can change a row group's row count or a column's
# type and the file still reads, as other data. Tables written before it existed have none.
CONTENT_KEY = b"lhopt_content_sha256"


def content_digest(frame: pd.DataFrame) -> str:
    """sha256 over the column names, dtypes and every value (pandas' row hashes), in order."""
    digest = hashlib.sha256(repr([(str(c), str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def _atomic_parquet(frame: pd.DataFrame, path: Path) -> None:
    """Parquet with a CRC32 on every page (checked on read) and the content's sha256 in its
    metadata (checked on read), written through a temporary file and a rename; a failed write (a
    full disk) removes the temporary file and raises StoreError, and the table already there
    stays whole."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), CONTENT_KEY: content_digest(frame).encode()})
    try:
        atomic_write(path, lambda tmp: pq.write_table(table, tmp, write_page_checksum=True))
    except OSError as err:
        raise StoreError(f"{path}: could not be written ({err.strerror or err}); nothing recorded is lost: "
                         "rerun the command once there is room") from None


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.exists():
        return pd.DataFrame(columns=columns)
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, page_checksum_verification=True)
        frame = table.to_pandas()
    except Exception as err:  # pyarrow raises several types for a damaged file
        raise StoreError(f"{path}: damaged or not a Parquet table ({type(err).__name__}: "
                         f"{str(err).splitlines()[0][:120] if str(err) else 'unreadable'})") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise StoreError(f"{path}: not an lhopt results table (missing columns: {', '.join(missing)})")
    # the column types live in the footer's metadata, which page checksums do not cover
    wrong = [c for c in columns if c in NUMERIC_COLUMNS and not _is_number(frame[c])]
    if wrong:
        raise StoreError(f"{path}: damaged (column {wrong[0]} reads as {frame[wrong[0]].dtype}, not numbers)")
    recorded = (table.schema.metadata or {}).get(CONTENT_KEY)
    if recorded is not None and recorded.decode(errors="replace") != content_digest(frame):
        raise StoreError(f"{path}: damaged (its content is not what was written: {len(frame)} rows read); restore it "
                         "or remove it to run its runs again")
    return frame


NUMERIC_COLUMNS = {"model_params", "seed", "lr0", "step", "steps", "total_steps", "tokens_or_examples", "flops",
                   "train_loss", "valid_loss", "final_valid_loss", "lr", "beta1", "beta2", "eps", "weight_decay",
                   "clip", "wall_s"}


def _is_number(column: pd.Series) -> bool:
    kind = column.dtype
    return (pd.api.types.is_numeric_dtype(kind) and not pd.api.types.is_bool_dtype(kind)
            and not pd.api.types.is_timedelta64_dtype(kind)) or (column.dtype == object and column.empty)


def _merge(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
    parts = [frame for frame in parts if not frame.empty]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


class ResultsStore:
    """results.parquet (curves) and runs.parquet (one row per run) under `run_dir`, plus its shards.

    With `shard`, writes go to `run_dir/shards/<shard>/` only; reads always merge everything.
    """

    def __init__(self, run_dir: str | Path, shard: str | None = None):
        self.run_dir = Path(run_dir)
        self.write_dir = self.run_dir / "shards" / shard if shard else self.run_dir
        self.curves_path = self.write_dir / "results.parquet"
        self.runs_path = self.write_dir / "runs.parquet"
        others = [self.run_dir] + sorted(p for p in (self.run_dir / "shards").glob("*") if p.is_dir())
        others = [d for d in others if d != self.write_dir]
        self._others = [(_read(d / "runs.parquet", RUN_COLUMNS), _read(d / "results.parquet", CURVE_COLUMNS))
                        for d in others]
        self._own_runs = _read(self.runs_path, RUN_COLUMNS)
        self._own_curves = _read(self.curves_path, CURVE_COLUMNS)
        self._refresh()

    def _refresh(self) -> None:
        """The merged view: a run recorded by several writers keeps its finished record."""
        runs = _merge([r for r, _ in self._others] + [self._own_runs], RUN_COLUMNS)
        runs = runs.assign(_finished=runs.status.isin(FINISHED)).sort_values("_finished", kind="stable")
        self.runs = runs.drop_duplicates("run_id", keep="last").drop(columns="_finished").sort_index()
        self.recorded_runs = self.runs  # every run recorded, its curve rows kept or not (what a folder was made for)
        curves = []
        for runs_part, curves_part in [*self._others, (self._own_runs, self._own_curves)]:
            curves.append(curves_part[curves_part.run_id.isin(runs_part.run_id)])  # drop unrecorded runs
        curves = _merge(curves, CURVE_COLUMNS)
        # a finished run whose curve rows are gone (results.parquet deleted, or another folder's
        # copied in) is not finished: it is run again rather than summarised from nothing
        finished = self.runs.status.isin(FINISHED)
        self.runs = self.runs[~finished | self.runs.run_id.isin(curves.run_id)]
        self.curves = curves[curves.run_id.isin(self.runs.run_id)]
        if len(self._others):  # the same run finished twice (two racing jobs): keep one curve
            self.curves = self.curves.drop_duplicates(["run_id", "step"], keep="last").reset_index(drop=True)

    def finished_ids(self) -> set[str]:
        return set(self.runs.loc[self.runs.status.isin(FINISHED), "run_id"])

    def add(self, finished: list[tuple[dict, list[dict]]]) -> None:
        """Record runs (replacing earlier failed attempts) with their curves, in one atomic write."""
        ids = {run["run_id"] for run, _ in finished}
        curves = [pd.DataFrame([{**{k: run[k] for k in CURVE_COLUMNS if k in run}, **point} for point in curve],
                               columns=CURVE_COLUMNS) for run, curve in finished if curve]
        runs = pd.DataFrame([run for run, _ in finished], columns=RUN_COLUMNS)
        kept_curves = self._own_curves[~self._own_curves.run_id.isin(ids)]
        kept_runs = self._own_runs[~self._own_runs.run_id.isin(ids)]
        self._own_curves = pd.concat([frame for frame in (kept_curves, *curves) if not frame.empty] or [kept_curves],
                                     ignore_index=True)
        self._own_runs = pd.concat([frame for frame in (kept_runs, runs) if not frame.empty], ignore_index=True)
        self.write_dir.mkdir(parents=True, exist_ok=True)
        _atomic_parquet(self._own_curves, self.curves_path)
        _atomic_parquet(self._own_runs, self.runs_path)
        self._refresh()


def load(*paths: str | Path) -> pd.DataFrame:
    """Curves of one or more run folders (or results.parquet files) as one DataFrame."""
    frames = []
    for path in paths:
        path = Path(path)
        store = ResultsStore(path.parent if path.suffix == ".parquet" else path)
        frames.append(store.curves)
    if not frames:
        raise StoreError("no results paths given")
    return pd.concat(frames, ignore_index=True)
