#!/usr/bin/env python3
"""Regenerate the test modules in this directory from kpt_test.c (gcc, the kernel's x86_64 code
generation flags; no kernel tree needed):

  kpt_test.ko        the module (vermagic 6.1.0-kpatch-test, as testdata/x86_64/vmlinux)
  kpt_test_arm64.ko  the arm64 build (aarch64-linux-gnu-gcc; for testdata/arm64/vmlinux-6.12)
  kpt_test_riscv64.ko  the riscv64 build (riscv64-linux-gnu-gcc, medany, no relaxation, the
                     6.12 patchable entry; for testdata/riscv64/vmlinux-6.12)
  kpt_relocs_riscv64.ko  kpt_relocs_riscv64.S assembled: the riscv64 relocation types the C
                     module has none of (JAL, BRANCH, RVC, HI20/LO12, 32_PCREL, SET*, SUB6)
  kpt_test.ko.xz     the same, xz (as Debian ships modules)
  kpt_test.ko.zst    the same, zstd
  kpt_other.ko       vermagic 6.12.0-kpatch-test (a mismatched build)
  truncated.ko.xz    the xz file cut in half (a corrupt download)
  truncated.ko       the ELF cut before its section headers

Usage: python3 testdata/modules/make_modules.py   (writes next to this script)
"""
from __future__ import annotations

import lzma
import os
import subprocess
import tempfile

import zstandard

HERE = os.path.dirname(os.path.abspath(__file__))
CFLAGS = ("-O2 -g0 -ffreestanding -fno-pic -fno-pie -mcmodel=kernel -mno-red-zone -mno-sse "
          "-mno-mmx -fno-stack-protector -fno-asynchronous-unwind-tables -fno-unwind-tables "
          "-fcf-protection=branch -pg -mfentry -mrecord-mcount -fno-common "
          "-fno-strict-aliasing -Wall -Werror").split()


# arm64: the kernel's code model and ftrace call sites (two NOPs, __patchable_function_entries)
ARM64_CFLAGS = ("-O2 -g0 -ffreestanding -fno-pic -fno-pie -mgeneral-regs-only "
                "-fno-stack-protector -fno-asynchronous-unwind-tables -fno-unwind-tables "
                "-fpatchable-function-entry=2 -fno-common -fno-strict-aliasing -Wall -Werror").split()


# riscv64: arch/riscv/Makefile of 6.12 (medany, -mno-relax for modules, with RVC
# -fpatchable-function-entry=4: four c.nop at the function, MCOUNT_INSN_SIZE 8)
RISCV64_CFLAGS = ("-O2 -g0 -ffreestanding -fno-pic -fno-pie -mcmodel=medany -mno-relax "
                  "-march=rv64imac_zicsr_zifencei -mabi=lp64 -fno-stack-protector "
                  "-fno-asynchronous-unwind-tables -fno-unwind-tables "
                  "-fpatchable-function-entry=4 -fno-common -fno-strict-aliasing -Wall "
                  "-Werror").split()


def build(out: str, release: str, cross: str = "", flags: list[str] = CFLAGS,
          kfunc: str = "plain_func") -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        obj = os.path.join(tmp, "kpt_test.o")
        subprocess.run([f"{cross}gcc", *flags, f'-DUTS_RELEASE="{release}"', f"-DKFUNC={kfunc}",
                        "-c", os.path.join(HERE, "kpt_test.c"), "-o", obj], check=True)
        # a module is one relocatable object (modpost + ld -r in a kernel build)
        subprocess.run([f"{cross}ld", "-r", "--build-id=sha1", "-o", out, obj], check=True)
    with open(out, "rb") as f:
        return f.read()


def main() -> None:
    ko = build(os.path.join(HERE, "kpt_test.ko"), "6.1.0-kpatch-test")
    build(os.path.join(HERE, "kpt_other.ko"), "6.12.0-kpatch-test")
    build(os.path.join(HERE, "kpt_test_arm64.ko"), "6.12.0", "aarch64-linux-gnu-", ARM64_CFLAGS,
          "a_hyp")
    build(os.path.join(HERE, "kpt_test_riscv64.ko"), "6.12.0", "riscv64-linux-gnu-",
          RISCV64_CFLAGS, "a_notrace")
    with tempfile.TemporaryDirectory() as tmp:
        obj = os.path.join(tmp, "kpt_relocs.o")
        subprocess.run(["riscv64-linux-gnu-as", "-march=rv64imac_zicsr_zifencei", "-mabi=lp64",
                        "-o", obj, os.path.join(HERE, "kpt_relocs_riscv64.S")], check=True)
        subprocess.run(["riscv64-linux-gnu-ld", "-r", "--build-id=sha1", "-o",
                        os.path.join(HERE, "kpt_relocs_riscv64.ko"), obj], check=True)
    xz = lzma.compress(ko, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32)
    with open(os.path.join(HERE, "kpt_test.ko.xz"), "wb") as f:
        f.write(xz)
    with open(os.path.join(HERE, "kpt_test.ko.zst"), "wb") as f:
        f.write(zstandard.ZstdCompressor(level=19).compress(ko))
    with open(os.path.join(HERE, "truncated.ko.xz"), "wb") as f:
        f.write(xz[: len(xz) // 2])
    with open(os.path.join(HERE, "truncated.ko"), "wb") as f:
        f.write(ko[: len(ko) - 200])


if __name__ == "__main__":
    main()
