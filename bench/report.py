"""The human-readable tables printed beside the JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in header]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=False)))

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([f"\n{title}", line(cells[0]), rule, *(line(r) for r in cells[1:])])


def _latency(section: dict[str, Any]) -> str:
    rows = [[r["offered_rate"], r["achieved_rate"], r["touches"], r["received"], r["p50_ms"], r["p90_ms"],
             r["p99_ms"], r["max_ms"], r["ack"]["p50_ms"], r["ack"]["p99_ms"], r["sent_twice"]]
            for r in section["rates"]]
    dash = section.get("dashboard") or {}
    if dash:
        o = dash["open"]
        rows.append([f"{dash['rate']} dashboard open", o["achieved_rate"], o["touches"], o["received"], o["p50_ms"],
                     o["p90_ms"], o["p99_ms"], o["max_ms"], o["ack"]["p50_ms"], o["ack"]["p99_ms"], o["sent_twice"]])
    return table("latency: commit → request at the fake provider (ms; 1 daemon; 'ack' = from the commit's "
                 f"acknowledgement); closed / open p50 {dash.get('p50_ratio_closed_over_open')}, "
                 f"p99 {dash.get('p99_ratio_closed_over_open')}", ["offered/s", "achieved/s", "touches", "received", "p50", "p90", "p99", "max",
                                      "ack p50", "ack p99", "sent twice"], rows)


def _throughput(section: dict[str, Any]) -> str:
    rows = [[r["daemons"], f"{r.get('concurrency')}" + (", rules off" if "REVENUE_ASI_QUIET_HOURS" in r["settings"]
                                                      else "") + (", dashboard open" if r.get("dashboard_open") else ""),
             r["touches"], r["seconds"], r["touches_per_s"], r["send_phase_s"],
             r["sent"], r["sent_twice"], r["cpu_us_per_touch"]["daemons"], r["cpu_us_per_touch"]["postgres"],
             r["cpu_us_per_touch"]["sandbox"]] for r in section["runs"]]
    return table("throughput: drain of pre-inserted due touches, end to end incl. fallback decisions "
                 f"(cpu = µs of CPU per touch); sending rules on / off: {section.get('sending_rules_ratio')}; "
                 f"dashboard open / closed: {section.get('dashboard_open_ratio')}",
                 ["daemons", "concurrency", "touches", "seconds", "touches/s", "all sent at s", "sent", "sent twice",
                  "cpu daemons", "cpu postgres", "cpu fake"], rows)


def _scale(section: dict[str, Any]) -> str:
    from bench.scale import table as scale_table

    return scale_table(section)


def _peer_row(name: str, drain: dict[str, Any], latency: dict[str, Any] | None, ratio: Any = "") -> list[Any]:
    cpu = drain.get("cpu_us_per_touch") or {}
    counted = drain.get("counted") or {}
    total = drain.get("cpu_us_per_touch_total", sum(v for v in cpu.values() if v is not None) if cpu else None)
    return [name, drain.get("touches_per_s"), drain.get("seconds"), ratio, (latency or {}).get("p50_ms", ""),
            (latency or {}).get("p99_ms", ""), cpu.get("daemons"), cpu.get("postgres"), cpu.get("sandbox"), total,
            drain.get("statements_per_touch", counted.get("statements_per_touch")),
            drain.get("commits_per_touch", counted.get("commits_per_touch"))]


def _peer(section: dict[str, Any]) -> str:
    lat = section.get("latency", {})
    mine, peer = section["ours"], section["pgqueuer"]
    rows: list[list[Any]] = []
    for r in section.get("runs", []):
        if r.get("ours_before"):
            rows.append(_peer_row(f"run {r['rep'] + 1}: ours before", r["ours_before"], None, r.get("ratio_before")))
        rows.append(_peer_row(f"run {r['rep'] + 1}: ours", r["ours"], r["latency"]["ours"], r.get("ratio")))
        rows.append(_peer_row(f"run {r['rep'] + 1}: pgqueuer", r["pgqueuer"], r["latency"]["pgqueuer"]))
    if section.get("ours_before"):
        rows.append(_peer_row(f"median: ours before ({section['ours_before'].get('commit', '')[:40]})",
                              section["ours_before"], None, section.get("ratio_before")))
    rows.append(_peer_row("median: ours (1 daemon, shipped defaults: concurrency 32)", mine, lat.get("ours"),
                          section.get("ratio")))
    rows.append(_peer_row("median: pgqueuer (1 worker, batch 16, 32 tasks: same settings)", peer,
                          lat.get("pgqueuer")))
    rows.append(_peer_row("pgqueuer (64 tasks, its faster setting; once)", section["pgqueuer_64_tasks"], None,
                          section.get("ratio_vs_peer_64_tasks")))
    cpu = section.get("cpu_us_per_touch") or {}
    rows.append(["pgqueuer / ours (latency, cpu: medians)", "", "", "", lat.get("p50_ratio_peer_over_ours"),
                 lat.get("p99_ratio_peer_over_ours"), "", "", "", cpu.get("total_ratio_peer_over_ours"), "", ""])
    if section.get("ratio_tuned") is not None:
        rows.append(["ours tuned (concurrency 128, throughput section) / pgqueuer", "", "", section["ratio_tuned"],
                     "", "", "", "", "", "", "", ""])
    repeat = section.get("repeat", 1)
    parts = [table(
        f"peer: drain of {section['touches']} touches and latency at {lat.get('rate')}/s, same server, same fake "
        f"provider; {repeat} run(s) interleaved, medians below them (ratio = ours / pgqueuer touches/s; the median "
        "ratio is the median of the runs' ratios); cpu = µs of CPU per touch by process class (consumer = our daemon "
        "or the pgqueuer worker); stmts = statements per drained touch (client side), commits = per drained touch "
        "(pg_stat_database, net of the bench's own); the fake alone bounds the drain ratio at "
        f"{cpu.get('ratio_ceiling_from_the_fake')}",
        ["consumer", "touches/s", "seconds", "ratio", "p50 ms", "p99 ms", "cpu consumer", "cpu postgres", "cpu fake",
         "cpu total", "stmts", "commits"], rows)]
    for side, name in (("ours_before", "ours before"), ("ours", "ours"), ("pgqueuer", "pgqueuer")):
        top = (section.get(side) or {}).get("top") or {}
        if not top:
            continue
        top_rows = [["client time", q["query"], q["us_per_touch"], q["calls_per_touch"]] for q in top["by_time"]]
        top_rows += [["calls", q["query"], q["us_per_touch"], q["calls_per_touch"]] for q in top["by_calls"]]
        parts.append(table(f"peer, {name}: top {len(top['by_time'])} statements per drained touch by client time "
                           "and by calls (client side: send → result, waiting included; medians of the runs)",
                           ["top by", "query", "µs/touch", "calls/touch"], top_rows))
    return "\n".join(parts)


def _limit(section: dict[str, Any]) -> str:
    one, batched = section["one_per_transaction"], section["batched"]
    rows = [[one.get("tool"), f"claim 1 + complete 1 per transaction, {one.get('clients')} clients",
             one.get("touches_per_s")],
            [batched["tool"].split(" (")[0], f"claim {batched['batch']} + complete {batched['batch']}, "
                                             f"{batched['clients']} clients", batched["touches_per_s"]]]
    return table("limit: the database alone running our claim + complete SQL", ["tool", "what", "touches/s"], rows)


def _chaos(section: dict[str, Any]) -> str:
    rows = []
    for s in section["scenarios"]:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["failed_by_reason"].items())) or "-"
        notes = {k: s[k] for k in ("kills", "restart_s", "daemons", "fault_rate", "burst", "drain_s",
                                   "slot_time_bound_s", "drain_over_bound", "within_limit",
                                   "daemons_died") if k in s and s[k] not in (None, 0)}
        rows.append([s["scenario"], s["offered"], s["sent"], s["failed"], reasons, s["canceled"], s["lost"],
                     s["sent_twice"], s["sent_not_received"],
                     " ".join(f"{k}={v}" for k, v in notes.items())])
    verdict = ("OK: 0 lost, 0 sent twice, drains within their limits" if section["ok"]
               else "FAILED: see lost / sent twice / within_limit")
    died = sum(s.get("daemons_died", 0) for s in section["scenarios"])
    if died:
        errors = sorted({e for s in section["scenarios"] for e in s.get("daemon_errors", [])})
        verdict += f"; WARNING: {died} daemon(s) exited on their own: {'; '.join(errors)}"
    cfg = section.get("settings", {})
    verdict += (f" — lease {cfg.get('REVENUE_ASI_LEASE_S')} s, sweep {cfg.get('REVENUE_ASI_SWEEP_INTERVAL_S')} s, "
                f"fake delay {cfg.get('fake_delay_ms')} ms, load {cfg.get('load_rate')}/s")
    return table(f"chaos ({verdict})", ["scenario", "offered", "sent", "failed", "failed by reason", "canceled",
                                        "lost", "sent twice", "sent∉fake", "notes"], rows)


def _fair(section: dict[str, Any]) -> str:
    rows = []
    for c in section["configs"]:
        lat = c["trickle_latency"]
        spec = c["within_spec"]
        rows.append([c["daemons"], c["touches"], c["alone_touches_per_s"], c["with_trickle_touches_per_s"],
                     c["drain_ratio"], " ".join(f"{p:g}" for p in c["drain_ratio_pairs"]), lat["p50_ms"],
                     lat["p99_ms"], lat["max_ms"], lat["worst_max_ms"], lat["pooled"]["touches"],
                     f"{c['cpu_ratio_daemons']} / {c['cpu_ratio_postgres']}",
                     "yes" if spec["trickle_max_under_1s"] else "NO",
                     "yes" if spec["drain_ratio_at_least_0.90"] else "NO"])
    return table(f"fair (SPEC §16): account A's backlog in one transaction, alone vs with account B's trickle (1 touch "
                 f"/ {section['trickle_interval_ms']} ms); shipped defaults; medians of {section['repeat']} "
                 "interleaved runs; drain = commit → A's last request at the fake; trickle ms = commit → request",
                 ["daemons", "backlog", "alone/s", "with trickle/s", "ratio", "ratio per pair", "trickle p50",
                  "p99", "max", "worst max", "trickle n", "cpu/touch with ÷ alone (daemon / pg)", "max ≤ 1 s",
                  "ratio ≥ 0.90"], rows)


def _pacing(section: dict[str, Any]) -> str:
    w = section["windows"]
    email = section["email"]
    alone, during = email["no_backlog"], email["during_paced_backlog"]
    rows = [[f"{section['max_per_second']:g}/s, {section['daemons']} daemons", w.get("requests"),
             w.get("span_s"), w.get("rate_first_to_last"), w.get("sliding_min"), w.get("sliding_max"),
             section["window_bound"], " ".join(str(x) for x in w.get("fixed_windows", [])), w.get("min_gap_ms"),
             section["most_processing_at_once"]]]
    spec = section["within_spec"]
    return "\n".join([
        table(f"pacing (SPEC §16): one sender at max_per_second {section['max_per_second']:g} with a backlog of "
              f"{section['touches']}, requests at the fake per 10 s window (sliding: one starting at every request); "
              f"max ≤ bound: {'yes' if spec['window_max_within_bound'] else 'NO'}; rate within 10 %: "
              f"{'yes' if spec['rate_within_10_percent'] else 'NO'}",
              ["sender", "requests", "span s", "rate/s", "window min", "window max", "bound", "consecutive windows",
               "min gap ms", "max processing"], rows),
        table("pacing: the same account's e-mail, 1 every "
              f"{email['interval_ms']} ms, commit → request (ms); during / alone p50 "
              f"{email['p50_ratio_during_over_alone']}, p99 {email['p99_ratio_during_over_alone']}",
              ["e-mail trickle", "touches", "received", "p50", "p90", "p99", "max"],
              [[name, r["touches"], r["received"], r["p50_ms"], r["p90_ms"], r["p99_ms"], r["max_ms"]]
               for name, r in (("no backlog", alone), ("during the paced backlog", during))])])


def _overhead(section: dict[str, Any]) -> str:
    rows = []
    for name in ("before", "after"):
        side = section[name]
        rows.append([name, side["commit"], "yes" if side["has_sender_pacing"] else "no",
                     " ".join(f"{r['touches_per_s']:g}" for r in side["runs"]), side["touches_per_s"],
                     side["seconds"], side["cpu_us_per_touch_daemons"], side["cpu_us_per_touch_postgres"],
                     side.get("transactions_per_touch")])
    rows.append(["after / before", "", "", " ".join(f"{p:g}" for p in section["ratio_pairs"]),
                 section["ratio_after_over_before"], "", section["cpu_ratio_daemons_after_over_before"],
                 section["cpu_ratio_postgres_after_over_before"], ""])
    ok = "yes" if section["within_spec"]["ratio_at_least_0.95"] else "NO"
    return table(f"overhead (SPEC §16): drain of {section['touches']} unpaced sms touches of one account, 1 daemon at "
                 f"the shipped defaults, before vs after the fair claim and pacing, medians of {section['repeat']} "
                 f"(interleaved ABBA); ≥ 0.95: {ok}",
                 ["side", "commit", "sender_pacing", "touches/s per run", "median/s", "seconds", "cpu daemon µs",
                  "cpu postgres µs", "xacts/touch"], rows)


RENDER = {"latency": _latency, "throughput": _throughput, "scale": _scale, "peer": _peer, "limit": _limit,
          "fair": _fair, "pacing": _pacing, "overhead": _overhead, "chaos": _chaos}


def render(result: dict[str, Any]) -> str:
    parts = [RENDER[name](result[name]) for name in RENDER if name in result]
    meta = result.get("meta", {})
    pg = meta.get("postgres", {})
    parts.append(f"\nPostgreSQL {pg.get('server_version')} fsync={pg.get('fsync')} "
                 f"synchronous_commit={pg.get('synchronous_commit')} · {meta.get('machine', {}).get('cpus')} CPUs · "
                 f"fake provider delay {meta.get('provider_delay_ms')} ms · {meta.get('wall_s')} s")
    return "\n".join(parts) + "\n"


def ok(result: dict[str, Any]) -> bool:
    """Correctness only (never timing): nothing sent twice, nothing lost."""
    good = True
    peer_runs = result.get("peer", {}).get("runs", [])
    if "chaos" in result:
        good &= bool(result["chaos"]["ok"])
    for r in [*result.get("latency", {}).get("rates", []),
              *(run["latency"][side] for run in peer_runs for side in ("ours", "pgqueuer"))]:
        good &= r["sent_twice"] == 0 and r["missing"] == 0
    overhead = result.get("overhead", {})
    peer = result.get("peer", {})
    for r in [*result.get("throughput", {}).get("runs", []), peer.get("pgqueuer_64_tasks"),
              *(run[side] for run in peer.get("runs", []) for side in ("ours", "pgqueuer")),
              *overhead.get("before", {}).get("runs", []), *overhead.get("after", {}).get("runs", [])]:
        if r is None:
            continue
        good &= r["sent_twice"] == 0 and r["sent"] == r["touches"]
    for config in result.get("fair", {}).get("configs", []):
        for r in config["runs"]:
            good &= r["sent_twice"] == 0 and r["backlog_received"] == r["touches"]
            if "trickle" in r:
                good &= r["trickle"]["missing"] == 0
    if "pacing" in result:
        pacing = result["pacing"]
        good &= pacing["sent_twice"] == 0 and pacing["sms_requests"] == pacing["touches"]
        good &= pacing["email"]["during_paced_backlog"]["missing"] == 0
    return good
