"""What ``repro`` records and reports: the record's location and format, tolerances, findings."""

from __future__ import annotations

from dataclasses import dataclass, field

from shiftlab.study import OUTPUT_SHIFT_COLUMNS, SHIFT_COLUMNS

FINGERPRINTS = "repro/fingerprints.json"
FINGERPRINT_FORMAT = 1
# Artefact kinds a study builds; ``attribution`` and the report are analyses of them.
RECORDED_KINDS = ("organisms", "base_evals", "pools", "runs", "samples", "shift")
# Every statistic a shift artefact holds: compared one by one when a run is re-executed.
SHIFT_STATISTICS = (*SHIFT_COLUMNS, *OUTPUT_SHIFT_COLUMNS)


@dataclass(frozen=True)
class Tolerances:
    """How close a re-executed run must come to its record.

    ``loss_atol``: the largest per-step loss difference; ``drift_min`` and
    ``drift_alpha``: the smallest mean residual that counts as a drift and the level of
    the zero-mean test that must find it; ``rate_alpha``: the level of the two-proportion
    test on behaviour rates; ``shift_rtol``/``shift_atol``: shift statistics (p-values get a
    Monte Carlo tolerance from the number of permutations instead).
    """

    loss_atol: float = 1e-3
    drift_min: float = 1e-4
    drift_alpha: float = 0.01
    rate_alpha: float = 0.01
    shift_rtol: float = 1e-4
    shift_atol: float = 1e-6


@dataclass(frozen=True)
class Finding:
    """One comparison: which artefact, what was compared, whether it agreed, and how."""

    artefact: str
    check: str
    ok: bool
    detail: str


@dataclass
class ReproReport:
    """Every comparison :func:`check_reproduction` made; ``ok`` when all agree."""

    findings: list[Finding] = field(default_factory=list)
    runs: list[str] = field(default_factory=list)
    n_verified: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(f.ok for f in self.findings)

    def failures(self) -> list[Finding]:
        return [f for f in self.findings if not f.ok]

    def format(self) -> str:
        """A readable per-artefact summary; failures first, with what differs."""
        shown = ", ".join(self.runs[:5]) + (f" and {len(self.runs) - 5} more" if len(self.runs) > 5
                                            else "")  # fmt: skip
        lines = [f"verified {self.n_verified} recorded files; re-executed {len(self.runs)} runs"
                 + (f": {shown}" if shown else "")]  # fmt: skip
        lines += [f"note: {note}" for note in self.notes]
        failures = self.failures()
        by_artefact: dict[str, list[Finding]] = {}
        for finding in failures:
            by_artefact.setdefault(finding.artefact, []).append(finding)
        for artefact, found in by_artefact.items():
            lines.append(f"DIFFERS {artefact}")
            lines += [f"  {f.check}: {f.detail}" for f in found]
        agreed = len(self.findings) - len(failures)
        verdict = "reproduced" if not failures else f"NOT reproduced ({len(by_artefact)} artefacts)"
        lines.append(f"{verdict}: {agreed} of {len(self.findings)} comparisons agree")
        return "\n".join(lines)


DEFAULT_TOLERANCES = Tolerances()
