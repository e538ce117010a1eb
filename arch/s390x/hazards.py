"""s390x probes the kernel accepts that killed it when armed (kpatch_core/hazard.py).

Every such probe the oracle found on s390x (Debian 6.1.0-50 and 7.2.13, QEMU TCG) is a branch: all
but one a branch to a register (``bcr M,%rN``: ``br %r14`` returns, ``br %r5`` after an ``lmg``
epilogue), the other a ``brasl`` call (7.2.13 ``tty_port_tty_wakeup+52``, a site only):
arch_prepare_kprobe accepts it and single-steps a copy, with PER (enable_singlestep);
resume_execution (arch/s390/kernel/kprobes.c) fixes it up as FIXUP_BRANCH_NOT_TAKEN.  Once hit,
execution went on at the next instruction instead of the branch target (6.1 ``exit_rcu+6``:
the oops is in ``rcu_cblist_init``, the function after it, entered with r2 = 0), and the guest
died.  Whether real hardware does the same was not tried: the evidence is QEMU's.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from kpatch_core.hazard import HazardPattern, HazardSite

if TYPE_CHECKING:
    from kpatch_core.image import Image

BCR = 0x07  # RR format: 07 M1 R2 (bcr 0,x and bcr M,%r0 never branch)

SITES = (
    HazardSite("release_thread", 6, ((6, 1),),
               "Debian 6.1.0-50 s390x under QEMU: `br %r14`, oops in release_task; "
               "tests/data/oracle/s390x"),
    HazardSite("exit_rcu", 6, ((6, 1),),
               "Debian 6.1.0-50 s390x under QEMU: `br %r14`, fell through into rcu_cblist_init "
               "(oops); tests/data/oracle/s390x"),
    HazardSite("pgprot_writecombine", 18, ((7, 2),),
               "Debian 7.2.13 s390x under QEMU: `br %r14`, fell through into "
               "ptep_reset_dat_prot (specification exception); tests/data/oracle/7.2.13+deb14-s390x"),
    HazardSite("d_lru_add", 232, ((7, 2),),
               "Debian 7.2.13 s390x under QEMU: `br %r5` after lmg, 'Invalid kernel stack "
               "pointer' panic; tests/data/oracle/7.2.13+deb14-s390x"),
    HazardSite("tty_port_tty_wakeup", 52, ((7, 2),),
               "Debian 7.2.13 s390x under QEMU: `brasl %r14,tty_port_tty_get` (a call, not of "
               "the bcr class), the guest hung; tests/data/oracle/7.2.13+deb14-s390x"),
    # the session before (not committed, seed 16): lsm_cred_alloc+84 `br %r4` and
    # destroy_inode+164 `br %r2` killed 7.2.13 too
    HazardSite("lsm_cred_alloc", 84, ((7, 2),),
               "Debian 7.2.13 s390x under QEMU: `br %r4` after lmg (issue 16's first 7.2 run)"),
    HazardSite("destroy_inode", 164, ((7, 2),),
               "Debian 7.2.13 s390x under QEMU: `br %r2` after lmg (issue 16's first 7.2 run)"),
)


def branch_to_register(image: "Image", addr: int) -> bool:
    """True when the instruction at ``addr`` is a ``bcr`` that can branch (mask and register
    not 0)."""
    b = image.read(addr, 2)
    return len(b) == 2 and b[0] == BCR and b[1] >> 4 != 0 and b[1] & 0xF != 0


PATTERNS = (
    HazardPattern(
        "branch to a register stepped out of line",
        branch_to_register,
        "resume_execution's FIXUP_BRANCH_NOT_TAKEN; the oracle's guests (QEMU TCG) went on at "
        "the next instruction when such a probe was hit, and died"),
)
