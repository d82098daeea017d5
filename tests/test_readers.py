"""Trace readers: good files, bad files (error names file, row and column), round trips."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sageserve_env.config import load_config
from sageserve_env.workload import (IW, NIW, Workload, WorkloadError, load_trace, read_azure, read_canonical,
                                    read_sageserve, write_canonical)
from sageserve_env.workload.readers import SAGESERVE_COLUMNS, nearest_first_orders

REGIONS = ("westus", "centralus", "eastus")
MODELS = ("A", "B", "C", "D")
AZURE_FILE = "azure_llm_2023/AzureLLMInferenceTrace_conv.csv"


def sageserve_rows() -> pd.DataFrame:
    """Five valid SageServe rows: IW, IW with another SLA, a 2-request prod batch, a dev row."""
    rows = [
        # request_id, batch_id, workload_type, sla, regions, model_type, t, prompt, output
        (0, -1, "prod", 10, "021", "A", 0.0, 100, 20),
        (1, -1, "prod", 5, "21", "C", 0.5, 200, 30),  # leading zero lost by an integer round trip
        (2, 7, "prod", 3600, "westus;eastus;centralus", "B", 1.0, 300, 40),
        (3, 7, "prod", 3600, "eastus|centralus", "B", 1.0, 300, 40),
        (4, -1, "dev", -1, "centralus eastus westus", "D", 2.5, 400, 50),
    ]
    df = pd.DataFrame(rows, columns=["request_id", "batch_id", "workload_type", "sla", "regions", "model_type",
                                     "arrival_timestamp", "prompt_size", "token_size"])
    df["client_tenant"], df["request_type"], df["scenario"], df["utility"] = 4, 2, "ES", 1
    df["application_id"], df["batch_size"] = -1, 1
    return df[list(SAGESERVE_COLUMNS)]


def write(df: pd.DataFrame, path) -> str:
    df.to_csv(path, index=False)
    return str(path)


def assert_names(exc: pytest.ExceptionInfo, path, row, column) -> None:
    """The message names the file, the row (1-based data row and its CSV line) and the column."""
    msg = str(exc.value)
    assert str(path) in msg, msg
    if row is None:
        assert "header (line 1)" in msg or "schema" in msg, msg
    else:
        assert re.search(rf"\brow {row}\b", msg), msg
        if str(path).endswith(".csv"):
            assert f"(line {row + 1})" in msg, msg
    assert f"'{column}'" in msg, msg


# --- SageServe -------------------------------------------------------------------------------

def test_sageserve_good(tmp_path):
    w = read_sageserve(write(sageserve_rows(), tmp_path / "t.csv"), REGIONS, MODELS, niw_deadline_s=7200.0)
    assert len(w) == 5 and w.regions == REGIONS and w.models == MODELS
    assert w.tier.tolist() == [IW, IW, NIW, NIW, NIW]
    assert w.sla_s.tolist() == [10.0, 5.0, 3600.0, 3600.0, 7200.0]
    assert w.batch_id.tolist() == [-1, -1, 7, 7, -1]
    orders = [w.priority_orders[p] for p in w.priority]
    assert orders == [(0, 2, 1), (0, 2, 1), (0, 2, 1), (2, 1), (1, 2, 0)]
    assert w.region.tolist() == [0, 0, 0, 2, 1]
    assert w.model.tolist() == [0, 2, 1, 1, 3]
    assert w.prompt_tokens.tolist() == [100, 200, 300, 300, 400]
    assert w.output_tokens.tolist() == [20, 30, 40, 40, 50]
    assert w.meta["niw_default_deadline_rows"] == 1 and w.meta["clamped_rows"] == 0


def test_sageserve_comma_separated_priority(tmp_path):
    df = sageserve_rows()
    df.loc[0, "regions"] = "eastus,westus,centralus"  # pandas quotes the field
    w = read_sageserve(write(df, tmp_path / "t.csv"), REGIONS, MODELS)
    assert w.priority_orders[w.priority[0]] == (2, 0, 1)


def test_sageserve_zero_tokens_opt_in(tmp_path):
    df = sageserve_rows()
    df.loc[4, "token_size"] = 0
    path = write(df, tmp_path / "t.csv")
    with pytest.raises(WorkloadError, match="min_tokens=1") as exc:
        read_sageserve(path, REGIONS, MODELS)
    assert_names(exc, path, 5, "token_size")
    w = read_sageserve(path, REGIONS, MODELS, min_tokens=1)
    assert w.output_tokens[4] == 1 and w.meta["clamped_rows"] == 1


def _set(row, column, value):
    def edit(df):
        df[column] = df[column].astype(object)
        df.loc[row, column] = value
        return df
    return edit


SAGESERVE_BAD = {
    "missing column": (lambda df: df.drop(columns="sla"), None, "sla"),
    "extra column": (lambda df: df.assign(priority_class=1), None, "priority_class"),
    "non-numeric time": (_set(2, "arrival_timestamp", "soon"), 3, "arrival_timestamp"),
    "non-numeric tokens": (_set(1, "prompt_size", "12x"), 2, "prompt_size"),
    "negative tokens": (_set(3, "token_size", -5), 4, "token_size"),
    "zero tokens": (_set(0, "prompt_size", 0), 1, "prompt_size"),
    "absurd tokens": (_set(4, "prompt_size", 5_000_000), 5, "prompt_size"),
    "fractional tokens": (_set(4, "token_size", 2.5), 5, "token_size"),
    "missing tokens": (_set(2, "token_size", np.nan), 3, "token_size"),
    "unsorted times": (_set(3, "arrival_timestamp", 0.2), 4, "arrival_timestamp"),
    "negative time": (_set(0, "arrival_timestamp", -1.0), 1, "arrival_timestamp"),
    "unknown model": (_set(1, "model_type", "Z"), 2, "model_type"),
    "unknown region name": (_set(2, "regions", "westus;mars"), 3, "regions"),
    "region digit out of range": (_set(4, "regions", "031"), 5, "regions"),
    "region twice": (_set(4, "regions", "westus|westus"), 5, "regions"),
    "unknown workload type": (_set(2, "workload_type", "batch"), 3, "workload_type"),
    "IW without SLA": (_set(1, "sla", -1), 2, "sla"),
    "bad batch id": (_set(2, "batch_id", -3), 3, "batch_id"),
}


@pytest.mark.parametrize("case", list(SAGESERVE_BAD))
def test_sageserve_bad(tmp_path, case):
    edit, row, column = SAGESERVE_BAD[case]
    path = write(edit(sageserve_rows()), tmp_path / "bad.csv")
    with pytest.raises(WorkloadError) as exc:
        read_sageserve(path, REGIONS, MODELS)
    assert_names(exc, path, row, column)


def test_sageserve_ragged_and_blank_lines(tmp_path):
    path = tmp_path / "bad.csv"
    write(sageserve_rows(), path)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:3] + [""] + lines[3:]) + "\n")
    with pytest.raises(WorkloadError) as exc:  # a blank line is a row of missing values, not skipped
        read_sageserve(path, REGIONS, MODELS)
    assert_names(exc, path, 3, "arrival_timestamp")
    path.write_text("\n".join(lines[:2] + [lines[2] + ",extra"] + lines[3:]) + "\n")
    with pytest.raises(WorkloadError, match="line 3") as exc:
        read_sageserve(path, REGIONS, MODELS)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("reader", ["sageserve", "azure", "canonical"])
def test_empty_and_header_only(tmp_path, reader):
    cfg = load_config("paper")
    columns = {"sageserve": SAGESERVE_COLUMNS, "azure": ("TIMESTAMP", "ContextTokens", "GeneratedTokens"),
               "canonical": ("arrival_s", "region", "priority", "model", "tier", "prompt_tokens",
                             "output_tokens", "sla_s", "batch_id")}[reader]
    empty, header = tmp_path / "empty.csv", tmp_path / "header.csv"
    empty.write_text("")
    header.write_text(",".join(columns) + "\n")
    with pytest.raises(WorkloadError, match="empty file") as exc:
        load_trace(empty, reader, cfg)
    assert str(empty) in str(exc.value)
    with pytest.raises(WorkloadError, match="no data rows") as exc:
        load_trace(header, reader, cfg)
    assert str(header) in str(exc.value)


# --- Azure -----------------------------------------------------------------------------------

def azure_rows() -> pd.DataFrame:
    return pd.DataFrame({
        "TIMESTAMP": ["2023-11-16 18:15:46.6805900", "2023-11-16 18:15:50.9951690", "2023-11-16 18:15:51.2224670",
                      "2023-11-16 18:16:51.2224670"],
        "ContextTokens": [374, 396, 879, 91],
        "GeneratedTokens": [44, 109, 55, 16],
    })


def test_azure_good_and_deterministic(tmp_path):
    path = write(azure_rows(), tmp_path / "az.csv")
    w = read_azure(path, REGIONS, MODELS)
    np.testing.assert_allclose(w.arrival_s, [0.0, 4.314579, 4.541877, 64.541877])
    assert (w.tier == IW).all() and (w.sla_s == 10.0).all() and (w.batch_id == -1).all()
    assert w.prompt_tokens.tolist() == [374, 396, 879, 91] and w.output_tokens.tolist() == [44, 109, 55, 16]
    again = read_azure(path, REGIONS, MODELS)
    assert np.array_equal(w.region, again.region) and np.array_equal(w.model, again.model)
    one = read_azure(path, REGIONS, MODELS, region_split="eastus", model_split={"C": 1.0}, iw_share=0.0,
                     niw_deadline_s=3600.0, utc_offsets_h=[-8, -6, -5])
    assert (one.region == 2).all() and (one.model == 2).all() and (one.tier == NIW).all()
    assert (one.sla_s == 3600.0).all() and one.priority_orders[2] == (2, 1, 0)


def test_azure_zero_tokens(tmp_path):
    df = azure_rows()
    df.loc[2, "GeneratedTokens"] = 0
    path = write(df, tmp_path / "az.csv")
    w = read_azure(path, REGIONS, MODELS)
    assert w.output_tokens[2] == 1 and w.meta["clamped_rows"] == 1
    with pytest.raises(WorkloadError) as exc:
        read_azure(path, REGIONS, MODELS, min_tokens=None)
    assert_names(exc, path, 3, "GeneratedTokens")


AZURE_BAD = {
    "missing column": (lambda df: df.drop(columns="GeneratedTokens"), None, "GeneratedTokens"),
    "extra column": (lambda df: df.assign(Model="gpt"), None, "Model"),
    "bad timestamp": (_set(1, "TIMESTAMP", "yesterday"), 2, "TIMESTAMP"),
    "unsorted": (_set(3, "TIMESTAMP", "2023-11-16 18:15:40"), 4, "TIMESTAMP"),
    "non-numeric": (_set(2, "ContextTokens", "many"), 3, "ContextTokens"),
    "negative": (_set(0, "ContextTokens", -1), 1, "ContextTokens"),
    "absurd": (_set(3, "GeneratedTokens", 10**7), 4, "GeneratedTokens"),
    "missing": (_set(1, "ContextTokens", np.nan), 2, "ContextTokens"),
}


@pytest.mark.parametrize("case", list(AZURE_BAD))
def test_azure_bad(tmp_path, case):
    edit, row, column = AZURE_BAD[case]
    path = write(edit(azure_rows()), tmp_path / "bad.csv")
    with pytest.raises(WorkloadError) as exc:
        read_azure(path, REGIONS, MODELS)
    assert_names(exc, path, row, column)


def test_azure_real_trace(shared_data):
    path = shared_data / AZURE_FILE
    raw = pd.read_csv(path)
    cfg = load_config("paper")
    w = load_trace(path, "azure", cfg)
    assert len(w) == len(raw) == 19366
    assert w.meta["clamped_rows"] == 0
    assert np.array_equal(w.prompt_tokens, raw["ContextTokens"])
    assert np.array_equal(w.output_tokens, raw["GeneratedTokens"])
    assert w.arrival_s[0] == 0.0 and 3400 < w.duration_s < 3600
    assert abs((w.tier == IW).mean() - cfg.workload.iw_share) < 0.02  # load_trace takes the mix from the config
    shares = np.bincount(w.model, minlength=4) / len(w)
    np.testing.assert_allclose(shares, [0.45, 0.20, 0.20, 0.15], atol=0.02)
    assert (read_azure(path, REGIONS, MODELS).tier == IW).all()  # the reader's own default: all IW


# --- Canonical -------------------------------------------------------------------------------

def canonical_rows() -> pd.DataFrame:
    return pd.DataFrame({
        "arrival_s": [0.0, 0.25, 1.5, 1.5, 9.75],
        "region": ["westus", "eastus", "centralus", "centralus", "westus"],
        "priority": ["westus|centralus|eastus", "eastus|centralus|westus", "centralus", "centralus",
                     "westus|eastus"],
        "model": ["A", "D", "B", "B", "C"],
        "tier": ["IW", "IW", "NIW", "NIW", "IW"],
        "prompt_tokens": [10, 20, 30, 40, 50],
        "output_tokens": [1, 2, 3, 4, 5],
        "sla_s": [10.0, 10.0, 86400.0, 86400.0, 2.5],
        "batch_id": [-1, -1, 3, 3, -1],
    })


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_canonical_good(tmp_path, suffix):
    path = tmp_path / f"c{suffix}"
    df = canonical_rows()
    df.to_csv(path, index=False) if suffix == ".csv" else df.to_parquet(path, index=False)
    w = read_canonical(path, REGIONS, MODELS)
    assert w.region.tolist() == [0, 2, 1, 1, 0] and w.model.tolist() == [0, 3, 1, 1, 2]
    assert w.tier.tolist() == [IW, IW, NIW, NIW, IW] and w.batch_id.tolist() == [-1, -1, 3, 3, -1]
    assert [w.priority_orders[p] for p in w.priority] == [(0, 1, 2), (2, 1, 0), (1,), (1,), (0, 2)]


CANONICAL_BAD = {
    "missing column": (lambda df: df.drop(columns="tier"), None, "tier"),
    "extra column": (lambda df: df.assign(user="x"), None, "user"),
    "non-numeric time": (_set(1, "arrival_s", "0.3s"), 2, "arrival_s"),
    "negative tokens": (_set(2, "output_tokens", -3), 3, "output_tokens"),
    "zero tokens": (_set(2, "prompt_tokens", 0), 3, "prompt_tokens"),
    "absurd tokens": (_set(4, "prompt_tokens", 2_000_000), 5, "prompt_tokens"),
    "missing value": (_set(3, "sla_s", np.nan), 4, "sla_s"),
    "unsorted": (_set(4, "arrival_s", 1.0), 5, "arrival_s"),
    "unknown model": (_set(0, "model", "GPT-4"), 1, "model"),
    "unknown region": (_set(1, "region", "mars"), 2, "region"),
    "unknown region in priority": (_set(1, "priority", "eastus|mars"), 2, "priority"),
    "priority not starting with region": (_set(0, "priority", "eastus|westus"), 1, "priority"),
    "bad tier": (_set(2, "tier", "batch"), 3, "tier"),
    "bad sla": (_set(1, "sla_s", 0.0), 2, "sla_s"),
}


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@pytest.mark.parametrize("case", list(CANONICAL_BAD))
def test_canonical_bad(tmp_path, case, suffix):
    edit, row, column = CANONICAL_BAD[case]
    df = edit(canonical_rows())
    path = tmp_path / f"bad{suffix}"
    if suffix == ".csv":
        df.to_csv(path, index=False)
    else:
        df = df.infer_objects()
        df = df.astype({c: str for c in df.columns if df[c].dtype == object})  # one type per Parquet column
        df.to_parquet(path, index=False)
    with pytest.raises(WorkloadError) as exc:
        read_canonical(path, REGIONS, MODELS)
    assert_names(exc, path, row, column)
    if suffix == ".parquet" and row is not None:
        assert "line" not in str(exc.value)


@st.composite
def workloads(draw) -> Workload:
    n = draw(st.integers(0, 40))
    floats = st.floats(0.0, 1e7, allow_nan=False, allow_infinity=False)
    arrival = np.sort(np.array(draw(st.lists(floats, min_size=n, max_size=n)), dtype=np.float64))
    prefix = st.tuples(st.permutations(range(3)), st.integers(1, 3)).map(lambda pk: tuple(pk[0][:pk[1]]))
    orders = tuple(draw(st.lists(prefix, min_size=1, max_size=4, unique=True)))
    col = lambda strat, dtype: np.array(draw(st.lists(strat, min_size=n, max_size=n)), dtype=dtype)  # noqa: E731
    priority = col(st.integers(0, len(orders) - 1), np.int16)
    region = np.array([orders[p][0] for p in priority], dtype=np.int16)
    return Workload(REGIONS, MODELS, arrival, region, priority, col(st.integers(0, 3), np.int16),
                    col(st.sampled_from([IW, NIW]), np.int8), col(st.integers(1, 10**6), np.int32),
                    col(st.integers(1, 10**6), np.int32),
                    col(st.floats(1e-6, 1e7, allow_nan=False, allow_infinity=False), np.float64),
                    col(st.integers(-1, 2**40), np.int64), priority_orders=orders)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(w=workloads())
def test_canonical_round_trip(tmp_path, suffix, w):
    path = tmp_path / f"rt{suffix}"
    if len(w) == 0:
        write_canonical(w, path)
        with pytest.raises(WorkloadError):
            read_canonical(path, REGIONS, MODELS)
        return
    back = read_canonical(write_canonical(w, path), REGIONS, MODELS)
    for c in ("arrival_s", "region", "model", "tier", "prompt_tokens", "output_tokens", "sla_s", "batch_id"):
        a, b = getattr(w, c), getattr(back, c)
        assert a.dtype == b.dtype and np.array_equal(a, b), c
    assert [w.priority_orders[p] for p in w.priority] == [back.priority_orders[p] for p in back.priority]


def test_load_trace_dispatch(tmp_path):
    cfg = load_config("paper")
    path = write(canonical_rows(), tmp_path / "c.csv")
    assert len(load_trace(path, "canonical", cfg)) == 5
    assert len(load_trace(write(sageserve_rows(), tmp_path / "s.csv"), "sageserve", cfg)) == 5
    with pytest.raises(WorkloadError, match="unknown trace format"):
        load_trace(path, "vidur", cfg)


def test_nearest_first_orders():
    assert nearest_first_orders([-8, -6, -5]) == ((0, 1, 2), (1, 2, 0), (2, 1, 0))
    assert nearest_first_orders([0, 0, 0]) == ((0, 1, 2), (1, 0, 2), (2, 0, 1))
