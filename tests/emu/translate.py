#!/usr/bin/env python3
"""Rewrites every kernels/cuda/*.cu into plain C++ for the emulated-device build
(tests/emudev.cmake): the whole file, host code included, with only three kinds of change -
  kernel<<<grid, block[, smem[, stream]]>>>(args);
      -> ::emu::device_launch("kernel", reinterpret_cast<const void*>(+kernel), grid, block, smem, stream,
                              +kernel, std::make_tuple(args));
  extern __shared__ [__align__(N)] T name[];  -> T* const name = reinterpret_cast<T*>(::emu::dyn_smem());
  __shared__ T name[dims];                    -> EMU_SHARED(T, name, [dims]);
Line numbers are kept (a `#line` directive names the original file), so compiler errors and
emulator reports point at the real source. The CUDA headers the files include resolve to
tests/emu/device/ (the emulated runtime, cuBLASLt and NVTX).

    python3 tests/emu/translate.py SOURCE_DIR OUT_DIR
"""
import glob, os, sys

from shared_decls import rewrite_extern, rewrite_static

if len(sys.argv) != 3:
    sys.exit("usage: translate.py SOURCE_DIR OUT_DIR")
SRC, OUT = os.path.abspath(sys.argv[1]), sys.argv[2]
os.makedirs(OUT, exist_ok=True)

OPEN, CLOSE = "([{", ")]}"


def closing(text, i):
    """Index of the bracket closing the one at text[i]."""
    depth = 0
    while i < len(text):
        depth += text[i] in OPEN
        depth -= text[i] in CLOSE
        if depth == 0:
            return i
        i += 1
    raise ValueError("unbalanced brackets")


def kernel_start(text, end):
    """Start of the kernel expression ending before text[end] (`ns::kernel<T, 4>`)."""
    i = end - 1
    while text[i].isspace():
        i -= 1
    while i >= 0:
        if text[i] == ">":
            depth, j = 0, i
            while True:  # the template argument list, backwards
                depth += text[j] == ">"
                depth -= text[j] == "<"
                if depth == 0:
                    break
                j -= 1
            i = j - 1
        elif text[i].isalnum() or text[i] in "_:":
            i -= 1
        else:
            break
    return i + 1


def split_top(text):
    parts, depth, cur = [], 0, ""
    for c in text:
        if c in OPEN:
            depth += 1
        elif c in CLOSE:
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    return parts


def rewrite_launches(text, name):
    out, pos, count = [], 0, 0
    while True:
        a = text.find("<<<", pos)
        if a < 0:
            break
        k0 = kernel_start(text, a)
        kernel = text[k0:a].strip()
        b = text.find(">>>", a)
        config = split_top(text[a + 3:b])
        if not 2 <= len(config) <= 4:
            sys.exit(f"translate: {name}: launch of {kernel} with {len(config)} configuration values")
        p = b + 3
        while text[p].isspace():
            p += 1
        if text[p] != "(":
            sys.exit(f"translate: {name}: launch of {kernel} without an argument list")
        q = closing(text, p)
        args = text[p + 1:q]
        smem = config[2] if len(config) > 2 else "0"
        stream = config[3] if len(config) > 3 else "nullptr"
        out.append(text[pos:k0])
        # The arguments are evaluated once, on the host, as CUDA does; every emulated thread
        # then calls the kernel with copies of them.
        # (`+kernel`: a pointer both for a kernel's name and for a variable holding one.)
        out.append(f'::emu::device_launch("{kernel}", reinterpret_cast<const void*>(+{kernel}), {config[0]},'
                   f'{config[1]}, {smem}, {stream}, +{kernel}, std::make_tuple({args}))')
        pos = q + 1
        count += 1
    out.append(text[pos:])
    return "".join(out), count


for path in sorted(glob.glob(os.path.join(SRC, "kernels/cuda/*.cu"))):
    name = os.path.basename(path)
    text = open(path).read()
    text, n_launch = rewrite_launches(text, name)
    text, n_extern = rewrite_extern(text)
    text, n_static = rewrite_static(text)
    left = [l for l in text.splitlines() if "__shared__" in l or "<<<" in l]
    if left:
        sys.exit(f"translate: {name}: not rewritten: {left}")
    dst = os.path.join(OUT, name[:-3] + ".cpp")
    new = f'#line 1 "{path}"\n' + text
    if not os.path.exists(dst) or open(dst).read() != new:  # unchanged files keep their timestamps
        open(dst, "w").write(new)
    print(f"translate: {name}: {n_launch} launches, {n_extern} extern and {n_static} static __shared__ rewritten")
