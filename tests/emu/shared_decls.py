"""Shared-memory declarations of CUDA source as the emulator takes them (emu_cuda.h), for
extract.py (kernel sections) and translate.py (whole files):
  __shared__ T name[dims];  [// comment]  <->  EMU_SHARED(T, name, [dims]);  [// comment]
  extern __shared__ [__align__(N)] T name[];  ->  T* const name = reinterpret_cast<T*>(::emu::dyn_smem());
"""
import re

STATIC_SH = re.compile(r"^([ \t]*)__shared__ ([^;\n]+?) (\w+)((?:\[[^\]\n]+\])*);([ \t]+//[^\n]*)?$", re.M)
EMU_SH = re.compile(r"^([ \t]*)EMU_SHARED\(([^;\n]+?), (\w+), ((?:\[[^\]\n]+\])*)\);([ \t]+//[^\n]*)?$", re.M)
EXTERN_SH = re.compile(r"^([ \t]*)extern __shared__ (?:__align__\(\d+\) )?([\w: ]+?) (\w+)\[\];", re.M)


def rewrite_static(text):
    """(text with every static declaration as EMU_SHARED, how many)"""
    return STATIC_SH.subn(r"\1EMU_SHARED(\2, \3, \4);\5", text)


def restore_static(text):
    return EMU_SH.sub(r"\1__shared__ \2 \3\4;\5", text)


def rewrite_extern(text):
    """(text with every extern declaration as a pointer to the block's dynamic shared memory, how many)"""
    return EXTERN_SH.subn(r"\1\2* const \3 = reinterpret_cast<\2*>(::emu::dyn_smem());", text)
