"""The conventions CI holds the code to: ruff on the Python, snakefmt on the Snakefile and rules
(`snakemake --lint` is in tests/test_dag.py). Both tools and their settings come from pyproject.toml."""

from __future__ import annotations

from tests.conftest import BIN, ROOT, run


def test_python_passes_ruff():
    proc = run([str(BIN / "ruff"), "check", "--no-cache", "."], cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:]


def test_snakefile_and_rules_are_snakefmt_formatted():
    proc = run([str(BIN / "snakefmt"), "--check", "--diff", "Snakefile", "rules"], cwd=ROOT, check=False)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
