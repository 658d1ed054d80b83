"""`python -m benchmarks` = `scaleot-bench`."""

from benchmarks.cli import app

app(prog_name="scaleot-bench")
