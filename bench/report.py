"""Turns one bench/run.sh run into bench/results.json and bench/RESULTS.md.

Reads the run directory bench/run.sh wrote: per chat-load run NAME.json (the
chat-load summary), NAME.meta (target, offered load, server CPU seconds from
/proc), NAME.cpu (0.5 s samples of server and generator CPU ticks) and, when
chat-load has --timeseries, NAME.timeseries.jsonl; for chat-server, NAME.metrics
(its /metrics at the end of the run); plus machine.env and lscpu.txt.  Usage: report.py RUN_DIR RESULTS_JSON RESULTS_MD
"""

import itertools
import json
import os
import re
import statistics
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

CLK_TCK = os.sysconf("SC_CLK_TCK")
SATURATED = 0.9  # a core busy 90% of the sending time or more


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def p90(xs):
    return statistics.quantiles(xs, n=10)[-1] if len(xs) >= 2 else (xs[0] if xs else None)


def busy(samples_path):
    """p90 over the 0.5 s samples of how busy (1.0 = one core) the server group
    and chat-load were, and how busy their two pinned cores were in total,
    whoever ran there."""
    rows = []
    with open(samples_path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) in (3, 7):  # the core columns are missing when /proc/stat was unreadable
                rows.append([float(p) for p in parts])
    series = {"server": [], "generator": [], "server_core": [], "load_core": []}
    for a, b in itertools.pairwise(rows):
        dt = b[0] - a[0]
        if dt <= 0:
            continue
        series["server"].append((b[1] - a[1]) / CLK_TCK / dt)
        series["generator"].append((b[2] - a[2]) / CLK_TCK / dt)
        for key, busy_i, total_i in (("server_core", 3, 4), ("load_core", 5, 6)):
            if len(b) < 7 or len(a) < 7:
                continue
            total = b[total_i] - a[total_i]
            if total > 0:
                series[key].append((b[busy_i] - a[busy_i]) / total)
    return {k: p90(v) for k, v in series.items()}


def flatten(obj, prefix=""):
    out = {}
    for k, v in obj.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def find(row, pattern):
    for k, v in row.items():
        if re.search(pattern, k) and isinstance(v, (int, float)):
            return v
    return None


def steady(path):
    """Steady state from chat-load's per-second time series, if it wrote one:
    the seconds after the last one with a connect (plus 2 s), while sending.
    Returns the medians of the per-second delivery p50/p99 and ack p99."""
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        rows = [flatten(json.loads(line)) for line in f if line.strip()]
    last_connect = max(
        (i for i, r in enumerate(rows) if (find(r, r"(^|\.)connects$") or 0) > 0), default=-1
    )
    window = [r for r in rows[last_connect + 3:] if (find(r, r"(^|\.)sent$") or 0) > 0]
    picked = {
        "delivery_p50": [find(r, r"deliver\w*[._]p50") for r in window],
        "delivery_p99": [find(r, r"deliver\w*[._]p99(?![._]?9)") for r in window],
        "ack_p99": [find(r, r"ack\w*[._]p99(?![._]?9)") for r in window],
    }
    result = {k: statistics.median(v) for k, v in picked.items() if v and None not in v}
    if "delivery_p99" not in result:
        return None
    result["seconds"] = len(window)
    result["delivery_p99_max"] = max(picked["delivery_p99"])
    return result


def quantile(q, buckets):
    """The q-quantile of a cumulative histogram [(upper bound, count)], interpolated
    linearly within its bucket, as PromQL's histogram_quantile does."""
    total = buckets[-1][1]
    if not total:
        return None
    rank, lower, below = q * total, 0.0, 0
    for upper, count in buckets:
        if count >= rank:
            if upper == float("inf"):
                return lower  # beyond the last finite bound: that bound
            return lower + (upper - lower) * (rank - below) / (count - below)
        lower, below = upper, count
    return lower


