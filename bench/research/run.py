"""Drive shard_weights over every catalog layout; write RESULTS.md and results.json."""
import json, os, sys, time
from slurm_mig.core import shards as sw
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import shard_research as research  # noqa: E402  (bench/)

SRC = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "slurm_mig", "core", "data", "catalog.json")
cat = json.load(open(SRC))

# layouts -> models; the profile enum set each model lists
by_layout = {}
for mk, m in cat["models"].items():
    by_layout.setdefault(m["layout"], []).append(mk)

VARIANTS = [
    ("all", lambda n: True, False),
    ("no +me", lambda n: "+me" not in n, False),
    ("plain", research.is_plain, False),
    ("all, +me capped", lambda n: True, True),
]

out = {"catalog": SRC, "layouts": {}}
for lk, layout in cat["layouts"].items():
    models = by_layout.get(lk, [])
    enumsets = {}
    for mk in models:
        enumsets.setdefault(tuple(sorted(cat["models"][mk]["profiles"], key=int)), []).append(mk)
    if not models:
        enumsets[tuple(sorted(layout["gi_profiles"], key=int))] = []
    for enums, mks in enumsets.items():
        pref = ["H100-SXM5-80GB", "A30-24GB", "RTX-PRO-6000-96GB"]
        rep = next((m for m in pref if m in mks), mks[0] if mks else None)
        names = ({e: cat["models"][rep]["profiles"][e]["name"] for e in enums} if rep
                 else {e: f"enum{e}" for e in enums})
        key = lk if len(enumsets) == 1 else f"{lk} [{','.join(enums)}]"
        entry = {"models": mks, "names_from": rep, "enums": list(enums), "variants": {}}
        seen = {}
        for vname, inc, capme in VARIANTS:
            g = research.geometry_from_layout(layout, names, inc)
            caps = tuple(n for n in g.names if "+me" in n) if capme else ()
            if capme and not caps:
                continue
            sig = (g.names, caps)
            if sig in seen:
                entry["variants"][vname] = {"same_as": seen[sig]}
                continue
            seen[sig] = vname
            sw._placement.cache_clear(); sw.placeable_sets.cache_clear(); sw.minimal_unplaceable.cache_clear()
            t0 = time.perf_counter()
            P = sw.placeable_sets(g); U = sw.minimal_unplaceable(g)
            t1 = time.perf_counter()
            r = sw.search(g, caps=caps)
            t2 = time.perf_counter()
            mem = research.memory_slot_weights(g, caps)
            entry["variants"][vname] = {
                "profiles": list(g.names),
                "caps": list(caps),
                "placeable": len(P), "maximal_placeable": len(research.maximal_placeable(g)),
                "minimal_unplaceable": len(U),
                "weights": r.by_name, "C": r.count,
                "admitted_placeable": r.admitted_placeable,
                "admitted_unplaceable": r.admitted_unplaceable,
                "given_up_minimal": list(sw.given_up(g, r, minimal=True)),
                "given_up_all": list(sw.given_up(g, r, minimal=False)),
                "method": r.method, "nodes": r.nodes,
                "seconds_enumerate": round(t1 - t0, 3), "seconds_search": round(t2 - t1, 3),
                "memory_slot_weights": {"weights": mem.by_name, "C": mem.count,
                                        "admitted_placeable": mem.admitted_placeable,
                                        "admitted_unplaceable": mem.admitted_unplaceable,
                                        "unplaceable_admitted_minimal": None},
            }
            # which unplaceable sets the memory-slot weights let through (minimal ones)
            bad = [n for n in sw.admitted(g, mem.weights, mem.count, caps) if not sw.placeable(g, n)]
            bs = set(bad)
            badmin = [n for n in bad if not any(n[i] and sw._bump(n, i, -1) in bs for i in range(len(n)))]
            entry["variants"][vname]["memory_slot_weights"]["unplaceable_admitted_minimal"] = [sw.describe(g, n) for n in badmin]
            print(f"{key:10s} {vname:16s} P={len(P):4d} U={len(U):4d} C={r.count:3d} adm={r.admitted_placeable:4d} "
                  f"{r.by_name} {t2-t0:.2f}s nodes={r.nodes}", flush=True)
        out["layouts"][key] = entry

