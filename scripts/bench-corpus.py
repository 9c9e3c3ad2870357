#!/usr/bin/env python3
"""Parts of the BENCH_SIZE=mix corpus of scripts/bench.sh (issue 18); see docs/performance.md.

    bench-corpus.py workspace OUT CAP_MB      real small files: /usr/share/doc and
                                              ~/.cargo/registry/src, regular files only,
                                              CAP_MB 0 = all of them
    bench-corpus.py media OUT MB SEED         random files of 8-64 MiB, MB in total
    bench-corpus.py night OUT SEED            the next night of the workspace: a line appended
                                              to 1 % of its files, 20 new files
"""
import os
import random
import shutil
import sys

MiB = 1 << 20


def walk(root):
    """Regular readable files under root in a stable order, each inode once, no symlinks."""
    seen = set()
    for d, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            p = os.path.join(d, f)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            if not os.path.isfile(p) or os.path.islink(p) or (st.st_dev, st.st_ino) in seen:
                continue
            if not os.access(p, os.R_OK):
                continue
            seen.add((st.st_dev, st.st_ino))
            yield p, st.st_size


def workspace(out, cap_mb):
    """Round-robin over the trees so that a capped copy still holds some of each."""
    home = os.path.expanduser("~")
    roots = [("doc", "/usr/share/doc"), ("cargo", f"{home}/.cargo/registry/src")]
    gens = [(name, root, walk(root)) for name, root in roots if os.path.isdir(root)]
    if not gens:
        sys.exit("bench-corpus.py: neither /usr/share/doc nor ~/.cargo/registry/src exists")
    cap = cap_mb * MiB if cap_mb > 0 else None
    files = nbytes = 0
    while gens and (cap is None or nbytes < cap):
        for g in list(gens):
            name, root, it = g
            try:
                p, n = next(it)
            except StopIteration:
                gens.remove(g)
                continue
            dst = os.path.join(out, name, os.path.relpath(p, root))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            try:
                shutil.copyfile(p, dst)
            except OSError:
                continue
            files += 1
            nbytes += n
    dirs = sum(len(d) for _, d, _ in os.walk(out))
    print(f"workspace: {files} files in {dirs} directories, {nbytes / MiB:.1f} MiB",
          file=sys.stderr)


def media(out, mb, seed):
    rng = random.Random(seed + 1)
    os.makedirs(out, exist_ok=True)
    left, i = mb, 0
    while left > 0:
        n = min(left, rng.randint(8, 64))
        with open(os.path.join(out, f"clip-{i:02}.mp4"), "wb") as f:
            for _ in range(n):
                f.write(rng.randbytes(MiB))
        left -= n
        i += 1
    print(f"media: {i} files, {mb} MiB", file=sys.stderr)


def night(out, seed):
    rng = random.Random(seed + 200)
    files = []
    for d, dirs, fs in os.walk(out):
        dirs.sort()
        files += [os.path.join(d, f) for f in sorted(fs)]
    edited = rng.sample(files, max(1, len(files) // 100))
    for p in edited:
        with open(p, "ab") as f:
            f.write(b"\n# edited the next night\n")
    new = os.path.join(out, "next-night")
    os.makedirs(new, exist_ok=True)
    for i in range(20):
        lines = [f"{i} {rng.getrandbits(64):x} new line {k}" for k in range(rng.randint(10, 2000))]
        with open(os.path.join(new, f"note-{i:02}.txt"), "w") as f:
            f.write("\n".join(lines) + "\n")
    print(f"next night: {len(edited)} of {len(files)} workspace files appended to, 20 new",
          file=sys.stderr)


def main(argv):
    try:
        if argv[1] == "workspace" and len(argv) == 4:
            return workspace(argv[2], int(argv[3]))
        if argv[1] == "media" and len(argv) == 5:
            return media(argv[2], int(argv[3]), int(argv[4]))
        if argv[1] == "night" and len(argv) == 4:
            return night(argv[2], int(argv[3]))
    except (IndexError, ValueError):
        pass
    sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
