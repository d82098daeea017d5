"""Trace readers: SageServe CSV, Azure LLM inference CSV, and the project's canonical CSV/Parquet.

Every reader returns a :class:`Workload` over the caller's region and model names (the config's)
and fails fast with a :class:`WorkloadError` naming the file, the row and the column. Rows are
numbered from 1 over data rows (the header excluded); for CSV files the line number is given too
(the header is line 1; blank lines count as rows with missing values). Nothing is dropped,
reordered or truncated: an input the simulator cannot take is an error, except where a reader
option says otherwise (``min_tokens``), and then the rows it changed are counted in
``Workload.meta['clamped_rows']``. Reading is vectorised (pandas / numpy, no loop per row);
only the distinct priority strings are parsed one by one.

Formats are described in ``traces/README.md``.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from sageserve_env.workload.deployment import assign
from sageserve_env.workload.workload import IW, NIW, TIER_NAMES, Workload, WorkloadError

if TYPE_CHECKING:
    from sageserve_env.config import SimConfig

MAX_TOKENS = 1_000_000  # a prompt or output longer than this is a corrupt row, not a request

SAGESERVE_COLUMNS = ("request_id", "batch_id", "client_tenant", "request_type", "scenario", "sla", "utility",
                     "regions", "model_type", "workload_type", "application_id", "arrival_timestamp",
                     "batch_size", "prompt_size", "token_size")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
CANONICAL_COLUMNS = ("arrival_s", "region", "priority", "model", "tier", "prompt_tokens", "output_tokens",
                     "sla_s", "batch_id")
CANONICAL_SEPARATOR = "|"
CANONICAL_SPLIT = re.compile(re.escape(CANONICAL_SEPARATOR))
PRIORITY_SEPARATORS = re.compile(r"[,;| ]+")  # accepted between region names in a SageServe trace

# Default share of requests per model for the paper's four-model catalogue (also any subset of
# it, renormalised). Chosen so that at ~1.5M requests a day the large models need several
# instances at the peak (configs/scenarios/paper.yaml) while the small ones sit at the floor.
DEFAULT_MODEL_POPULARITY = MappingProxyType({"A": 0.45, "B": 0.20, "C": 0.20, "D": 0.15})

Weights = Union[None, str, Mapping[str, float], Sequence[float]]


class _Table:
    """A trace loaded as strings/numbers, with the file name and row numbering used in errors."""

    def __init__(self, path: Path, df: pd.DataFrame, csv: bool) -> None:
        self.path, self.df, self.csv = path, df, csv

    def fail(self, row: int, column: str, why: str) -> None:
        """Raise for 0-based data row ``row`` and ``column``."""
        value = self.df[column].iloc[row]
        value = value.item() if isinstance(value, np.generic) else value  # -5, not np.int64(-5)
        where = f"row {row + 1} (line {row + 2})" if self.csv else f"row {row + 1}"
        raise WorkloadError(f"{self.path}: {where}, column '{column}' = {value!r}: {why}")

    def check(self, bad: np.ndarray, column: str, why: str) -> None:
        """Fail on the first True of ``bad`` (a boolean array over rows)."""
        if bad.any():
            self.fail(int(np.argmax(bad)), column, why)

    def present(self, column: str, allow_missing: bool = False) -> pd.Series:
        s = self.df[column]
        if not allow_missing:
            self.check(s.isna().to_numpy(), column, "missing value")
        return s

    def numbers(self, column: str, allow_missing: bool = False) -> np.ndarray:
        """The column as float64; non-numeric text, infinities and (unless allowed) blanks fail."""
        s = self.present(column, allow_missing)
        if not pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
            num = pd.to_numeric(s.astype("string").str.strip(), errors="coerce")
            self.check((num.isna() & s.notna()).to_numpy(), column, "not a number")
            s = num
        x = s.to_numpy(dtype=np.float64, na_value=np.nan)
        self.check(np.isinf(x), column, "not a finite number")
        return x

    def integers(self, column: str) -> np.ndarray:
        x = self.numbers(column)
        self.check(x != np.floor(x), column, "not an integer")
        return x.astype(np.int64)

    def times(self, column: str, x: np.ndarray) -> np.ndarray:
        """Arrival times: >= 0 and non-decreasing (traces are replayed in file order)."""
        self.check(np.r_[False, np.diff(x) < 0], column, "earlier than the previous row (rows must be sorted by time)")
        self.check(x < 0, column, "negative time")
        return x

    def tokens(self, column: str, min_tokens: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
        """Token counts in [1, MAX_TOKENS]; with ``min_tokens``, counts in [0, min_tokens) are
        raised to it. Returns (counts as int32, mask of raised rows)."""
        x = self.numbers(column)
        self.check(x < 0, column, "negative token count")
        self.check(x > MAX_TOKENS, column, f"absurd token count (> {MAX_TOKENS:,})")
        self.check(x != np.floor(x), column, "not an integer")
        x = x.astype(np.int64)
        raised = np.zeros(len(x), dtype=bool)
        if min_tokens is not None:
            raised = x < min_tokens
            x = np.maximum(x, min_tokens)
        self.check(x < 1, column, "token count must be >= 1" +
                   ("" if min_tokens is not None else " (pass min_tokens=1 to raise zero counts to 1)"))
        return x.astype(np.int32), raised

    def categories(self, column: str) -> Tuple[np.ndarray, list]:
        """(codes, distinct values stripped of blanks) of a text column, without missing values;
        lets callers map or parse each distinct value once."""
        s = self.present(column)
        if not isinstance(s.dtype, pd.CategoricalDtype):
            s = s.astype("category")
        return s.cat.codes.to_numpy(), [str(c).strip() for c in s.cat.categories]

    def names(self, column: str, names: Sequence[str], what: str) -> np.ndarray:
        """Indices of the column's values in ``names``; unknown values fail."""
        raw, values = self.categories(column)
        codes = pd.Index(list(names)).get_indexer(values)[raw]
        self.check(codes < 0, column, f"unknown {what}; known: {list(names)}")
        return codes.astype(np.int16)


