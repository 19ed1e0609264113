"""`shiftlab compare`: two inspect_ai logs on the same samples, paired and tested over
clusters, against a computation by hand."""

import itertools
import math

import numpy as np
import polars as pl
import pytest
from scipy import stats

pytest.importorskip("inspect_ai", reason="inspect-ai is not installed (pip install '.[inspect]')")

from inspect_ai.log import (
    EvalConfig,
    EvalDataset,
    EvalLog,
    EvalSample,
    EvalSpec,
    write_eval_log,
)
from inspect_ai.model import ModelOutput
from inspect_ai.scorer import Score

from shiftlab.cli import main
from shiftlab.errors import ShiftlabError
from shiftlab.interop import compare_samples, sample_frame

# Six samples in three topics, two epochs each: A's and B's accuracy per (id, epoch).
IDS = ["s1", "s2", "s3", "s4", "s5", "s6"]
TOPIC = {"s1": "x", "s2": "x", "s3": "y", "s4": "y", "s5": "z", "s6": "z"}
A = {("s1", 1): "I", ("s1", 2): "I", ("s2", 1): "C", ("s2", 2): "I", ("s3", 1): "I",
     ("s3", 2): "C", ("s4", 1): "I", ("s4", 2): "I", ("s5", 1): "C", ("s5", 2): "C",
     ("s6", 1): "I", ("s6", 2): "I"}  # fmt: skip
B = {**A, ("s1", 1): "C", ("s1", 2): "C", ("s4", 1): "C", ("s3", 2): "I", ("s6", 2): "C"}
LETTER = {"C": 1.0, "I": 0.0}


def _log(values: dict, model: str, extra: list[tuple[str, int]] = ()) -> EvalLog:
    keys = sorted(values) + list(extra)
    samples = [
        EvalSample(id=i, epoch=e, input=f"question {i}", target="C",
                   output=ModelOutput.from_content(model=model, content="answer"),
                   scores={"match": Score(value=values.get((i, e), "C"))},
                   metadata={"topic": TOPIC.get(i, "w")})
        for i, e in keys
    ]  # fmt: skip
    spec = EvalSpec(created="2026-01-01T00:00:00+00:00", task="quiz", model=model,
                    dataset=EvalDataset(name="quiz", samples=len(IDS)),
                    config=EvalConfig(epochs=2))  # fmt: skip
    return EvalLog(status="success", eval=spec, samples=samples)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("logs")
    a, b = folder / "a.eval", folder / "b.eval"
    write_eval_log(_log(A, "m/a"), str(a))
    write_eval_log(_log(B, "m/b", extra=[("s7", 1)]), str(b))  # s7: only in B
    return a, b


def _by_hand(cluster_of) -> dict:
    keys = sorted(A)
    d = np.array([LETTER[B[k]] - LETTER[A[k]] for k in keys])
    clusters = sorted({cluster_of(k) for k in keys})
    g = len(clusters)
    totals = np.array([sum(d[j] for j, k in enumerate(keys) if cluster_of(k) == c)
                       for c in clusters])  # fmt: skip
    residual_totals = np.array([sum(d[j] - d.mean() for j, k in enumerate(keys)
                                    if cluster_of(k) == c) for c in clusters])  # fmt: skip
    se = math.sqrt(g / (g - 1) * (residual_totals**2).sum()) / len(d)
    half = stats.t.ppf(0.975, g - 1) * se
    # Every sign pattern over clusters; ties with the observed |sum| count.
    flips = [abs(np.dot(s, totals)) for s in itertools.product([-1, 1], repeat=g)]
    p = np.mean([f >= abs(totals.sum()) - 1e-12 for f in flips])
    return {"estimate": d.mean(), "se": se, "ci_low": max(-1, d.mean() - half),
            "ci_high": min(1, d.mean() + half), "p_value": p, "p_min": 2 / 2**g,
            "n_clusters": g, "n_moved": int((d != 0).sum()), "n_up": int((d > 0).sum()),
            "n_down": int((d < 0).sum())}  # fmt: skip


@pytest.mark.parametrize("cluster", [None, "topic"])
def test_two_inspect_logs_against_a_hand_computation(logs, cluster):
    result = compare_samples(*logs, cluster=cluster)
    row = result.frame.row(0, named=True)
    expected = _by_hand((lambda k: TOPIC[k[0]]) if cluster else (lambda k: k[0]))
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, rel=1e-12, abs=1e-15), key
    assert row["metric"] == "match" and row["n_pairs"] == 12
    assert (row["n_only_a"], row["n_only_b"]) == (0, 1)
    assert row["share_moved"] == pytest.approx(5 / 12)
    assert row["p_value"] >= row["p_min"] > 0


def test_pandas_and_polars_frames_give_what_the_logs_give(logs):
    a, b = (sample_frame(p) for p in logs)
    from_logs = compare_samples(*logs, cluster="topic").frame
    assert compare_samples(a, b, cluster="topic").frame.equals(from_logs)
    assert compare_samples(a.to_pandas(), b.to_pandas(), cluster="topic").frame.equals(from_logs)


def test_the_line_never_prints_a_zero_p_and_names_the_clusters(logs):
    line = compare_samples(*logs, cluster="topic", labels=("a", "b")).line
    assert line.startswith("b − a on match: +0.250 (95% CI ")
    assert "CR1, 3 clusters by topic" in line and "sign-flip p = 0.5 " in line
    assert "(smallest possible 0.25, exact)" in line
    assert "5 of 12 pairs moved (42%: 4 up, 1 down); unpaired: 0 only in a, 1 only in b" in line
    # Topic totals +2, 0, +1: 4 of the 8 sign patterns reach |3|. By id there are 6 clusters.
    assert compare_samples(*logs).frame["n_clusters"].item() == 6
    # One cluster: the interval is the whole range and the test cannot reject.
    same = pl.DataFrame({"id": ["a", "b"], "topic": ["t", "t"], "score_x": [0.0, 1.0]})
    single = compare_samples(same, same.with_columns(score_x=pl.lit(1.0)), cluster="topic")
    assert (single.frame["ci_low"].item(), single.frame["ci_high"].item()) == (-1.0, 1.0)
    assert single.frame["se"].item() is None and single.frame["p_value"].item() == 1.0


def test_bad_input_is_one_line(logs, tmp_path, capsys):
    with pytest.raises(ShiftlabError, match="--metric nope: not a score of both"):
        compare_samples(*logs, metric="nope")
    with pytest.raises(ShiftlabError, match="--cluster nope: not a field"):
        compare_samples(*logs, cluster="nope")
    assert main(["compare", str(tmp_path / "missing.eval"), str(logs[1])]) == 2
    assert "missing.eval: no such inspect log" in capsys.readouterr().err


def test_the_cli_prints_one_line(logs, capsys):
    assert main(["compare", str(logs[0]), str(logs[1]), "--cluster", "topic"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("b − a on match: +0.250")
