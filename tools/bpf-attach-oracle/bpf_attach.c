/*
 * bpf_attach: asks a running kernel whether BPF fentry/fexit programs, kprobe_multi links and
 * fprobe events attach to given functions.  Raw bpf(2) syscalls, no libbpf; built static so
 * it can be a guest's /init:  gcc -O2 -static -o bpf_attach bpf_attach.c
 *
 * Input (/probes.txt as /init, else the file named by argv[1]), one request a line:
 *   fentry|fexit|fmod_ret NAME               BPF_PROG_TYPE_TRACING, attach_btf_id of NAME's
 *                                            BTF FUNC in /sys/kernel/btf/vmlinux, then attach
 *   lsm HOOK                                 BPF_PROG_TYPE_LSM (BPF_LSM_MAC) on bpf_lsm_HOOK
 *   fentry.s|fexit.s|fmod_ret.s|lsm.s NAME   the same, sleepable (BPF_F_SLEEPABLE)
 *   kmulti A,B,... | kretmulti A,B,...       BPF_TRACE_KPROBE_MULTI link over the symbols
 *   fprobe NAME | fprobe_return NAME         'f:bpfor/eN NAME[%return]' >> dynamic_events
 *   kprobe NAME | kretprobe NAME             perf_event_open with the kprobe PMU, as BPF tools
 *                                            (bcc, bpftrace, libbpf) create their kprobes
 * Output, one line per request:
 *   @@BA <index> ok|<ERRNO> <stage> <message>
 * stage: btf (no BTF FUNC: what libbpf would refuse with -ESRCH), load (BPF_PROG_LOAD: the
 * verifier; message = last verifier log line), attach (raw_tracepoint_open / link_create),
 * write (dynamic_events), perf (perf_event_open).  Each program is detached and closed before the next request.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <linux/perf_event.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static char *btf;
static size_t btf_len;

static const char *errname(int e)
{
	switch (e) {
	case EINVAL: return "EINVAL"; case ENOENT: return "ENOENT"; case ESRCH: return "ESRCH";
	case EBUSY: return "EBUSY"; case E2BIG: return "E2BIG"; case EPERM: return "EPERM";
	case EACCES: return "EACCES"; case ENOMEM: return "ENOMEM"; case EOPNOTSUPP: return "EOPNOTSUPP";
	case 524: return "ENOTSUPP"; case EEXIST: return "EEXIST"; case EFAULT: return "EFAULT";
	case ENOSPC: return "ENOSPC"; case EILSEQ: return "EILSEQ"; case ENODEV: return "ENODEV";
	case EADDRNOTAVAIL: return "EADDRNOTAVAIL"; case ENOSYS: return "ENOSYS";
	default: { static char buf[16]; snprintf(buf, sizeof buf, "E%d", e); return buf; }
	}
}

static long bpf(int cmd, union bpf_attr *a)
{
	return syscall(__NR_bpf, cmd, a, sizeof(*a));
}

static int read_file(const char *path, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY);
	size_t cap = 1 << 20, n = 0;
	char *buf;
	if (fd < 0)
		return -1;
	buf = malloc(cap);
	for (;;) {
		ssize_t r;
		if (n == cap)
			buf = realloc(buf, cap *= 2);
		r = read(fd, buf + n, cap - n);
		if (r <= 0)
			break;
		n += r;
	}
	close(fd);
	*out = buf;
	*len = n;
	return 0;
}

/* The first BTF_KIND_FUNC called name (btf__find_by_name_kind), or 0. */
static uint32_t btf_func_id(const char *name)
{
	const struct { uint16_t magic; uint8_t version, flags; uint32_t hdr_len, type_off,
		type_len, str_off, str_len; } *h = (void *)btf;
	const char *types, *strs;
	uint32_t pos = 0, id = 1;
	if (!btf || btf_len < sizeof(*h) || h->magic != 0xeb9f)
		return 0;
	types = btf + h->hdr_len + h->type_off;
	strs = btf + h->hdr_len + h->str_off;
	while (pos + 12 <= h->type_len) {
		const uint32_t *t = (const uint32_t *)(types + pos);
		uint32_t kind = (t[1] >> 24) & 0x1f, vlen = t[1] & 0xffff, extra = 0;
		switch (kind) {
		case 1: case 8 + 6: case 17: extra = 4; break;          /* INT, VAR(14), DECL_TAG */
		case 3: extra = 12; break;                               /* ARRAY */
		case 4: case 5: case 15: case 19: extra = 12 * vlen; break; /* STRUCT UNION DATASEC ENUM64 */
		case 6: case 13: extra = 8 * vlen; break;                /* ENUM FUNC_PROTO */
		}
		if (kind == 12 && !strcmp(strs + t[0], name))
			return id;
		pos += 12 + extra;
		id++;
	}
	return 0;
}

