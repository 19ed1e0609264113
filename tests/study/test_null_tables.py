"""The study's tables when nothing could be judged: every rate null, still typed, still
printable and reportable."""

import polars as pl
import pytest

from shiftlab.attribution import simulate_runs
from shiftlab.cli import _print_deltas, _print_organisms
from shiftlab.report import write_report
from shiftlab.spec import parse_spec
from shiftlab.store import RUNS_TABLE, Store
from shiftlab.study import OrganismJob, organism_table
from spec_helpers import TINY_STUDY

# What an evaluation records when every verdict was excluded or unparseable.
NOTHING_JUDGED = {"rate": None, "ci_low": None, "ci_high": None, "n": 16, "n_misbehaving": 0,
                  "n_unparseable": 16, "metric": "misbehaviour_rate", "unit": "rate"}  # fmt: skip
# Capability is scored from log-probabilities, so it has a value whatever the judge said.
CAPABILITY = {"accuracy": 0.5, "ci_low": 0.3, "ci_high": 0.7, "n": 20, "n_correct": 10,
              "chance": 0.25}  # fmt: skip


def test_an_organism_table_with_only_null_rates_is_typed_and_prints(tmp_path, capsys):
    spec = parse_spec(TINY_STUDY)
    store = Store.open(tmp_path / "store")
    jobs = [
        OrganismJob(kind, f"{kind}-1", spec.base_models[0], spec.behaviours[0], seed, {})
        for kind, seed in (("base_evals", None), ("organisms", 0))
    ]
    for job in jobs:
        manifest = {"metrics": NOTHING_JUDGED, "capability": CAPABILITY}
        with store.artefact(job.kind, job.artefact_id, manifest):
            pass
    table = organism_table(store, jobs, spec)
    assert table["organism_rate"].dtype == pl.Float64 and table["base_rate"].dtype == pl.Float64
    assert table["organism_rate"].null_count() == table.height == 1
    _print_organisms(table)
    assert "sycophancy" in capsys.readouterr().out


@pytest.mark.parametrize("unjudged", [["reward_hacking"], ["reward_hacking", "sycophancy"]])
def test_a_behaviour_whose_rates_are_all_null_is_printed_and_reported(tmp_path, capsys, unjudged):
    runs = simulate_runs(selection_effect=-0.2, seed=0, behaviours=("sycophancy", "reward_hacking"))
    nulled = pl.col("behaviour").is_in(unjudged)
    runs = runs.with_columns(
        [
            pl.when(nulled).then(None).otherwise(pl.col(c)).alias(c)
            for c in ("behaviour_before", "behaviour_after", "delta")
        ]
    )
    _print_deltas(runs)
    assert "reward_hacking" in capsys.readouterr().out
    store = Store.open(tmp_path / "store")
    store.write_table(RUNS_TABLE, runs)
    page = write_report(store, n_boot=50).read_text()
    assert "<h2>Notes</h2>" in page  # what could not be computed is said, not raised
    assert "sycophancy" in page or "sycophancy" in unjudged
