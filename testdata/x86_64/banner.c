/* init/version.c: the banner the version rules are read from. */
#ifndef UTS_RELEASE
#define UTS_RELEASE "6.1.0-kpatch-test"
#endif
const char linux_banner[] = "Linux version " UTS_RELEASE
	" (kpatch@testdata) (gcc (Debian 12.2.0-14) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40)"
	" #1 SMP PREEMPT_DYNAMIC Debian kpatch-test\n";