static char logbuf[1 << 16];

/* The verifier's last line that is not its statistics ("processed N insns ..."). */
static const char *last_log_line(void)
{
	char *p;
	for (;;) {
		char *end = logbuf + strlen(logbuf);
		while (end > logbuf && (end[-1] == '\n' || end[-1] == ' '))
			*--end = 0;
		p = strrchr(logbuf, '\n');
		p = p ? p + 1 : logbuf;
		if (p == logbuf || (strncmp(p, "processed ", 10) && strncmp(p, "verification time", 17)))
			return p;
		p[-1] = 0;
	}
}

static int prog_load(int type, int attach_type, uint32_t btf_id, int flags)
{
	struct bpf_insn insns[2] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	union bpf_attr a;
	memset(&a, 0, sizeof(a));
	logbuf[0] = 0;
	a.prog_type = type;
	a.insn_cnt = 2;
	a.insns = (uintptr_t)insns;
	a.license = (uintptr_t)"GPL";
	a.log_level = 1;
	a.log_size = sizeof(logbuf);
	a.log_buf = (uintptr_t)logbuf;
	a.expected_attach_type = attach_type;
	a.attach_btf_id = btf_id;
	a.prog_flags = flags;
	return bpf(BPF_PROG_LOAD, &a);
}

static void report(int idx, int err, const char *stage, const char *msg)
{
	char clean[256];
	size_t i;
	snprintf(clean, sizeof clean, "%s", msg ? msg : "");
	for (i = 0; clean[i]; i++)
		if (clean[i] == '\n')
			clean[i] = ' ';
	printf("@@BA %d %s %s %s\n", idx, err ? errname(err) : "ok", stage, clean);
	fflush(stdout);
}

/* type BPF_PROG_TYPE_TRACING or BPF_PROG_TYPE_LSM (name is then the hook: bpf_lsm_<name>, as
 * libbpf's lsm/ sections find it); flags BPF_F_SLEEPABLE for the .s variants */
static void do_trampoline(int idx, const char *name, int type, int attach_type, int flags)
{
	char fn[300];
	uint32_t id;
	snprintf(fn, sizeof fn, "%s%s", type == BPF_PROG_TYPE_LSM ? "bpf_lsm_" : "", name);
	id = btf_func_id(fn);
	union bpf_attr a;
	int fd, link;
	if (!id) {
		report(idx, ESRCH, "btf", "no BTF FUNC");
		return;
	}
	fd = prog_load(type, attach_type, id, flags);
	if (fd < 0) {
		report(idx, errno, "load", last_log_line());
		return;
	}
	memset(&a, 0, sizeof(a));
	a.raw_tracepoint.prog_fd = fd;
	link = bpf(BPF_RAW_TRACEPOINT_OPEN, &a);
	if (link < 0)
		report(idx, errno, "attach", "");
	else
		report(idx, 0, "attach", "");
	if (link >= 0)
		close(link);
	close(fd);
}

static void do_kmulti(int idx, char *names, int ret)
{
	const char *syms[4096];
	union bpf_attr a;
	int n = 0, fd, link;
	char *s, *save;
	for (s = strtok_r(names, ",", &save); s && n < 4096; s = strtok_r(NULL, ",", &save))
		syms[n++] = s;
	fd = prog_load(BPF_PROG_TYPE_KPROBE, BPF_TRACE_KPROBE_MULTI, 0, 0);
	if (fd < 0) {
		report(idx, errno, "load", last_log_line());
		return;
	}
	memset(&a, 0, sizeof(a));
	a.link_create.prog_fd = fd;
	a.link_create.attach_type = BPF_TRACE_KPROBE_MULTI;
	a.link_create.kprobe_multi.flags = ret ? BPF_F_KPROBE_MULTI_RETURN : 0;
	a.link_create.kprobe_multi.cnt = n;
	a.link_create.kprobe_multi.syms = (uintptr_t)syms;
	link = bpf(BPF_LINK_CREATE, &a);
	report(idx, link < 0 ? errno : 0, "attach", "");
	if (link >= 0)
		close(link);
	close(fd);
}

static void do_fprobe(int idx, const char *name, int ret)
{
	char line[512], del[64];
	int fd = open("/sys/kernel/tracing/dynamic_events", O_WRONLY | O_APPEND), err = 0;
	if (fd < 0) {
		report(idx, errno, "open", "dynamic_events");
		return;
	}
	snprintf(line, sizeof line, "f:bpfor/e%d %s%s\n", idx, name, ret ? "%return" : "");
	if (write(fd, line, strlen(line)) < 0)
		err = errno;
	report(idx, err, "write", "");
	if (!err) {
		snprintf(del, sizeof del, "-:bpfor/e%d\n", idx);
		if (write(fd, del, strlen(del)) < 0)
			report(idx, errno, "delete", "");
	}
	close(fd);
}

