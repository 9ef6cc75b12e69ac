#!/usr/bin/env python3
"""Turns a bench/run.sh result folder into report.md and report.json."""
import json
import re
import sys
from pathlib import Path

out = Path(sys.argv[1])
runs = out / "runs"
meta = json.loads((out / "meta.json").read_text()) if (out / "meta.json").exists() else {}


def load(name):
    p = runs / f"{name}.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def row(r):
    lc, lu = r["latency_ms"]["corrected"], r["latency_ms"]["uncorrected"]
    req = r["requests"]
    return {
        "target_rps": r.get("target_rps"),
        "achieved_rps": round(r["achieved_rps"], 1),
        "completed": req["completed"],
        "failed": req["failed"],
        "dropped": req["dropped"],
        "p50_ms": lc["p50"], "p90_ms": lc["p90"], "p99_ms": lc["p99"], "p99_9_ms": lc["p99_9"], "max_ms": lc["max"],
        "uncorrected_p99_ms": lu["p99"],
        "lag_p99_ms": r["schedule_lag_ms"]["p99"],
        "errors": {k: v for k, v in r["errors"].items() if v},
        "cpu_us_per_request": round(r["cpu"]["per_request_us"], 2),
    }


report = {"meta": meta, "generator": {}, "cases": {}, "oha": {}, "notes": []}
md = ["# Benchmarks", ""]
md.append(f"Date {meta.get('date', '?')}, commit {meta.get('commit', '?')}, {meta.get('nproc', '?')} cores, "
          f"each run {meta.get('duration', '?')}, concurrency {meta.get('concurrency', '?')}, "
          f"wsgid workers {meta.get('workers', '?')}, load average at start {meta.get('load_average_at_start', '?')}.")
md.append("Latency columns are corrected (from the intended send time) unless marked uncorrected; ms.")
md.append("")

# 1. Generator
def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


dur_s = None
md += ["## The generator itself", "",
       "Median of 3 rounds; HTTP: echo-server pinned to core 0, the generator to core 1.", "",
       "| what | req/s (rounds) | p99 ms | generator cpu us/req |", "|---|---|---|---|"]
gs = [g for g in (load(f"self-http-loadgen-{i}") for i in (1, 2, 3)) if g]
if gs:
    dur_s = gs[0]["duration_s"]
    m = median([g["achieved_rps"] for g in gs])
    g = next(g for g in gs if g["achieved_rps"] == m)
    report["generator"]["http_loadgen"] = {**row(g), "rounds_rps": [round(x["achieved_rps"]) for x in gs]}
    md.append(f"| loadgen --max-rps -c {g['config']['connections']} -t 1, HTTP echo-server | {m:.0f} ({', '.join(str(round(x['achieved_rps'])) for x in gs)}) | "
              f"{g['latency_ms']['corrected']['p99']} | {g['cpu']['per_request_us']:.2f} |")
wrks = []
for i in (1, 2, 3):
    p = runs / f"self-http-wrk-{i}.txt"
    if p.exists():
        t = p.read_text()
        m = re.search(r"Requests/sec:\s*([\d.]+)", t)
        c = re.search(r"cpu_seconds ([\d.]+)", t)
        p99 = re.search(r"99%\s+(\S+)", t)
        if m:
            rps = float(m.group(1))
            cpu = float(c.group(1)) if c else None
            wrks.append((rps, cpu, p99.group(1) if p99 else None))