def _read_csv(path: Path, columns: Sequence[str], dtype: Dict[str, str]) -> _Table:
    """Read a CSV whose header must hold exactly ``columns`` (any order)."""
    try:
        header = list(pd.read_csv(path, nrows=0).columns)
    except pd.errors.EmptyDataError:
        raise WorkloadError(f"{path}: empty file (no header, no rows)") from None
    except OSError as exc:
        raise WorkloadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    _check_columns(path, header, columns, "header (line 1)")
    try:
        df = pd.read_csv(path, dtype=dtype, skip_blank_lines=False)
    except (pd.errors.ParserError, ValueError) as exc:
        raise WorkloadError(f"{path}: {exc}") from None
    if df.empty:
        raise WorkloadError(f"{path}: no data rows (header only)")
    return _Table(path, df, csv=True)


def _check_columns(path: Path, found: Sequence[str], expected: Sequence[str], where: str) -> None:
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if missing or extra:
        parts = ([f"missing column(s) {missing}"] if missing else []) + \
                ([f"unexpected column(s) {extra}"] if extra else [])
        raise WorkloadError(f"{path}: {where}: {'; '.join(parts)}; expected exactly {list(expected)}")


def nearest_first_orders(utc_offsets_h: Sequence[float]) -> Tuple[Tuple[int, ...], ...]:
    """Priority order per home region: home first, then the others by |UTC offset difference|
    (nearest first, ties in config order). Order ``i`` belongs to home region ``i``."""
    off = np.asarray(utc_offsets_h, dtype=float)
    return tuple((h,) + tuple(sorted((r for r in range(len(off)) if r != h), key=lambda r: abs(off[r] - off[h])))
                 for h in range(len(off)))


