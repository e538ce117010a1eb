"""Architecture backends for kpatch-core (installed as ``kpatch_arch``)."""
