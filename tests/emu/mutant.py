#!/usr/bin/env python3
"""Runs an emulation test on a mutated copy of a kernel file, to show the test catches the bug.
The repository is not touched: kernels/cuda/ is copied to a temporary tree, OLD is replaced by
NEW there (exactly COUNT times), extract.py extracts that tree, and the test is compiled and
linked with the build's own command lines (compile_commands.json, link.txt) against it.

    python3 tests/emu/mutant.py [--count N] [--build DIR] [--keep] [--timeout S] TEST FILE OLD NEW [-- HARNESS ARGS]
    e.g. python3 tests/emu/mutant.py rmsnorm_emu kernels/cuda/rmsnorm.cu 'rr * rr * rr' 'rr * rr'

Exit status: 0 when the mutant FAILS the test (caught), 1 when it passes (not caught), 2 on a
usage or build error (the harness's own usage error included). Options go before TEST:
everything after NEW goes to the harness.
"""
import argparse, json, os, shlex, shutil, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ap = argparse.ArgumentParser()
ap.add_argument("test"), ap.add_argument("file"), ap.add_argument("old"), ap.add_argument("new")
ap.add_argument("--count", type=int, default=1)
ap.add_argument("--build", default=os.path.join(ROOT, "build"))
ap.add_argument("--keep", action="store_true")
ap.add_argument("--timeout", type=int, default=120, help="seconds; a mutant running longer counts as caught")
ap.add_argument("rest", nargs=argparse.REMAINDER)
a = ap.parse_args()
harness_args = a.rest[1:] if a.rest[:1] == ["--"] else a.rest

tmp = tempfile.mkdtemp(prefix="emu-mutant-")
try:
    shutil.copytree(os.path.join(ROOT, "kernels", "cuda"), os.path.join(tmp, "kernels", "cuda"))
    path = os.path.join(tmp, a.file)
    text = open(path).read()
    old, new = a.old.encode().decode("unicode_escape"), a.new.encode().decode("unicode_escape")
    if text.count(old) != a.count:
        print(f"mutant: expected {a.count} x {old!r} in {a.file}, found {text.count(old)}"); sys.exit(2)
    open(path, "w").write(text.replace(old, new))
    gen = os.path.join(tmp, "gen")
    subprocess.run([sys.executable, os.path.join(ROOT, "tests", "emu", "extract.py"), tmp, gen], check=True,
                   stdout=subprocess.DEVNULL)
    src = os.path.join(ROOT, "tests", "emu", a.test + ".cpp")
    cc = [e for e in json.load(open(os.path.join(a.build, "compile_commands.json"))) if e["file"] == src]
    if not cc: print(f"mutant: {src} not in compile_commands.json (configure the build first)"); sys.exit(2)
    argv = shlex.split(cc[0]["command"])
    obj = os.path.join(tmp, a.test + ".o")
    argv[argv.index("-o") + 1] = obj
    argv = [("-I" + gen if x == "-I" + os.path.join(a.build, "emu_gen") else x) for x in argv]
    argv.insert(1, "-I" + tmp)  # the kernels' own includes (kernels/cuda/*.cuh) from the mutated copy
    b = subprocess.run(argv, cwd=cc[0]["directory"], capture_output=True, text=True)
    if b.returncode: print(b.stdout + b.stderr); sys.exit(2)
    link_dir = os.path.join(a.build, "tests")
    link = shlex.split(open(os.path.join(link_dir, "CMakeFiles", a.test + ".dir", "link.txt")).read())
    exe = os.path.join(tmp, a.test)
    link = [obj if x.endswith(a.test + ".cpp.o") else x for x in link]
    link[link.index("-o") + 1] = exe
    b = subprocess.run(link, cwd=link_dir, capture_output=True, text=True)
    if b.returncode: print(b.stdout + b.stderr); sys.exit(2)
    try:
        r = subprocess.run([exe] + harness_args, capture_output=True, text=True, timeout=a.timeout)
        out = r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        print(f"mutant {a.file}: {old!r} -> {new!r}\n  TIMEOUT after {a.timeout} s (ctest's limit fails it too)\n  CAUGHT")
        sys.exit(0)
    if r.returncode == 2 and "usage:" in out:  # the harness refused its arguments: nothing was tested
        print(f"mutant: harness usage error (options of mutant.py go before TEST):\n  {out.strip()}"); sys.exit(2)
    fails = [l for l in out.splitlines() if "| FAIL" in l]
    print(f"mutant {a.file}: {old!r} -> {new!r}")
    print(f"  exit {r.returncode}; {len(fails)} failing case line(s)")
    for l in fails[:6]: print("  " + l[:240])
    if r.returncode < 0 or (r.returncode != 0 and not fails): print("  (crashed)\n  " + "\n  ".join(out.splitlines()[-4:]))
    print("  CAUGHT" if r.returncode != 0 else "  NOT CAUGHT")
    sys.exit(0 if r.returncode != 0 else 1)
finally:
    if a.keep: print("kept " + tmp)
    else: shutil.rmtree(tmp, ignore_errors=True)
