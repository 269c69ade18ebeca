"""Hypothesis-free self-check, independent of slurm_mig.core.shards' search and oracle.

1. A brute-force placement oracle: for each profile choose a set of distinct
   legal starts (itertools.combinations), all profiles together
   (itertools.product), and test that no two memory ranges overlap; plus the
   max-per-profile and compute-slice limits.  Compared with
   slurm_mig.core.shards.placeable on every multiset of up to memory_slots+1 instances
   of every 8-slot profile (no max bound), and on the 4- and 12-slot layouts.
2. For every result in results.json: enumerate every multiset n with
   w.n <= C (nothing else bounds it) and brute-force each: none may be
   unplaceable, and the placeable ones must match the reported count.
Standard library only.  Usage: python check.py [catalog.json] [results.json]
"""
import itertools, json, os, sys

HERE = os.path.dirname(os.path.abspath(__file__))
cat = json.load(open(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "catalog.snapshot.json")))
res = json.load(open(sys.argv[2] if len(sys.argv) > 2 else os.path.join(HERE, "results.json")))


def profiles_of(layout_key, enums, names):
    lay = cat["layouts"][layout_key]
    return lay, {names[e]: lay["gi_profiles"][e] for e in enums}


def brute(lay, prof, counts):
    """counts: {name: n}.  True iff some choice of starts fits."""
    items = [(n, c) for n, c in counts.items() if c]
    if any(c > prof[n]["max"] for n, c in items):
        return False
    if sum(prof[n]["slices"] * c for n, c in items) > lay["compute_slices"]:
        return False
    choices = [list(itertools.combinations(prof[n]["starts"], c)) for n, c in items]
    for pick in itertools.product(*choices):
        cells = []
        for (n, _), starts in zip(items, pick):
            for s in starts:
                cells.extend(range(s, s + prof[n]["mem_slots"]))
        if len(cells) == len(set(cells)) and all(0 <= x < lay["memory_slots"] for x in cells):
            return True
    return False


def all_multisets(names, total):
    for comb in itertools.product(range(total + 1), repeat=len(names)):
        if 0 < sum(comb) <= total:
            yield dict(zip(names, comb))


fails = 0
from slurm_mig.core import shards as sw  # only its oracle is compared here
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import shard_research as research  # noqa: E402  (bench/)

# 1. the oracle
for lk, entry in res["layouts"].items():
    layout_key = lk.split(" ")[0]
    model = cat["models"][entry["names_from"]]
    names = {e: model["profiles"][e]["name"] for e in entry["enums"]}
    lay, prof = profiles_of(layout_key, entry["enums"], names)
    g = research.geometry_from_layout(lay, names)
    # one more instance than can ever fit, so every minimal unplaceable set is
    # covered (12-slot: each instance takes >= 3 of 12 slots, so 5 suffices)
    smallest = min(p["mem_slots"] for p in prof.values())
    total = lay["memory_slots"] // smallest + 1
    n = agree = fit = 0
    for ms in all_multisets(list(prof), total):
        a = brute(lay, prof, ms)
        b = sw.placeable(g, ms)
        n += 1; fit += a; agree += a == b
        if a != b:
            fails += 1
            print("ORACLE MISMATCH", lk, ms, a, b)
    print(f"oracle {lk}: {n} multisets, {fit} placeable, {agree} agree")

# the brief's H100 facts (6 plain profiles, up to 8 instances)
h = cat["models"]["H100-SXM5-80GB"]
lay = cat["layouts"][h["layout"]]
plain = {e: p["name"] for e, p in h["profiles"].items() if "+" not in p["name"]}
_, prof = profiles_of(h["layout"], list(plain), plain)
sets = list(all_multisets(list(prof), 8))
ok = [s for s in sets if brute(lay, prof, s)]
def adm(w, C):
    return [s for s in sets if sum(w[k] * v for k, v in s.items()) <= C]
mem = {n: prof[n]["mem_slots"] for n in prof}
ref = {"1g.10gb": 8, "1g.20gb": 13, "2g.20gb": 15, "3g.40gb": 25, "4g.40gb": 29, "7g.80gb": 56}
a_mem = adm(mem, 8); a_ref = adm(ref, 56)
print(f"H100 plain: {len(sets)} multisets, {len(ok)} placeable; memory-slot weights admit "
      f"{sum(brute(lay, prof, s) for s in a_mem)} placeable + {sum(not brute(lay, prof, s) for s in a_mem)} unplaceable; "
      f"reference C=56 weights admit {sum(brute(lay, prof, s) for s in a_ref)} placeable + "
      f"{sum(not brute(lay, prof, s) for s in a_ref)} unplaceable")

# 2. every chosen weight set, over every multiset it admits
for lk, entry in res["layouts"].items():
    layout_key = lk.split(" ")[0]
    model = cat["models"][entry["names_from"]]
    names = {e: model["profiles"][e]["name"] for e in entry["enums"]}
    for vname, v in entry["variants"].items():
        if "same_as" in v:
            continue
        lay, prof = profiles_of(layout_key, entry["enums"], names)
        prof = {n: prof[n] for n in v["profiles"]}
        w, C, caps = v["weights"], v["C"], set(v["caps"])
        nm = list(prof)
        ranges = [range(0, min(C // w[n], prof[n]["max"] if n in caps else C) + 1) for n in nm]
        good = bad = 0
        for comb in itertools.product(*ranges):
            if not any(comb) or sum(w[n] * c for n, c in zip(nm, comb)) > C:
                continue
            if brute(lay, prof, dict(zip(nm, comb))):
                good += 1
            else:
                bad += 1
                print("ADMITS UNPLACEABLE", lk, vname, dict(zip(nm, comb)))
        # total placeable, brute force, box bounded by max
        tot = sum(1 for comb in itertools.product(*[range(prof[n]["max"] + 1) for n in nm])
                  if any(comb) and brute(lay, prof, dict(zip(nm, comb))))
        st = "OK" if bad == 0 and good == v["admitted_placeable"] and tot == v["placeable"] else "FAIL"
        fails += st != "OK"
        print(f"{st} weights {lk} / {vname}: C={C} admits {good} placeable (reported "
              f"{v['admitted_placeable']}), {bad} unplaceable; placeable total {tot} (reported {v['placeable']})")
print("ALL CHECKS PASSED" if not fails else f"{fails} FAILURES")
sys.exit(1 if fails else 0)
