#!/usr/bin/env python3
"""perf-shares.py PERF_DATA: the CPU samples of `perf record -e cpu-clock -g`, grouped by what
the code does (kernel copies, other kernel work, zstd, encryption, hashing, chunking, key
derivation, SQLite, user copies and allocation, the rest), as in docs/performance.md:

    perf record -e cpu-clock -F 2000 -g -o restore.data coffer restore --snapshot latest -t DEST
    scripts/perf-shares.py restore.data
"""
import subprocess, sys, collections, re
out = subprocess.run(["perf", "report", "-i", sys.argv[1], "--no-children", "--sort", "dso,symbol",
                      "--stdio", "-g", "none"], capture_output=True, text=True).stdout
cats = collections.Counter()
for line in out.splitlines():
    m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(\S+)", line)
    if not m:
        continue
    pct, dso, kind, sym = float(m.group(1)), m.group(2), m.group(3), m.group(4)
    if kind == "k":
        if re.search(r"copy_folio|copy_to_iter|copy_page|clear_page|memset|memcpy|rep_movs|copy_user", sym):
            c = "kernel: copying to/from the page cache"
        else:
            c = "kernel: other (inodes, directories, page cache, scheduling)"
    elif re.match(r"(ZSTD|HUF|FSE|HIST|ZSTDMT)", sym):
        c = "zstd"
    elif re.search(r"chacha|poly1305", sym):
        c = "encryption (XChaCha20-Poly1305)"
    elif "blake3" in sym:
        c = "hashing (keyed BLAKE3)"
    elif "fastcdc" in sym or "cut_gear" in sym:
        c = "chunking (FastCDC)"
    elif "argon2" in sym:
        c = "key derivation (Argon2id)"
    elif "sqlite" in sym.lower():
        c = "catalog (SQLite)"
    elif "zlib_rs" in sym or "deflate" in sym:
        c = "gzip (export)"
    elif re.search(r"memmove|memcpy|memset", sym):
        c = "user: memory copies"
    elif re.search(r"malloc|free|_int_", sym):
        c = "user: allocation"
    else:
        c = "user: other"
    cats[c] += pct
for c, p in cats.most_common():
    print(f"{p:5.1f}%  {c}")