def persist(metrics_path):
    """chat-server's store commits over the run, from its /metrics scraped at the
    end (a fresh server per run): commit latency p50/p99 ms (accepted to durable;
    an ack waits for it) and rows per commit. None for the other servers."""
    if not os.path.exists(metrics_path):
        return None
    with open(metrics_path, encoding="utf-8") as f:
        families = {m.name: m for m in text_string_to_metric_families(f.read())}
    latency, batch = families.get("chat_persist_latency_seconds"), families.get("chat_persist_batch_size")
    if latency is None or batch is None:
        return None
    buckets = sorted((float(s.labels["le"]), s.value) for s in latency.samples if s.name.endswith("_bucket"))
    commits = next(s.value for s in batch.samples if s.name.endswith("_count"))
    rows = next(s.value for s in batch.samples if s.name.endswith("_sum"))
    p50, p99 = quantile(0.5, buckets), quantile(0.99, buckets)
    return {
        "p50_ms": None if p50 is None else p50 * 1000,
        "p99_ms": None if p99 is None else p99 * 1000,
        "rows_per_commit": rows / commits if commits else None,
    }


def verdict(b, send_lag_p99):
    """What limited the run: a process that kept its core busy, else a pinned
    core taken by other work on the machine, else late sends."""
    parts = []
    if (b["generator"] or 0) >= SATURATED:
        parts.append("generator CPU")
    if (b["server"] or 0) >= SATURATED:
        parts.append("server CPU")
    if not parts:
        if (b["server_core"] or 0) >= SATURATED:
            parts.append("server core shared with other work")
        if (b["load_core"] or 0) >= SATURATED:
            parts.append("load core shared with other work")
    if not parts and send_lag_p99 is not None and send_lag_p99 >= 5:
        parts.append("late sends (chat-load not run on time)")
    return " + ".join(parts) or "neither"


def collect(run_dir):
    ladder, idle, joins = [], [], []
    for name in sorted(os.listdir(run_dir)):
        if not name.endswith(".meta"):
            continue
        stem = os.path.join(run_dir, name[: -len(".meta")])
        meta = read_json(stem + ".meta")
        if not os.path.exists(stem + ".json"):
            print(f"report: {meta['name']}: no chat-load summary (exit {meta['exit']})", file=sys.stderr)
            continue
        summary = read_json(stem + ".json")
        lat = summary["latency_ms"]
        total = summary["deliveries"]["total"]
        if meta["idle"] is not None:
            i = meta["idle"]
            idle.append({
                "target": meta["target"],
                **i,
                "per_connection_kib": (i["rss_kib"] - i["rss_before_kib"]) / i["connections"]
                if i["connections"] else None,
                "connect_p99_ms": lat["connect"]["p99"],
                "connected": summary["connections"]["connected"],
                "failed": summary["connections"]["failed"],
            })
            continue
        if meta.get("joins") is not None:
            j, c = meta["joins"], summary["connections"]
            # The last client starts (clients/batch - 1) intervals of 0.1 s in,
            # and is joined `max` later: everyone joined within their sum.
            within_s = (c["attempted"] / j["batch"] - 1) * 0.1 + lat["connect"]["max"] / 1000
            joins.append({
                "target": meta["target"],
                **j,
                "attempted": c["attempted"],
                "connected": c["connected"],
                "failures": c["failures"],
                "connect": lat["connect"],
                "all_joined_within_s": within_s if c["connected"] else None,
                "achieved_per_sec": c["connected"] / within_s if c["connected"] and within_s > 0 else None,
                "server_cpu_s": meta["server_cpu_s"],
            })
            continue
        b = busy(stem + ".cpu")
        ladder.append({
            "target": meta["target"],
            "offered": meta["offered"],
            "exit": meta["exit"],
            "passed": summary["passed"],
            "deliveries": total,
            "deliveries_per_sec": summary["deliveries"]["per_sec"],
            "delivery": lat["delivery"],
            # No acks (Socket.IO): no ack latencies, shown as "–".
            "ack": lat["ack"] if lat["ack"]["count"] else {k: None for k in lat["ack"]},
            "connect": lat["connect"],
            "send_lag": lat["send_lag"],
            "missing": summary["audit"]["missing"],
            "unacked": summary["messages"]["unacked"],
            "server_cpu_s": meta["server_cpu_s"],
            "server_cpu_us_per_delivery": meta["server_cpu_s"] / total * 1e6 if total else None,
            "server_process_cpu_s": meta.get("server_process_cpu_s"),
            "server_process_cpu_us_per_delivery": meta["server_process_cpu_s"] / total * 1e6
            if total and "server_process_cpu_s" in meta else None,
            "server_busy_p90": b["server"],
            "generator_busy_p90": b["generator"],
            "server_core_busy_p90": b["server_core"],
            "load_core_busy_p90": b["load_core"],
            "generator_cpu_percent": summary["generator"]["cpu_percent"],
            "saturated": verdict(b, lat["send_lag"]["p99"]),
            "steady": steady(stem + ".timeseries.jsonl"),
            "persist": persist(stem + ".metrics"),
        })
    ladder.sort(key=lambda r: (r["target"], r["offered"]))
    return ladder, idle, joins


