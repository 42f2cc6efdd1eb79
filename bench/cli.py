"""`python -m bench all|latency|throughput|scale|peer|limit|fair|pacing|overhead|chaos [--quick] [--json PATH]`.

`all` runs latency, throughput, scale, peer, limit, fair and pacing (and overhead when --before is given);
`all --quick` (the smoke run of tests/test_bench_smoke.py) leaves fair and pacing out: name them to run them."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import report
from bench.env import REPO, Env, describe

SECTIONS = ("latency", "throughput", "scale", "peer", "limit")
MANY_ACCOUNTS = ("fair", "pacing")  # SPEC §16; in `all`, not in `all --quick`


def sizes(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    return {
        "rates": tuple(args.rates) if args.rates else ((50.0, 200.0, 1000.0)),
        "duration": args.duration if args.duration is not None else (2.0 if quick else 10.0),
        "drain_n": args.touches if args.touches is not None else (1000 if quick else 20000),
        "scale_sizes": tuple(args.scale_sizes) if args.scale_sizes else
        ((12_000, 100_000) if quick else (12_000, 1_000_000, 10_000_000)),
        "scale_calls": 50 if quick else 200,
        "limit_seconds": args.limit_seconds if args.limit_seconds is not None else (3.0 if quick else 10.0),
        "repeat": args.repeat if args.repeat is not None else (1 if quick else 3),
        "fair": {
            "n": args.backlog if args.backlog is not None else (2_000 if quick else 20_000),
            "daemons": tuple(args.fair_daemons) if args.fair_daemons else ((1,) if quick else (1, 2)),
            "trickle_s": args.trickle_ms / 1000,
        },
        "pacing": {
            "n": args.paced_touches if args.paced_touches is not None else (60 if quick else 300),
            "rate": args.max_per_second, "baseline_emails": 15 if quick else 50,
        },
        "overhead_n": args.overhead_touches if args.overhead_touches is not None else (2_000 if quick else 10_000),
        "chaos": {
            "kills": args.kills if args.kills is not None else (3 if quick else 10),
            "rate": args.chaos_rate if args.chaos_rate is not None else (100.0 if quick else 200.0),
            "burst": args.burst if args.burst is not None else (5_000 if quick else 50_000),
            "scenario_s": args.scenario_seconds if args.scenario_seconds is not None else (4.0 if quick else 10.0),
            "only": tuple(args.scenarios) if args.scenarios else None,
        },
    }


async def run_sections(args: argparse.Namespace, sections: tuple[str, ...]) -> dict[str, Any]:
    from bench import chaos, drain, fair, latency, limit, overhead, pacing, peer, scale

    cfg = sizes(args)
    result: dict[str, Any] = {"meta": meta(args, cfg)}
    started = time.perf_counter()
    async with Env(delay_ms=args.delay_ms, keep=args.keep) as env:
        assert env.pg is not None
        result["meta"]["postgres"] = env.pg.settings()
        steps: dict[str, Callable[[], Awaitable[dict[str, Any]]]] = {
            "latency": lambda: latency.run(env, cfg["rates"], cfg["duration"]),
            "throughput": lambda: drain.run(env, cfg["drain_n"]),
            "scale": lambda: scale.run(env, cfg["scale_sizes"], cfg["scale_calls"]),
            "peer": lambda: peer.run(env, cfg["drain_n"], cfg["repeat"], ours=result.get("throughput"),
                                     latency_duration=cfg["duration"],
                                     before=args.before if args.section == "peer" else None),
            "limit": lambda: limit.run(env, cfg["limit_seconds"]),
            "chaos": lambda: chaos.run(env, **cfg["chaos"]),
            "fair": lambda: fair.run(env, cfg["fair"]["n"], cfg["fair"]["daemons"], cfg["repeat"],
                                     cfg["fair"]["trickle_s"]),
            "pacing": lambda: pacing.run(env, **cfg["pacing"]),
            "overhead": lambda: overhead.run(env, cfg["overhead_n"], cfg["repeat"], args.before, args.after),
        }
        for name in sections:
            t = time.perf_counter()
            print(f"[bench] {name} …", file=sys.stderr, flush=True)
            result[name] = await steps[name]()
            result[name]["section_wall_s"] = round(time.perf_counter() - t, 1)
            result[name]["loadavg_1m_after"] = round(os.getloadavg()[0], 2)  # other work on the machine shows here
            print(f"[bench] {name} done in {time.perf_counter() - t:.1f}s", file=sys.stderr, flush=True)
    result["meta"]["wall_s"] = round(time.perf_counter() - started, 1)
    result["meta"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result["meta"]["commit_at_end"] = describe(REPO)  # a checkout changed under a long run shows here
    return result


def meta(args: argparse.Namespace, cfg: dict[str, Any]) -> dict[str, Any]:
    return {
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "quick": args.quick, "provider_delay_ms": args.delay_ms, "sizes": cfg,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()], "commit": describe(REPO),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("section", choices=("all", *SECTIONS, *MANY_ACCOUNTS, "overhead", "chaos"))
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--json", type=Path, help="write the JSON result here too")
    p.add_argument("--delay-ms", type=float, default=0.0, help="the fake provider's service time (default 0)")
    p.add_argument("--rates", type=float, nargs="+", help="latency: offered touches/s (default 50 200 1000)")
    p.add_argument("--duration", type=float, help="latency: seconds per rate (default 10; --quick 2)")
    p.add_argument("--touches", type=int, help="throughput/peer: touches to drain (default 20000; --quick 1000)")
    p.add_argument("--scale-sizes", type=int, nargs="+",
                   help="scale: core_memory_events at each step (default 12k 1M 10M; --quick 12k 100k)")
    p.add_argument("--limit-seconds", type=float, help="limit: pgbench duration (default 10; --quick 3)")
    p.add_argument("--kills", type=int, help="chaos: SIGKILLs (default 10; --quick 3)")
    p.add_argument("--burst", type=int, help="chaos: touches in the one-transaction burst (default 50000)")
    p.add_argument("--chaos-rate", type=float, help="chaos: offered touches/s under load (default 200; --quick 100)")
    p.add_argument("--scenario-seconds", type=float, help="chaos: seconds of load per scenario (default 10; --quick 4)")
    p.add_argument("--scenarios", nargs="+", choices=("sigkill", "pg_restart", "race", "faults", "burst", "fault_mix"),
                   help="chaos: run only these scenarios")
    p.add_argument("--repeat", type=int, help="fair/overhead/peer: repetitions per side, interleaved (default 3; "
                                              "--quick 1)")
    p.add_argument("--backlog", type=int, help="fair: account A's one-transaction backlog (default 20000; --quick 2000)")
    p.add_argument("--fair-daemons", type=int, nargs="+", help="fair: daemon counts to run (default 1 2; --quick 1)")
    p.add_argument("--trickle-ms", type=float, default=100.0, help="fair: account B's trickle interval (default 100)")
    p.add_argument("--paced-touches", type=int, help="pacing: the paced sender's backlog (default 300; --quick 60)")
    p.add_argument("--max-per-second", type=float, default=5.0, help="pacing: the sender's config.max_per_second")
    p.add_argument("--before", type=Path, help="overhead: a checkout of the commit before the fair claim "
                                               "(git worktree add --detach /tmp/before fad94b7); peer: a checkout "
                                               "drained beside ours in each run (its statements, commits, CPU)")
    p.add_argument("--after", type=Path, help="overhead: a checkout for the other side (default: this one)")
    p.add_argument("--overhead-touches", type=int, help="overhead: touches per drain (default 10000; --quick 2000)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (logs) after the run")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.section == "overhead" and args.before is None:
        p.error("overhead needs --before PATH (a checkout of the commit before the change)")
    args.before, args.after = (path.resolve() if path is not None else None for path in (args.before, args.after))
    for path in (args.before, args.after):
        if path is not None and not (path / "listener" / "cli.py").is_file():
            p.error(f"{path} is not a checkout of this repository (no listener/cli.py)")
    if args.section == "all":
        sections = SECTIONS + (() if args.quick else MANY_ACCOUNTS) + (("overhead",) if args.before else ())
    else:
        sections = (args.section,)
    result = asyncio.run(run_sections(args, sections))
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print(report.render(result), file=sys.stderr)
    return 0 if report.ok(result) else 1