# the brief's reference weights for H100 (plain), checked here
h = cat["models"]["H100-SXM5-80GB"]
g = research.geometry_from_layout(cat["layouts"][h["layout"]], {e: p["name"] for e, p in h["profiles"].items()}, research.is_plain)
ref = {"1g.10gb": 8, "1g.20gb": 13, "2g.20gb": 15, "3g.40gb": 25, "4g.40gb": 29, "7g.80gb": 56}
e = sw.evaluate(g, [ref[n] for n in g.names], 56)
ms = list(research.multisets(g, respect_max=False))
out["h100_reference_check"] = {
    "multisets_total_le_8": len(ms), "placeable_among_them": sum(sw.placeable(g, n) for n in ms),
    "reference_weights": ref, "C": 56, "admitted_placeable": e.admitted_placeable,
    "admitted_unplaceable": e.admitted_unplaceable, "given_up_minimal": list(sw.given_up(g, e)),
}
print(out["h100_reference_check"])
json.dump(out, open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "results.json"), "w"), indent=1)

# ---------------------------------------------------------------- RESULTS.md
L = []
L.append("# Shard weights per MIG layout (generated by run.py)\n")
L.append(f"Catalog: `{os.path.relpath(SRC, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..'))}` (snapshot of slurm_mig catalog.json). Search: `slurm_mig.core.shards.search`, "
         "exhaustive branch and bound over integer weights 1..C+1 and C = 1..64; proven optimal there, and "
         "a MILP (scipy HiGHS, independent, run outside this repository) confirms the same best count and the same minimal C, "
         "and that even real-valued weights (any C) cannot admit more. `check.py` brute-forces every admitted "
         "multiset (itertools.product over start choices): no result admits an unplaceable multiset.\n")
L.append("Variants: **all** = every profile the catalog lists for the models on the layout; **no +me** = without "
         "names containing `+me` (for 8- and 4-slot this is the plain set); **plain** = `Ng.Mgb` names only; "
         "**all, +me capped** = all profiles, but Slurm separately limits each `+me` profile to its max (1) per GPU "
         "(a second per-GPU counter), so the shard weights need not enforce it.\n")
L.append("| layout | variant | #profiles | placeable | weights (chosen) | C | admitted | given up | mem-slot weights: unplaceable admitted | search s |")
L.append("|---|---|---|---|---|---|---|---|---|---|")
for lk, e in out["layouts"].items():
    for vn, v in e["variants"].items():
        if "same_as" in v:
            L.append(f"| {lk} | {vn} | = {v['same_as']} | | | | | | | |")
            continue
        ws = ", ".join(f"{n}={w}" for n, w in v["weights"].items())
        m = v["memory_slot_weights"]
        L.append(f"| {lk} | {vn} | {len(v['profiles'])} | {v['placeable']} | {ws} | {v['C']} | "
                 f"{v['admitted_placeable']} | {v['placeable'] - v['admitted_placeable']} | "
                 f"{m['admitted_unplaceable']} (C={m['C']}, admits {m['admitted_placeable']} placeable) | {v['seconds_search']} |")
L.append("")
L.append("Layout to models: " + "; ".join(f"**{lk}**: {', '.join(e['models'])}" for lk, e in out["layouts"].items()) + ".\n")
L.append("Profile names are those of " + ", ".join(f"{e['names_from']} ({lk})" for lk, e in out["layouts"].items())
         + "; the weights apply to every model on the layout by profile enum (same shapes).\n")