if wrks:
    wrks.sort()
    rps, cpu, _ = wrks[len(wrks) // 2]
    per = (cpu * 1e6 / (rps * dur_s)) if (cpu and dur_s) else None
    report["generator"]["http_wrk"] = {"achieved_rps": rps, "rounds_rps": [round(w[0]) for w in wrks], "cpu_us_per_request": per}
    md.append(f"| wrk -t1, same server, same cores and connections | {rps:.0f} ({', '.join(str(round(w[0])) for w in wrks)}) | - | {per:.2f} |" if per else
              f"| wrk -t1, same server, same cores and connections | {rps:.0f} | - | - |")
zs = [z for z in (load(f"self-zmq-loadgen-{i}") for i in (1, 2, 3)) if z]
if zs:
    m = median([z["achieved_rps"] for z in zs])
    z = next(z for z in zs if z["achieved_rps"] == m)
    report["generator"]["zmq_loadgen"] = {**row(z), "rounds_rps": [round(x["achieved_rps"]) for x in zs]}
    md.append(f"| loadgen --zmq --max-rps --max-inflight 64, echo-handler | {m:.0f} ({', '.join(str(round(x['achieved_rps'])) for x in zs)}) | "
              f"{z['latency_ms']['corrected']['p99']} | {z['cpu']['per_request_us']:.2f} |")
md.append("")

# 2. Cases
md += ["## wsgid with the fixture apps", "",
       "| case | transport | mode | target req/s | achieved req/s | p50 | p90 | p99 | p99.9 | max | uncorrected p99 | failed | errors |",
       "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
names = sorted(p.stem for p in runs.glob("*.json"))
for case in ["hello", "body10k", "upload1m", "stream"]:
    for transport in ["fake", "real", "zmq"]:
        for n in names:
            m = re.fullmatch(rf"{case}-{transport}-(peak|rate\d+)", n)
            if not m:
                continue
            r = load(n)
            if not r:
                continue
            x = row(r)
            report["cases"].setdefault(case, {}).setdefault(transport, {})[m.group(1)] = x
            mode = "peak (closed loop)" if m.group(1) == "peak" else "fixed rate"
            md.append(f"| {case} | {transport} | {mode} | {x['target_rps'] or '-'} | {x['achieved_rps']} | {x['p50_ms']} | {x['p90_ms']} | "
                      f"{x['p99_ms']} | {x['p99_9_ms']} | {x['max_ms']} | {x['uncorrected_p99_ms']} | {x['failed']} | {x['errors'] or ''} |")
md.append("")
md.append("Transports: fake = HTTP through fake-mongrel2, real = HTTP through Mongrel2 1.12, zmq = loadgen --zmq straight to wsgid (no HTTP).")
md.append("")

# 3. oha
lo = load("oha-same-target-loadgen")
oc = runs / "oha-corrected.json"
od = runs / "oha-default.json"
if lo or oc.exists():
    md += ["## loadgen and oha on the same target (hello through fake-mongrel2)", "",
           "| tool | target req/s | achieved req/s | p99 ms | note |", "|---|---|---|---|---|"]
    if lo:
        x = row(lo)
        report["oha"]["loadgen"] = x
        md.append(f"| loadgen | {x['target_rps']} | {x['achieved_rps']} | {x['p99_ms']} | corrected (uncorrected {x['uncorrected_p99_ms']}) |")
    for label, p in [("oha --latency-correction", oc), ("oha (default)", od)]:
        try:
            o = json.loads(p.read_text())
            s = o["summary"]
            p99 = o["latencyPercentiles"]["p99"]
            report["oha"][label] = {"achieved_rps": s["requestsPerSec"], "p99_ms": None if p99 is None else p99 * 1000, "success_rate": s.get("successRate")}
            md.append(f"| {label} | | {s['requestsPerSec']:.1f} | {'-' if p99 is None else round(p99 * 1000, 3)} | success rate {s.get('successRate')} |")
        except (OSError, ValueError, KeyError, TypeError) as e:
            md.append(f"| {label} | | - | - | no result ({type(e).__name__}) |")
    md.append("")

sl = load("stall-loadgen")
if sl or (runs / "stall-oha-default.json").exists():
    md += ["## A 1 s server stall (SIGSTOP) at 500 req/s for 5 s", "",
           "| tool | achieved req/s | p99 ms |", "|---|---|---|"]
    if sl:
        report["stall"] = {"loadgen": row(sl)}
        md.append(f"| loadgen (corrected) | {sl['achieved_rps']:.1f} | {sl['latency_ms']['corrected']['p99']} |")
        md.append(f"| loadgen (uncorrected) | | {sl['latency_ms']['uncorrected']['p99']} |")
    for label, name in [("oha (default)", "stall-oha-default"), ("oha --latency-correction", "stall-oha-corrected")]:
        try:
            o = json.loads((runs / f"{name}.json").read_text())
            p99 = o["latencyPercentiles"]["p99"]
            report.setdefault("stall", {})[label] = {"achieved_rps": o["summary"]["requestsPerSec"], "p99_ms": p99 * 1000}
            md.append(f"| {label} | {o['summary']['requestsPerSec']:.1f} | {round(p99 * 1000, 3)} |")
        except (OSError, ValueError, KeyError, TypeError):
            md.append(f"| {label} | - | no result |")
    md.append("")

notes = (out / "notes.txt").read_text().strip().splitlines() if (out / "notes.txt").exists() else []
report["notes"] = notes
if notes:
    md += ["## Skipped or failed", ""] + [f"- {n}" for n in notes] + [""]
(out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
(out / "report.md").write_text("\n".join(md) + "\n")
print("\n".join(md))