static int read_int(const char *path, const char *prefix)
{
	char buf[64] = "";
	int fd = open(path, O_RDONLY), v = -1;
	if (fd >= 0) {
		if (read(fd, buf, sizeof buf - 1) > 0 && !strncmp(buf, prefix, strlen(prefix)))
			v = atoi(buf + strlen(prefix));
		close(fd);
	}
	return v;
}

/* create_local_trace_kprobe: the kprobe PMU's config1 is the name, config2 the offset */
static void do_perf_kprobe(int idx, const char *name, int ret)
{
	struct perf_event_attr a;
	int type = read_int("/sys/bus/event_source/devices/kprobe/type", "");
	int bit = read_int("/sys/bus/event_source/devices/kprobe/format/retprobe", "config:");
	char sym[256], *plus;
	unsigned long off = 0;
	int fd;
	snprintf(sym, sizeof sym, "%s", name);
	plus = strchr(sym, '+');
	if (plus) {
		*plus = 0;
		off = strtoul(plus + 1, NULL, 0);
	}
	memset(&a, 0, sizeof(a));
	a.size = sizeof(a);
	a.type = type;
	a.config = ret && bit >= 0 ? 1ULL << bit : 0;
	a.config1 = (uintptr_t)sym;
	a.config2 = off;
	fd = syscall(__NR_perf_event_open, &a, -1, 0, -1, 0);
	report(idx, fd < 0 ? errno : 0, "perf", "");
	if (fd >= 0)
		close(fd);
}

int main(int argc, char **argv)
{
	int idx = 0, init = getpid() == 1;
	/* as /init, argv holds the kernel command line's leftovers (nokaslr ...) */
	const char *path = argc > 1 && !init ? argv[1] : "/probes.txt";
	char *req, *line, *save;
	size_t len;
	int sleepable;
	if (init) {
		int con;
		mount("devtmpfs", "/dev", "devtmpfs", 0, NULL);
		con = open("/dev/console", O_RDWR);
		if (con >= 0) {
			dup2(con, 1);
			dup2(con, 2);
		}
		mount("proc", "/proc", "proc", 0, NULL);
		mount("sysfs", "/sys", "sysfs", 0, NULL);
		mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, NULL);
		mount("debugfs", "/sys/kernel/debug", "debugfs", 0, NULL);
	}
	if (read_file("/sys/kernel/btf/vmlinux", &btf, &btf_len))
		printf("@@BA-NOTE no /sys/kernel/btf/vmlinux (%s)\n", strerror(errno));
	if (read_file(path, &req, &len)) {
		printf("@@BA-NOTE cannot read %s (%s)\n", path, strerror(errno));
		len = 0;
		req = calloc(1, 1);
	}
	req = realloc(req, len + 1);
	req[len] = 0;
	printf("@@BA-BEGIN\n");
	for (line = strtok_r(req, "\n", &save); line; line = strtok_r(NULL, "\n", &save), idx++) {
		char *arg = strchr(line, ' ');
		if (!arg) {
			report(idx, EINVAL, "input", line);
			continue;
		}
		*arg++ = 0;
		len = strlen(line);
		sleepable = len > 2 && !strcmp(line + len - 2, ".s") ? BPF_F_SLEEPABLE : 0;
		if (sleepable)
			line[len - 2] = 0;
		if (!strcmp(line, "fentry"))
			do_trampoline(idx, arg, BPF_PROG_TYPE_TRACING, BPF_TRACE_FENTRY, sleepable);
		else if (!strcmp(line, "fexit"))
			do_trampoline(idx, arg, BPF_PROG_TYPE_TRACING, BPF_TRACE_FEXIT, sleepable);
		else if (!strcmp(line, "fmod_ret"))
			do_trampoline(idx, arg, BPF_PROG_TYPE_TRACING, BPF_MODIFY_RETURN, sleepable);
		else if (!strcmp(line, "lsm"))
			do_trampoline(idx, arg, BPF_PROG_TYPE_LSM, BPF_LSM_MAC, sleepable);
		else if (sleepable)
			report(idx, EINVAL, "input", line);
		else if (!strcmp(line, "kmulti") || !strcmp(line, "kretmulti"))
			do_kmulti(idx, arg, line[1] == 'r');
		else if (!strcmp(line, "kprobe") || !strcmp(line, "kretprobe"))
			do_perf_kprobe(idx, arg, line[1] == 'r');
		else if (!strcmp(line, "fprobe") || !strcmp(line, "fprobe_return"))
			do_fprobe(idx, arg, line[6] == '_');
		else
			report(idx, EINVAL, "input", line);
	}
	printf("@@BA-END %d\n", idx);
	fflush(stdout);
	if (init) {
		sync();
		reboot(RB_POWER_OFF);
	}
	return 0;
}