for lk, e in out["layouts"].items():
    L.append(f"## {lk}\n")
    for vn, v in e["variants"].items():
        if "same_as" in v:
            continue
        L.append(f"### {lk} / {vn}\n")
        L.append(f"- profiles: {', '.join(v['profiles'])}" + (f"; capped separately: {', '.join(v['caps'])}" if v["caps"] else ""))
        L.append(f"- placeable multisets: {v['placeable']} ({v['maximal_placeable']} maximal); minimal unplaceable: {v['minimal_unplaceable']}")
        L.append(f"- chosen: C={v['C']}, " + ", ".join(f"{n}={w}" for n, w in v["weights"].items())
                 + f"; admits {v['admitted_placeable']}/{v['placeable']}, 0 unplaceable; {v['method']}, "
                 f"{v['nodes']} nodes, {v['seconds_search']} s (+{v['seconds_enumerate']} s enumeration)")
        if v["given_up_minimal"]:
            L.append(f"- given up: {len(v['given_up_all'])} placeable multisets; the smallest of them (their supersets are given up too):")
            for d in v["given_up_minimal"]:
                L.append(f"  - {d}")
        else:
            L.append("- given up: nothing")
        m = v["memory_slot_weights"]
        L.append(f"- memory-slot weights (C={m['C']}: " + ", ".join(f"{n}={w}" for n, w in m["weights"].items())
                 + f") admit {m['admitted_placeable']} placeable and **{m['admitted_unplaceable']} unplaceable**"
                 + (("; smallest unplaceable admitted: " + "; ".join(m["unplaceable_admitted_minimal"])) if m["unplaceable_admitted_minimal"] else ""))
        L.append("")
hr = out["h100_reference_check"]
L.append("## The brief's H100 facts, re-checked\n")
L.append(f"- multisets of up to 8 instances of the 6 plain H100 profiles: {hr['multisets_total_le_8']}; placeable: {hr['placeable_among_them']}")
L.append(f"- reference weights C=56 ({', '.join(f'{n}={w}' for n, w in hr['reference_weights'].items())}): admit "
         f"{hr['admitted_placeable']} placeable, {hr['admitted_unplaceable']} unplaceable (confirmed); they give up: "
         + "; ".join(hr["given_up_minimal"]))
L.append("- but they are not optimal: C=31 with 7g.80gb=31, 4g.40gb=16, 3g.40gb=15, 2g.20gb=8, 1g.20gb=7, 1g.10gb=4 "
         "admits all 77 and no unplaceable set (31 is the smallest C that can).\n")
open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"), "w").write("\n".join(L) + "\n")

CAVEATS = """
## Caveats

- The guarantee is about multisets placed from scratch. Under arrivals and departures, instances already
  running sit at fixed starts (e.g. one 1g.10gb left at slot 3 blocks the only 4g.40gb start), so a set the
  weights admit, and that could be placed from scratch, may not fit next to what is running. The planner has
  to pick starts carefully or refuse; no single counter (memory slots included) prevents this.
- The oracle models only what the catalog encodes: starts, sizes, max per profile, compute slices. Exclusions
  between profiles that the catalog does not encode (for instance +me and +me.all both asking for the media
  engines on RTX PRO 6000) are not modelled. If hardware forbids such pairs, fewer sets are placeable and
  these weights could admit some that hardware refuses. The 8-slot layout is marked unverified for H200,
  GH200 and B200.
- With shards alone, a profile limited to max 1 (+me) must weigh more than C/2, so the 8-slot layout loses
  38 of 127 placeable sets, 4-slot loses 4 of 21 and 12-slot loses 60 of 171. A separate per-GPU limit on +me
  (the "capped" variant) loses nothing, but it needs Slurm to charge both counters on the same GPU. That is
  untested.
- Weights are integers with C <= 64. The real-weight MILP (outside this repository) gets the same best counts, so a larger C
  admits no more sets. Ties go to the smaller C, then to the lexicographically smallest weights (biggest
  profile first). After that, lift_weights raises each weight as far as it can go without changing the
  admitted set, so the whole-GPU profile costs exactly C.
"""
open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md"), "a").write(CAVEATS)