def split_weights(names: Sequence[str], weights: Weights, default: Optional[Mapping[str, float]] = None,
                  what: str = "split") -> np.ndarray:
    """Probabilities over ``names`` from a name -> weight mapping (names left out get 0), a
    sequence aligned with ``names``, a single name (all weight on it), or None: ``default`` when
    it covers every name (renormalised), else uniform."""
    if weights is None or (isinstance(weights, Mapping) and not weights):
        if default is not None and all(n in default for n in names):
            weights = {n: default[n] for n in names}
        else:
            return np.full(len(names), 1.0 / len(names))
    if isinstance(weights, str):
        weights = {weights: 1.0}
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise WorkloadError(f"{what}: unknown name(s) {unknown}; known: {list(names)}")
        w = np.array([float(weights.get(n, 0.0)) for n in names])
    else:
        w = np.asarray(weights, dtype=float)
        if w.shape != (len(names),):
            raise WorkloadError(f"{what}: {len(w)} weights for {len(names)} names {list(names)}")
    if not (np.isfinite(w).all() and (w >= 0).all() and w.sum() > 0):
        raise WorkloadError(f"{what}: weights {w.tolist()} must be finite, >= 0, with a positive sum")
    return w / w.sum()


def model_popularity(cfg: "SimConfig") -> np.ndarray:
    """Share of requests per model: ``cfg.workload.model_popularity``, else the default for the
    paper's catalogue (``DEFAULT_MODEL_POPULARITY``), else uniform."""
    return split_weights(cfg.workload_models, cfg.workload.model_popularity, DEFAULT_MODEL_POPULARITY,
                         "workload.model_popularity")


def region_shares(cfg: "SimConfig") -> np.ndarray:
    """Share of requests per home region: ``cfg.workload.region_weights``, else uniform."""
    return split_weights(cfg.region_names, cfg.workload.region_weights, None, "workload.region_weights")


def _priorities(t: _Table, column: str, regions: Sequence[str], parse):
    """Codes into a tuple of distinct priority orders; ``parse(text)`` gives region indices or a
    reason string. Only distinct strings are parsed."""
    codes, uniques = t.categories(column)
    orders: Dict[Tuple[int, ...], int] = {}
    remap = np.empty(len(uniques), dtype=np.int16)
    for u, text in enumerate(uniques):
        order = parse(text)
        if isinstance(order, str) or not order or len(set(order)) != len(order):
            why = order if isinstance(order, str) else "region listed twice or none listed"
            t.fail(int(np.argmax(codes == u)), column, f"bad region priority: {why}; regions: {list(regions)}")
        remap[u] = orders.setdefault(tuple(order), len(orders))
    return remap[codes], tuple(orders)


def _parse_names(text: str, index: Mapping[str, int], separators: "re.Pattern[str]"):
    parts = [p for p in separators.split(text) if p]
    unknown = [p for p in parts if p not in index]
    return f"unknown region(s) {unknown}" if unknown else [index[p] for p in parts]


def _parse_sageserve(text: str, index: Mapping[str, int], n_regions: int):
    """SageServe writes a priority as region digits without separator ("021": westus, eastus,
    centralus in its Region enum order); a digit is an index into the caller's regions. A CSV
    round trip through an integer column loses a leading 0 ("21"); like SageServe's reader we put
    it back when exactly region 0 is missing from an otherwise complete list."""
    if text.isdigit() and text not in index:
        if len(text) == n_regions - 1 and "0" not in text:
            text = "0" + text
        digits = [int(c) for c in text]
        bad = [d for d in digits if d >= n_regions]
        return f"region digit(s) {bad} out of range" if bad else digits
    return _parse_names(text, index, PRIORITY_SEPARATORS)


def _build(t: _Table, regions, models, arrival, priority, orders, model, tier, prompt, output, sla, batch,
           meta) -> Workload:
    home = np.array([o[0] for o in orders], dtype=np.int16)[priority]
    return Workload(tuple(regions), tuple(models), arrival, home, priority.astype(np.int16), model,
                    tier.astype(np.int8), prompt, output, sla, batch.astype(np.int64), priority_orders=orders,
                    source=str(t.path), meta=meta)


