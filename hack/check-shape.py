#!/usr/bin/env python3
"""hack/check-shape.py: two rules of berth's shape that review alone would let slip.

1. No import cycles between the top-level modules of a crate (runtime, image, cni, shim, proto):
   `crate::<module>` uses in a module's files form a graph, and it must be acyclic.
2. No function in product code (not tests, not test/) longer than MAX_LINES lines.

Reads source as text; prints each violation and exits 1 if there is any.
"""
import os
import re
import sys

MAX_LINES = 80
CRATES = ["runtime", "image", "cni", "shim", "proto"]
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")

FN = re.compile(r'^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+"C"\s+)?fn\s+(\w+)')
USE = re.compile(r"crate::(\w+)")


def product_lines(path):
    """The file's lines up to its `#[cfg(test)]` module (tests are not product code)."""
    lines = open(path, encoding="utf-8").read().split("\n")
    for i, l in enumerate(lines):
        if l.startswith("#[cfg(test)]"):
            return lines[:i]
    return lines


def strip(line):
    line = re.sub(r'"(\\.|[^"\\])*"', '""', line)
    line = re.sub(r"'(\\.|[^'\\])'", "''", line)
    i = line.find("//")
    return line[:i] if i >= 0 else line


def long_functions(path):
    lines = product_lines(path)
    out = []
    for i, l in enumerate(lines):
        m = FN.match(l)
        if not m:
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            s = strip(lines[j])
            for ch in s:
                if ch == "{":
                    depth += 1
                    started = True
                elif ch == "}":
                    depth -= 1
            if started and depth <= 0:
                break
            if not started and s.rstrip().endswith(";"):
                break
            j += 1
        n = j - i + 1
        if started and n > MAX_LINES:
            out.append((path, i + 1, m.group(7), n))
    return out


def module_of(src, path):
    rel = os.path.relpath(path, src)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def cycles(src):
    graph = {}
    for dp, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            p = os.path.join(dp, f)
            mod = module_of(src, p)
            if mod in ("lib", "main"):
                continue
            text = "\n".join(product_lines(p))
            for dep in USE.findall(text):
                if dep != mod and os.path.exists(os.path.join(src, dep + ".rs")) or os.path.isdir(os.path.join(src, dep)):
                    if dep != mod:
                        graph.setdefault(mod, set()).add(dep)
    found, state = [], {}

    def visit(n, stack):
        state[n] = 1
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                found.append(stack[stack.index(d):] + [d] if d in stack else [n, d])
            elif d not in state:
                visit(d, stack + [d])
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [n])
    return found


def main():
    bad = 0
    for crate in CRATES:
        src = os.path.join(ROOT, crate, "src")
        for cyc in cycles(src):
            print(f"cycle in {crate}: {' -> '.join(cyc)}")
            bad += 1
        for dp, _, files in os.walk(src):
            for f in sorted(files):
                if f.endswith(".rs"):
                    for path, line, name, n in long_functions(os.path.join(dp, f)):
                        print(f"{os.path.relpath(path, ROOT)}:{line}: fn {name} is {n} lines (at most {MAX_LINES})")
                        bad += 1
    if bad:
        sys.exit(1)
    print(f"shape: no module cycles in {', '.join(CRATES)}; no product function over {MAX_LINES} lines")


if __name__ == "__main__":
    main()
