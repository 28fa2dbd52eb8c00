#!/usr/bin/env python3
"""Lists the dependencies between the top-level modules of a crate (`crate::X` paths in
`use` lines and in code, tests excluded) and fails when they form a cycle.

Usage: .ci/module_graph.py [tbgw/src]
"""
import os
import re
import sys

root = sys.argv[1] if len(sys.argv) > 1 else "tbgw/src"
modules = sorted(
    (n[:-3] if n.endswith(".rs") else n)
    for n in os.listdir(root)
    if n not in ("lib.rs", "main.rs") and (n.endswith(".rs") or os.path.isdir(os.path.join(root, n)))
)


def strip(text):
    """Drops comments and `#[cfg(test)]` modules (their imports are not the module's)."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def files(module):
    path = os.path.join(root, module)
    if os.path.isdir(path):
        for dp, _, fs in os.walk(path):
            for f in fs:
                if f.endswith(".rs") and f != "tests.rs" and "tests" not in dp.split(os.sep):
                    yield os.path.join(dp, f)
    else:
        yield path + ".rs"


edges = {m: set() for m in modules}
for m in modules:
    for f in files(m):
        text = strip(open(f).read())
        for u in re.findall(r"\bcrate::(\w+)", text):
            if u in edges and u != m:
                edges[m].add(u)
        # `use crate::{a, b::c}`
        for grp in re.findall(r"\bcrate::\{([^;]*)\}", text):
            for u in re.findall(r"(?:^|[,{]\s*)(\w+)", grp):
                if u in edges and u != m:
                    edges[m].add(u)

for m in modules:
    print(f"{m:10} -> {', '.join(sorted(edges[m])) or '(none)'}")

# Cycle check (depth-first search), then a topological order.
state, stack, cycles = {}, [], []


def visit(m):
    state[m] = 1
    stack.append(m)
    for n in sorted(edges[m]):
        if state.get(n) == 1:
            cycles.append(stack[stack.index(n):] + [n])
        elif n not in state:
            visit(n)
    stack.pop()
    state[m] = 2


for m in modules:
    if m not in state:
        visit(m)
if cycles:
    for c in cycles:
        print("cycle: " + " -> ".join(c))
    sys.exit(1)
order, done = [], set()
while len(order) < len(modules):
    for m in modules:
        if m not in done and edges[m] <= done:
            order.append(m)
            done.add(m)
print("acyclic; leaves first: " + " ".join(order))