def read_sageserve(path, regions: Sequence[str], models: Sequence[str], niw_deadline_s: float = 86400.0, *,
                   min_tokens: Optional[int] = None) -> Workload:
    """Read a SageServe trace CSV (the 15 ``SAGESERVE_COLUMNS``, any order).

    One row is one request (``batch_size`` is not a multiplier). IW = ``workload_type`` 'prod'
    with ``batch_id`` -1; NIW = 'prod' with a batch id >= 0, and every 'dev' row. ``sla`` is in
    seconds: the TTFT target of IW rows (required, > 0) and the deadline of NIW rows (missing or
    <= 0 -> ``niw_deadline_s``, as SageServe's 'dev' rows carry -1). ``regions`` is the priority
    list, home region first (see ``_parse_sageserve``; names separated by ',', ';', '|' or ' '
    are accepted too). ``arrival_timestamp`` is in seconds, kept as is. ``prompt_size`` and
    ``token_size`` are prompt and output tokens. ``request_id``, ``client_tenant`` (a tenant id,
    not a region), ``request_type``, ``scenario``, ``utility``, ``application_id`` and
    ``batch_size`` must be present but are not used, except that a ``request_id`` may not
    repeat. SageServe's own reader raised zero ``token_size`` to 1 silently; pass
    ``min_tokens=1`` for that, counted in meta.
    """
    path = Path(path)
    t = _read_csv(path, SAGESERVE_COLUMNS, {c: "category" for c in ("regions", "model_type", "workload_type")})
    index = {name: i for i, name in enumerate(regions)}
    arrival = t.times("arrival_timestamp", t.numbers("arrival_timestamp"))
    priority, orders = _priorities(t, "regions", regions, lambda s: _parse_sageserve(s, index, len(regions)))
    model = t.names("model_type", models, "model")
    prod = t.names("workload_type", ("prod", "dev"), "workload_type") == 0
    batch = t.integers("batch_id")
    t.check(batch < -1, "batch_id", "must be -1 (no batch) or >= 0")
    tier = np.where(prod & (batch == -1), IW, NIW)
    sla = t.numbers("sla", allow_missing=True)
    t.check((tier == IW) & ~(sla > 0), "sla", "an IW request needs a TTFT target > 0 seconds")
    defaulted = ~(sla > 0)
    sla = np.where(defaulted, float(niw_deadline_s), sla)
    prompt, p_raised = t.tokens("prompt_size", min_tokens)
    output, o_raised = t.tokens("token_size", min_tokens)
    ids = t.present("request_id", allow_missing=True)
    repeated = (ids.duplicated(keep="first") & ids.notna()).to_numpy()
    if repeated.any():
        row = int(np.argmax(repeated))
        first = int(np.argmax((ids == ids.iloc[row]).to_numpy()))
        t.fail(row, "request_id", f"duplicate request_id (first used in row {first + 1})")
    meta = {"format": "sageserve", "rows": len(arrival), "niw_default_deadline_rows": int(defaulted.sum()),
            "clamped_rows": int((p_raised | o_raised).sum())}
    return _build(t, regions, models, arrival, priority, orders, model, tier, prompt, output, sla, batch, meta)


