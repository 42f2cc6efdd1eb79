"""Smoke runs of the benchmark and of the chaos harness (issue 6), as a user runs them: `python -m bench …` in a
subprocess, tiny sizes. They assert the JSON has every field and that chaos lost nothing and sent nothing twice —
never a timing threshold."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_bench(tmp_path: Path, *args: str) -> dict:
    """Run the bench; exit code 0 = nothing lost or sent twice, 1 = the JSON says what was (checked by callers)."""
    out = tmp_path / "result.json"
    done = subprocess.run([sys.executable, "-m", "bench", *args, "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode in (0, 1) and out.exists(), f"bench failed ({done.returncode}):\n{done.stderr[-4000:]}"
    result = json.loads(out.read_text())
    assert json.loads(done.stdout) == result  # the same JSON on stdout
    result["_exit_code"] = done.returncode
    return result


def has(mapping: dict, *keys: str) -> None:
    missing = [k for k in keys if k not in mapping]
    assert not missing, f"missing {missing} in {sorted(mapping)}"


@pytest.mark.timeout(300)
def test_bench_all_quick_has_every_field(tmp_path):
    result = run_bench(tmp_path, "all", "--quick", "--rates", "50", "200", "--duration", "1", "--touches", "200",
                       "--scale-sizes", "1000", "5000", "--limit-seconds", "1")
    assert result.pop("_exit_code") == 0
    has(result, "meta", "latency", "throughput", "scale", "peer", "limit")
    has(result["meta"], "command", "postgres", "machine", "sizes", "wall_s")
    assert result["meta"]["postgres"]["fsync"] == "on" and result["meta"]["postgres"]["synchronous_commit"] == "on"

    rates = result["latency"]["rates"]
    assert [r["offered_rate"] for r in rates] == [50.0, 200.0]
    for r in rates:
        has(r, "achieved_rate", "touches", "received", "missing", "sent_twice", "p50_ms", "p90_ms", "p99_ms",
            "max_ms", "ack")
        assert r["received"] == r["touches"] and r["missing"] == 0 and r["sent_twice"] == 0

    runs = result["throughput"]["runs"]
    assert [(r["daemons"], r["concurrency"], r["dashboard_open"]) for r in runs] == [
        (1, 32, False), (1, 32, False), (1, 128, False), (2, 128, False), (1, 32, True)]
    assert runs[-1]["dashboard_feed_events"] > 0  # the live feed really was connected and delivering
    assert result["throughput"]["dashboard_open_ratio"] > 0
    dashboard = result["latency"]["dashboard"]
    assert dashboard["open"]["received"] == dashboard["open"]["touches"] == 200
    assert dashboard["p50_ratio_closed_over_open"] > 0
    assert result["throughput"]["sending_rules_ratio"] > 0
    for r in runs:
        has(r, "touches", "seconds", "touches_per_s", "send_phase_s", "sent", "requests", "sent_twice",
            "cpu_us_per_touch")
        assert r["sent"] == r["touches"] == 200 and r["sent_twice"] == 0

    sizes = result["scale"]["sizes"]
    assert len(sizes) == 2
    for s in sizes:
        has(s, "touch_runs", "events", "decide", "decide_keys_64", "claim_64", "claim_with_context_64",
            "expire_leases_idle", "expire_leases_100")
        has(s["decide"], "median_ms", "p90_ms", "per_touch_ms")
    has(result["scale"]["growth"], "from", "to", "median_ratio")

    peer = result["peer"]
    has(peer, "ours", "pgqueuer", "pgqueuer_64_tasks", "ratio", "ratio_vs_peer_64_tasks", "ratio_tuned", "latency")
    has(peer["pgqueuer"], "touches_per_s", "seconds", "sent", "sent_twice", "settings")
    assert peer["pgqueuer"]["sent"] == 200 and peer["pgqueuer"]["sent_twice"] == 0
    assert peer["pgqueuer"]["settings"]["max_concurrent_tasks"] == 32  # the same as our shipped concurrency
    assert peer["ours"]["concurrency"] == 32 if "concurrency" in peer["ours"] else peer["ours"]["settings"] == {}
    assert peer["ratio"] > 0 and peer["ratio_vs_peer_64_tasks"] > 0
    latency = peer["latency"]
    assert latency["rate"] == 200.0
    for side in ("ours", "pgqueuer"):
        has(latency[side], "p50_ms", "p99_ms", "received")
        assert latency[side]["received"] == 200
    assert latency["p50_ratio_peer_over_ours"] > 0 and latency["p99_ratio_peer_over_ours"] > 0

    limit = result["limit"]
    has(limit, "one_per_transaction", "batched")
    has(limit["one_per_transaction"], "tool", "touches_per_s")
    has(limit["batched"], "tool", "touches_per_s", "batch")


@pytest.mark.timeout(300)
def test_chaos_quick_loses_nothing_and_sends_nothing_twice(tmp_path):
    result = run_bench(tmp_path, "chaos", "--quick", "--kills", "2", "--burst", "500", "--chaos-rate", "50",
                       "--scenario-seconds", "2")
    exit_code = result.pop("_exit_code")
    chaos = result["chaos"]
    assert exit_code == (0 if chaos["ok"] else 1)
    assert [s["scenario"] for s in chaos["scenarios"]] == ["sigkill", "pg_restart", "race", "faults", "burst",
                                                         "fault_mix"]
    for s in chaos["scenarios"]:
        has(s, "offered", "sent", "failed", "failed_by_reason", "canceled", "lost", "sent_twice", "sent_not_received",
            "daemons_died", "daemon_errors")
        assert s["offered"] > 0
        assert s["sent_twice"] == 0, s
        assert s["sent_not_received"] == 0, s
        assert s["sent"] + s["failed"] + s["canceled"] + s["lost"] == s["offered"]
        assert s["lost"] == 0, s
        assert s["daemons_died"] == 0, s  # a database restart once made daemons exit (InternalClientError)
    assert chaos["ok"] is True
    mix = next(s for s in chaos["scenarios"] if s["scenario"] == "fault_mix")
    assert mix["concurrency"] == 16 and mix["touches"] == 300 and mix["within_limit"] is True, mix
    assert mix["answers"].get("slow:2", 0) > 0 and mix["answers"].get("rate_limit:1", 0) > 0
    kills = next(s for s in chaos["scenarios"] if s["scenario"] == "sigkill")
    assert kills["kills"] == 2
