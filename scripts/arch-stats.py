#!/usr/bin/env python3
"""Architecture figures of src/ (issue 16): functions over N lines, `Result<_, String>`,
`use crate::` arrows against the layer order, lines in cli/.
Usage: scripts/arch-stats.py [--list]"""
import os, re, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
# Lower number = lower layer. An arrow from a to b is against the order when rank[b] > rank[a]
# (a lower layer importing a higher one), or between peers named as forbidden below.
RANK = {"runtime": 0, "error": 0, "storage": 0, "format": 1, "crypto": 1, "chunker": 1, "compress": 1, "id": 0,
        "repo": 2, "catalog": 3, "source": 3, "docker": 4, "engine": 5, "daemon": 6, "cli": 7}
# format -> crypto (the key file names crypto's KDF parameters and seal overhead) is one way
# and allowed: the complaint was the cycle, and crypto -> format stays forbidden.
FORBIDDEN = {("catalog", "repo"), ("crypto", "format"),
             ("cli", "repo"), ("cli", "catalog"), ("cli", "storage"), ("cli", "crypto"),
             ("cli", "format"), ("engine", "storage"), ("docker", "engine"),
             ("docker", "repo"), ("docker", "catalog")}

def files():
    for d, _, fs in os.walk(ROOT):
        for f in fs:
            if f.endswith(".rs"):
                yield os.path.join(d, f)

def module(path):
    rel = os.path.relpath(path, ROOT)
    return rel.split(os.sep)[0].removesuffix(".rs")

def functions(text):
    """(name, lines) of every fn with a body, counted from its `fn` line to its closing brace,
    skipping test modules."""
    out = []
    lines = text.split("\n")
    test_from = None
    for i, l in enumerate(lines):
        if re.match(r"\s*#\[cfg\(test\)\]", l):
            test_from = i
            break
    body = lines if test_from is None else lines[:test_from]
    i = 0
    while i < len(body):
        m = re.match(r"\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+(\w+)", body[i])
        if m:
            depth, started, j = 0, False, i
            while j < len(body):
                s = re.sub(r'"(\\.|[^"\\])*"', '""', body[j])
                s = re.sub(r"//.*", "", s)
                s = re.sub(r"'(\\.|[^'\\])'", "''", s)
                if not started and ";" in s and "{" not in s:
                    break
                for ch in s:
                    if ch == "{":
                        depth += 1; started = True
                    elif ch == "}":
                        depth -= 1
                if started and depth == 0:
                    out.append((m.group(6), j - i + 1))
                    break
                j += 1
        i += 1
    return out

def main():
    listing = "--list" in sys.argv
    long80, long100, string_results, arrows, cli_lines = [], [], [], [], 0
    for path in sorted(files()):
        text = open(path).read()
        rel = os.path.relpath(path, ROOT)
        mod = module(path)
        if mod == "cli":
            cli_lines += text.count("\n")
        code = text.split("#[cfg(test)]")[0]
        for name, n in functions(text):
            if n > 80:
                long80.append((n, f"{rel}::{name}"))
            if n > 100:
                long100.append((n, f"{rel}::{name}"))
        string_results += [rel for _ in re.findall(r"Result<[^<>]*(<[^<>]*>)?[^<>]*,\s*String>", code)]
        for m in re.finditer(r"use crate::(\w+)", code):
            to = m.group(1)
            if to == mod or to not in RANK or mod not in RANK:
                continue
            if RANK[to] > RANK[mod] or (mod, to) in FORBIDDEN:
                arrows.append(f"{rel} -> {to}")
    print(f"functions over 80 lines: {len(long80)} (over 100: {len(long100)})")
    print(f"Result<_, String> in the library: {len(string_results)}")
    print(f"use crate:: arrows against the layer order: {len(arrows)}")
    print(f"lines in src/cli: {cli_lines}")
    if listing:
        for n, f in sorted(long80, reverse=True):
            print(f"  {n:4} {f}")
        for r in sorted(set(string_results)):
            print(f"  String error: {r} x{string_results.count(r)}")
        for a in arrows:
            print(f"  arrow: {a}")

main()