def read_azure(path, regions: Sequence[str], models: Sequence[str], *, rng_seed: int = 0,
               region_split: Weights = None, model_split: Weights = None, iw_share: float = 1.0,
               niw_deadline_s: float = 86400.0, ttft_slo_s: float = 10.0,
               utc_offsets_h: Optional[Sequence[float]] = None, min_tokens: Optional[int] = 1) -> Workload:
    """Read an Azure LLM inference trace CSV (``TIMESTAMP``, ``ContextTokens``, ``GeneratedTokens``).

    Times are seconds since the first row's wall-clock ``TIMESTAMP`` (rows must be sorted).
    The trace has no region, model or tier, so they are drawn, reproducibly, from
    ``np.random.default_rng(rng_seed)`` in this order, one vectorised draw each: home region
    with probabilities ``region_split`` (default uniform), model with ``model_split`` (default
    uniform; a single name puts every request on it), then NIW when a uniform draw is
    >= ``iw_share`` (default 1.0: all IW; Azure's conversation trace is interactive). IW requests
    get ``ttft_slo_s``, NIW ``niw_deadline_s``; none belongs to a batch. The priority order is
    the home region then the others by nearest ``utc_offsets_h`` (caller's order without them).
    Token counts of 0 are raised to ``min_tokens`` (default 1; ``None`` makes them an error),
    counted in ``meta['clamped_rows']``.
    """
    path = Path(path)
    t = _read_csv(path, AZURE_COLUMNS, {"TIMESTAMP": "string"})
    text = t.present("TIMESTAMP").str.strip()
    stamp = pd.to_datetime(text, format="ISO8601", errors="coerce")
    t.check(stamp.isna().to_numpy(), "TIMESTAMP", "not a date-time (expected e.g. 2023-11-16 18:15:46.680590)")
    arrival = t.times("TIMESTAMP", (stamp - stamp.iloc[0]).dt.total_seconds().to_numpy(dtype=np.float64))
    prompt, p_raised = t.tokens("ContextTokens", min_tokens)
    output, o_raised = t.tokens("GeneratedTokens", min_tokens)
    if not 0.0 <= iw_share <= 1.0:
        raise WorkloadError(f"{path}: iw_share = {iw_share!r} must be in [0, 1]")
    n = len(arrival)
    rng = np.random.default_rng(rng_seed)
    home = rng.choice(len(regions), size=n, p=split_weights(regions, region_split, what="region_split"))
    model = rng.choice(len(models), size=n, p=split_weights(models, model_split, what="model_split"))
    tier = np.where(rng.random(n) < iw_share, IW, NIW)
    orders = nearest_first_orders(utc_offsets_h if utc_offsets_h is not None else [0.0] * len(regions))
    sla = np.where(tier == IW, float(ttft_slo_s), float(niw_deadline_s))
    meta = {"format": "azure", "rows": n, "start": str(stamp.iloc[0]), "rng_seed": rng_seed, "iw_share": iw_share,
            "clamped_rows": int((p_raised | o_raised).sum())}
    return _build(t, regions, models, arrival, home, orders, model.astype(np.int16), tier, prompt, output, sla,
                  np.full(n, -1), meta)