def machine_info(run_dir):
    env = {}
    with open(os.path.join(run_dir, "machine.env"), encoding="utf-8") as f:
        for line in f:
            k, _, v = line.rstrip("\n").partition("=")
            env[k] = v
    with open(os.path.join(run_dir, "lscpu.txt"), encoding="utf-8") as f:
        lscpu = f.read()
    return env, lscpu


TITLES = {
    "embedded": "chatback embedded",
    "pg": "chatback on Redis + PostgreSQL (fsync on)",
    "floor": "uWS floor",
    "socketio": "Socket.IO 4 + redis-adapter",
}


def fmt(x, digits=1):
    return "–" if x is None else f"{x:,.{digits}f}"


def ratio(x, floor):
    if x is None or not floor:
        return ""
    return f" ({x / floor:.1f}×)"


def cell(x, floor, digits=1):
    return fmt(x, digits) + ratio(x, floor)


def markdown(ladder, idle, joins, env, lscpu):
    targets = [t for t in TITLES if any(r["target"] == t for r in ladder + idle)]
    by = {(r["target"], r["offered"]): r for r in ladder}
    idle_by = {r["target"]: r for r in idle}
    joins_by = {r["target"]: r for r in joins}
    offered = sorted({r["offered"] for r in ladder})
    out = []
    w = out.append
    quick = env.get("quick") == "1"
    w("# bench/ results")
    w("")
    if quick:
        w("> **SMOKE RUN** (`BENCH_QUICK=1`): a short ladder, short steps and few idle")
        w("> connections, on a shared machine. It shows that bench/run.sh works end to end;")
        w("> its numbers are not the benchmark. Regenerate with `bench/run.sh`.")
        w("")
    w("Written by `bench/run.sh` (see bench/README.md). One run, every target under the same")
    w(f"chat-load scenario: {env['clients']} clients in {env['rooms']} rooms, open loop, one batch,")
    w(f"{env['duration']} s of sending per step; servers (and Redis, PostgreSQL) pinned to CPU")
    w(f"{env['server_cpu']}, chat-load to CPU {env['load_cpu']}. Ratios in parentheses are to the uWS floor.")
    w("")
    w("## Command")
    w("")
    w(f"```sh\n{env['command']}\n```")
    w("")
    w("## Machine")
    w("")
    w(f"- kernel {env['kernel']}, nproc {env['nproc']}; Node.js {env['node']}; {env['rustc']}")
    w(f"- load average when the run started: {env.get('loadavg_at_start', 'not recorded')} (other work on the machine"
      " shares both cores; pinning separates the servers from chat-load, not from it)")
    w(f"- {env['postgres']}; {env['redis']}")
    w(f"- chatback commit {env['commit']}")
    if env.get("socketio_supported") != "1":
        w("- Socket.IO: not run (this chat-load has no `--protocol socketio`)")
    w("")
    w("```")
    w("\n".join(l for l in lscpu.splitlines() if re.match(
        r"(Architecture|CPU\(s\)|Model name|Thread|Core|Socket|CPU max MHz|L[23] cache|Hypervisor)", l)))
    w("```")
    w("")
    w("## Side by side")
    w("")
    w("| | " + " | ".join(TITLES[t] for t in targets) + " |")
    w("|---|" + "---|" * len(targets))

    def row(label, values, digits=1):
        if all(values.get(t) is None for t in targets):
            return  # not measured in this run
        floor = values.get("floor")
        w(f"| {label} | " + " | ".join(
            fmt(values.get(t), digits) if t == "floor" else cell(values.get(t), floor, digits)
            for t in targets) + " |")

    def at(o, *path):
        """target -> the value at `path` of the step at offered load `o`."""
        values = {}
        for t in targets:
            r = by.get((t, o))
            for p in path:
                r = None if r is None else r[p]
            values[t] = r
        return values

    for o in offered:
        row(f"{o:,}/s offered: delivery p50 ms", at(o, "delivery", "p50"), 2)
        row(f"{o:,}/s offered: delivery p99 ms", at(o, "delivery", "p99"), 2)
        row(f"{o:,}/s offered: ack p50 ms", at(o, "ack", "p50"), 2)
        row(f"{o:,}/s offered: ack p99 ms", at(o, "ack", "p99"), 2)
        row(f"{o:,}/s offered: of which store commit p99 ms", at(o, "persist", "p99_ms"), 2)
        row(f"{o:,}/s offered: server CPU µs per delivery", at(o, "server_cpu_us_per_delivery"))
        row(f"{o:,}/s offered: of which the server process", at(o, "server_process_cpu_us_per_delivery"))
        saturated = at(o, "saturated")
        w(f"| {o:,}/s offered: saturated | " + " | ".join(saturated[t] or "–" for t in targets) + " |")
    row(f"idle RSS per connection KiB ({env['idle_conns']} asked)",
        {t: i["per_connection_kib"] for t, i in idle_by.items()})
    if joins:
        j0 = joins[0]
        row(f"{j0['offered_per_sec']:,} joins/s offered (rooms of {j0['room_size']}): connect p99 ms",
            {t: j["connect"]["p99"] for t, j in joins_by.items()})
        row(f"{j0['offered_per_sec']:,} joins/s offered (rooms of {j0['room_size']}): joins/s achieved",
            {t: j["achieved_per_sec"] for t, j in joins_by.items()}, 0)
    w("")
    w("Server CPU counts the server process and, on Redis + PostgreSQL, Redis and every")
    w("PostgreSQL process too (utime + stime from /proc/PID/stat over the whole chat-load run,")
    w("connect burst and drain included), divided by the deliveries chat-load received; \"of which")
    w("the server process\" leaves Redis and PostgreSQL out.")
    w(f"\"saturated\" uses the p90 of 0.5 s samples: the server group or chat-load kept ≥ {SATURATED:.0%}")
    w("of a core busy (CPU); else its pinned core was that busy in total, so other work on the")
    w("machine took it (shared); else chat-load's send lag p99 reached 5 ms (late sends).")
    w("\"Store commit\" is chat-server's own histogram (`chat_persist_latency_seconds`, scraped at the")
    w("end of each run, p99 interpolated within its power-of-two buckets): from a message's acceptance")
    w("to its row being durable, which its ack waits for; the floor stores nothing.")
    w("")
    w("## Every step")
    w("")
    w("| target | offered/s | received/s | delivery p50 / p99 / p99.9 ms | ack p50 / p99 ms | connect p99 ms "
      "| store commit p50 / p99 ms (rows per commit) "
      "| send lag p99 ms | server CPU s | µs/delivery | busy p90: server / its core "
      "| busy p90: chat-load / its core | missing | saturated |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in ladder:
        d, a, c = r["delivery"], r["ack"], r["persist"] or {}
        w(f"| {r['target']} | {r['offered']:,} | {fmt(r['deliveries_per_sec'], 0)} "
          f"| {fmt(d['p50'], 2)} / {fmt(d['p99'], 2)} / {fmt(d['p99_9'], 2)} "
          f"| {fmt(a['p50'], 2)} / {fmt(a['p99'], 2)} | {fmt(r['connect']['p99'], 1)} "
          f"| {fmt(c.get('p50_ms'), 2)} / {fmt(c.get('p99_ms'), 2)} ({fmt(c.get('rows_per_commit'))}) "
          f"| {fmt(r['send_lag']['p99'], 2)} | {fmt(r['server_cpu_s'], 2)} "
          f"| {fmt(r['server_cpu_us_per_delivery'])} "
          f"| {fmt(r['server_busy_p90'], 2)} / {fmt(r['server_core_busy_p90'], 2)} "
          f"| {fmt(r['generator_busy_p90'], 2)} / {fmt(r['load_core_busy_p90'], 2)} "
          f"| {r['missing']} | {r['saturated']} |")
    w("")
    w("## Steady state vs including the connect burst")
    w("")
    if any(r["steady"] for r in ladder):
        w("Steady state: the seconds of chat-load's `--timeseries` after the last connect (+2 s)")
        w("while sending; medians of the per-second percentiles. \"whole run\" includes the burst.")
        w("")
        w("| target | offered/s | delivery p50 steady / whole | delivery p99 steady (max second) / whole | ack p99 steady / whole |")
        w("|---|---|---|---|---|")
        for r in ladder:
            s = r["steady"] or {}
            w(f"| {r['target']} | {r['offered']:,} | {fmt(s.get('delivery_p50'), 2)} / {fmt(r['delivery']['p50'], 2)} "
              f"| {fmt(s.get('delivery_p99'), 2)} ({fmt(s.get('delivery_p99_max'), 2)}) / {fmt(r['delivery']['p99'], 2)} "
              f"| {fmt(s.get('ack_p99'), 2)} / {fmt(r['ack']['p99'], 2)} |")
    else:
        w("Not available: this chat-load has no `--timeseries`, so every figure above is for the")
        w("whole run, the connect burst (all clients in one batch) and the first seconds included.")
        w("bench/run.sh passes `--timeseries` as soon as chat-load has it, and this section then")
        w("splits the two.")
    w("")
    w("## Idle memory")
    w("")
    w("A fresh server, its RSS before, then with the connections open and joined (rooms of")
    w(f"{int(env['clients']) // int(env['rooms'])}, sources spread over 127.0.0.1–4), after every connection")
    w(f"was established and {env.get('idle_hold', '15')} s more, once the allocator has returned the")
    w("burst's pages. The server process only (not Redis or PostgreSQL).")
    w("")
    w("| target | connections | RSS before MiB | RSS at N MiB | per connection KiB | connect p99 ms |")
    w("|---|---|---|---|---|---|")
    for t in targets:
        i = idle_by.get(t)
        if i:
            w(f"| {t} | {i['connections']:,} | {fmt(i['rss_before_kib'] / 1024)} | {fmt(i['rss_kib'] / 1024)} "
              f"| {fmt(i['per_connection_kib'])} | {fmt(i['connect_p99_ms'])} |")
    w("")
    if joins:
        w("## Joins")
        w("")
        w(f"A fresh server; {joins[0]['attempted']:,} clients start at {joins[0]['offered_per_sec']:,} per second")
        w(f"(a batch every 100 ms) and each joins one room of {joins[0]['room_size']}, then all leave. Connect")
        w("latency runs from a client's scheduled start to its `joined` (TCP, upgrade, join, member")
        w("list). \"all joined within\" is the last batch's start plus the slowest connect; achieved")
        w("joins/s is the clients joined over that time. chat-server announces each join to the")
        w("room's members (`presence`); the uWS floor has no presence, so it sends no such frames.")
        w("")
        w("| target | joined | failed (reasons) | connect p50 / p99 / max ms | all joined within s | joins/s achieved | server CPU s |")
        w("|---|---|---|---|---|---|---|")
        for t in targets:
            j = joins_by.get(t)
            if j:
                reasons = ", ".join(f"{k} {v}" for k, v in j["failures"].items()) or "none"
                c = j["connect"]
                w(f"| {t} | {j['connected']:,} | {j['attempted'] - j['connected']:,} ({reasons}) "
                  f"| {fmt(c['p50'])} / {fmt(c['p99'])} / {fmt(c['max'])} | {fmt(j['all_joined_within_s'], 2)} "
                  f"| {fmt(j['achieved_per_sec'], 0)} | {fmt(j['server_cpu_s'], 2)} |")
        w("")
    w("## Plot")
    w("")
    w("![delivery p50 and p99 against offered load](latency.png)")
    w("")
    w("Made by bench/plot.py from bench/results.json.")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: report.py RUN_DIR RESULTS_JSON RESULTS_MD")
    run_dir, results_json, results_md = sys.argv[1:]
    ladder, idle, joins = collect(run_dir)
    if not ladder:
        sys.exit("report: no chat-load run produced a summary")
    env, lscpu = machine_info(run_dir)
    with open(results_json, "w", encoding="utf-8") as f:
        json.dump({"schema": "chatback-bench/v1", "run": env, "ladder": ladder, "idle": idle, "joins": joins}, f, indent=1)
        f.write("\n")
    with open(results_md, "w", encoding="utf-8") as f:
        f.write(markdown(ladder, idle, joins, env, lscpu))


if __name__ == "__main__":
    main()
