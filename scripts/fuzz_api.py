"""Property-based fuzz of the whole API from its own OpenAPI document (schemathesis) against a real
`scaleot-server serve` on loopback, once with a data owner's key and once with the admin key.

Passes when schemathesis finds no failure of its checks: no server error (5xx), no status, content
type or body that the OpenAPI document does not declare; and the server's access log holds no 5xx
and the server still answers afterwards. Prints the statuses seen and writes them as JSON.

    python scripts/fuzz_api.py                              # what scripts/test.sh runs (~2-3 min)
    python scripts/fuzz_api.py --max-time 1800 --max-examples 1000 --seed 7   # a longer run

`--max-time` bounds each of the two runs (owner, admin); `--max-examples` the cases per operation
and phase. Failures are reproduced by schemathesis's report (`--report-dir`, default a temp dir).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fuzz.fuzz_seed import FuzzServer, seed  # noqa: E402

CHECKS = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
ACCESS = re.compile(r'"(GET|POST|HEAD|PUT|DELETE|PATCH|OPTIONS) \S+ HTTP/[0-9.]+" (\d{3})')


def schemathesis(url: str, key: str, args: argparse.Namespace, report_dir: Path, env: dict[str, str]) -> int:
    command = [str(Path(sys.executable).parent / "st"), "run", f"{url}/openapi.json",
               "-H", f"Authorization: Bearer {key}", "--checks", CHECKS, "--workers", "1",
               "--max-time", str(args.max_time), "--max-examples", str(args.max_examples),
               "--request-timeout", "180", "--report", "junit", "--report-dir", str(report_dir),
               "--suppress-health-check", "all", "--warnings", "off"]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    # schemathesis keeps a cache folder in its working directory: the run's temporary one, not the checkout
    return subprocess.run(command, env=env, check=False, cwd=report_dir.parent).returncode


def statuses(log: Path) -> dict[str, int]:
    counts = collections.Counter(m.group(2) for m in ACCESS.finditer(log.read_text(errors="replace")))
    return dict(sorted(counts.items()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-time", type=int, default=75, help="seconds for each of the two runs")
    parser.add_argument("--max-examples", type=int, default=40, help="cases per operation and phase")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "api-fuzz.json")
    parser.add_argument("--report-dir", type=Path, default=None, help="keep schemathesis's reports here")
    parser.add_argument("--source", type=Path, default=None,
                        help="serve the code of this checkout instead (e.g. an older commit, for comparison)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="scaleot-api-fuzz-"))
    server = FuzzServer(root, source=args.source.resolve() if args.source else None)
    started = time.monotonic()
    try:
        server.start()
        seeded = seed(server)
        env = {**server.env(), "SCHEMATHESIS_HOOKS": str(ROOT / "scripts" / "fuzz_api_hooks.py"),
               "SCALEOT_FUZZ_IDS": json.dumps(seeded.ids())}
        runs = {}
        for role, key in (("data owner", seeded.owner_key), ("admin", server.admin_key)):
            report_dir = (args.report_dir or root / "reports") / role.replace(" ", "-")
            report_dir.mkdir(parents=True, exist_ok=True)
            print(f"== schemathesis with the {role} key", flush=True)
            runs[role] = schemathesis(server.url, key, args, report_dir, env)
        alive = server.alive()
    finally:
        server.stop()
    seen = statuses(server.log_path)
    errors = sum(n for code, n in seen.items() if code.startswith("5"))
    result = {"requests": sum(seen.values()), "statuses": seen, "server_errors": errors,
              "schemathesis_exit": runs, "server_alive_after": alive, "seconds": round(time.monotonic() - started),
              "max_time_per_run": args.max_time, "max_examples": args.max_examples, "seed": args.seed,
              "checks": CHECKS.split(",")}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'status':>6} | requests")
    for code, count in seen.items():
        print(f"{code:>6} | {count}")
    print(f"total {result['requests']} requests in {result['seconds']} s; 5xx: {errors}; schemathesis exit codes "
          f"{runs}; server alive after: {alive}; written {args.out}")
    ok = errors == 0 and alive and all(code == 0 for code in runs.values())
    if ok:
        shutil.rmtree(root, ignore_errors=True)
    else:
        print(f"FAILED: server log and reports kept in {root}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