def read_canonical(path, regions: Sequence[str], models: Sequence[str]) -> Workload:
    """Read the project's canonical trace (``CANONICAL_COLUMNS``), CSV or Parquet by suffix.

    ``arrival_s`` seconds (sorted, >= 0); ``region`` home region name; ``priority`` region names
    joined by '|', home first (must start with ``region``); ``model`` name; ``tier`` 'IW' or
    'NIW'; ``prompt_tokens``, ``output_tokens`` in [1, 1,000,000]; ``sla_s`` > 0 seconds (IW TTFT
    target, NIW deadline); ``batch_id`` -1 or a job id >= 0.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        t = _read_csv(path, CANONICAL_COLUMNS, {c: "category" for c in ("region", "priority", "model", "tier")})
    elif suffix in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise WorkloadError(f"{path}: cannot read as Parquet: {exc}") from None
        _check_columns(path, list(df.columns), CANONICAL_COLUMNS, "schema")
        if df.empty:
            raise WorkloadError(f"{path}: no rows")
        t = _Table(path, df, csv=False)
    else:
        raise WorkloadError(f"{path}: unknown canonical suffix {path.suffix!r}; use .csv or .parquet")
    index = {name: i for i, name in enumerate(regions)}
    arrival = t.times("arrival_s", t.numbers("arrival_s"))
    region = t.names("region", regions, "region")
    priority, orders = _priorities(t, "priority", regions, lambda s: _parse_names(s, index, CANONICAL_SPLIT))
    first = np.array([o[0] for o in orders], dtype=np.int16)[priority]
    t.check(first != region, "priority", "must start with the row's region")
    model = t.names("model", models, "model")
    tier = t.names("tier", TIER_NAMES, "tier")
    prompt, _ = t.tokens("prompt_tokens", None)
    output, _ = t.tokens("output_tokens", None)
    sla = t.numbers("sla_s")
    t.check(~(sla > 0), "sla_s", "must be > 0 seconds")
    batch = t.integers("batch_id")
    t.check(batch < -1, "batch_id", "must be -1 (no batch) or >= 0")
    meta = {"format": "canonical", "rows": len(arrival), "clamped_rows": 0}
    return _build(t, regions, models, arrival, priority, orders, model, tier, prompt, output, sla, batch, meta)


def write_canonical(workload: Workload, path) -> Path:
    """Write ``workload`` in the canonical format, CSV or Parquet by suffix; reads back exactly."""
    path = Path(path)
    w = workload
    order_codes, order_text = pd.factorize(pd.Series([CANONICAL_SEPARATOR.join(w.regions[r] for r in o)
                                                      for o in w.priority_orders], dtype=object))
    df = pd.DataFrame({
        "arrival_s": w.arrival_s,
        "region": pd.Categorical.from_codes(w.region, categories=list(w.regions)),
        "priority": pd.Categorical.from_codes(order_codes[w.priority], categories=order_text),
        "model": pd.Categorical.from_codes(w.model, categories=list(w.models)),
        "tier": pd.Categorical.from_codes(w.tier, categories=list(TIER_NAMES)),
        "prompt_tokens": w.prompt_tokens,
        "output_tokens": w.output_tokens,
        "sla_s": w.sla_s,
        "batch_id": w.batch_id,
    })
    table = pa.Table.from_pandas(df, preserve_index=False)
    suffix = path.suffix.lower()
    if suffix == ".csv":  # Arrow writes shortest round-trip floats, ~30x faster than DataFrame.to_csv
        table = table.cast(pa.schema([pa.field(f.name, pa.string()) if pa.types.is_dictionary(f.type) else f
                                      for f in table.schema]))
        with open(path, "wb") as out:
            out.write((",".join(CANONICAL_COLUMNS) + "\n").encode())
            try:
                pacsv.write_csv(table, out, pacsv.WriteOptions(include_header=False, quoting_style="none"))
            except pa.ArrowInvalid as exc:  # a name holding ',' '"' or a line break
                raise WorkloadError(f"{path}: {exc}") from None
    elif suffix in (".parquet", ".pq"):
        pq.write_table(table, path)
    else:
        raise WorkloadError(f"{path}: unknown canonical suffix {path.suffix!r}; use .csv or .parquet")
    return path


def load_trace(path, fmt: str, cfg: "SimConfig", **options) -> Workload:
    """Read trace ``path`` in format ``fmt`` ('sageserve' | 'azure' | 'canonical') over the
    config's regions and models. For 'azure' the config supplies the assignment rule's inputs
    (region weights, model popularity, IW share, SLO and deadline, UTC offsets); ``options``
    are passed to the reader and override them. The requests are assigned to the endpoints of the
    config's deployment (``sageserve_env.workload.deployment.assign``)."""
    regions, models = cfg.region_names, cfg.workload_models
    if not Path(path).is_file():
        raise WorkloadError(f"trace file {str(path)!r} does not exist or is not a file")
    if fmt == "sageserve":
        return assign(cfg, read_sageserve(path, regions, models, **{"niw_deadline_s": cfg.niw.deadline_s, **options}))
    if fmt == "azure":
        defaults = dict(region_split=region_shares(cfg), model_split=model_popularity(cfg),
                        iw_share=cfg.workload.iw_share, niw_deadline_s=cfg.niw.deadline_s,
                        ttft_slo_s=cfg.slo.iw_ttft_s, utc_offsets_h=[r.utc_offset_h for r in cfg.regions])
        return assign(cfg, read_azure(path, regions, models, **{**defaults, **options}))
    if fmt == "canonical":
        return assign(cfg, read_canonical(path, regions, models, **options))
    raise WorkloadError(f"unknown trace format {fmt!r}; use 'sageserve', 'azure' or 'canonical'")
