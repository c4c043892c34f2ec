"""``make bench``: every figure, one child process each; their JSON lines, then one summary line.

    python -m bench.run_all [--quick] [--only NAME ...]

``--quick`` runs every figure at tiny sizes (seconds, not minutes: the smoke test uses it;
its figures mean nothing). The last line of output is one JSON object: ``{"figures": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

FIGURES = {  # name -> (module, full-size arguments, quick arguments)
    "processor_throughput": ("bench.processor_throughput", [], ["--frames", "2000", "--timeout", "60"]),
    "producer_throughput": ("bench.producer_throughput", [], ["--seconds", "1", "--warmup", "0.5"]),
    "latency": ("bench.latency", [], ["--rate", "200", "--seconds", "2", "--warmup", "1"]),
    "scaling": ("bench.scaling", [], ["--frames", "2000"]),
    "memory": ("bench.memory", [], ["--instruments", "50", "--frames-per-instrument", "2", "--rate", "200",
                                    "--seconds", "1"]),
    # not a figure: the embedded broker's fetch cost as a log grows, which figure 3's tail follows
    "broker_fetch": ("bench.broker_fetch", [], ["--batches", "10", "200", "--waits", "5", "--rounds", "2"]),
}


def command(name: str, quick: bool) -> list[str]:
    module, full, small = FIGURES[name]
    return [sys.executable, "-m", module, *(small if quick else full)]


def run_one(name: str, quick: bool) -> dict:
    print(f"== {name}: {' '.join(command(name, quick)[1:])}", file=sys.stderr, flush=True)
    done = subprocess.run(command(name, quick), stdout=subprocess.PIPE, text=True)
    lines = done.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        result = {"figure": name, "error": f"exit code {done.returncode}, no JSON line"}
    print(json.dumps(result), flush=True)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run; the figures mean nothing)")
    parser.add_argument("--only", nargs="+", choices=sorted(FIGURES), metavar="NAME", help="run only these figures")
    args = parser.parse_args(argv)
    results = {name: run_one(name, args.quick) for name in (args.only or FIGURES)}
    print(json.dumps({"figures": results, "met": {n: r.get("met") for n, r in results.items()}}), flush=True)
    return 0 if all("error" not in r for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
