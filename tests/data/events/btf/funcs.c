/* Kernel-like prototypes for the kprobe_events BTF tests; built by build.sh into funcs.btf
 * (gcc -gbtf, then the raw .BTF section).  Layouts are small stand-ins, not the kernel's. */
typedef unsigned long size_t;
typedef long ssize_t;
typedef long long loff_t;
typedef int pid_t;
typedef unsigned char u8;

struct qstr { unsigned int hash; unsigned int len; const unsigned char *name; };
struct dentry { unsigned int d_flags; unsigned int d_seq; void *d_hash[2]; struct dentry *d_parent;
                struct qstr d_name; };
struct path { void *mnt; struct dentry *dentry; };
struct file {
	union { void *f_llist; void *f_rcuhead; };   /* anonymous member */
	struct path f_path;
	unsigned int f_flags;
	unsigned int f_mode : 4, f_bits : 12;          /* bitfields */
	char f_name[16];
};
struct kernel_clone_args { unsigned long flags; int *pidfd; };

ssize_t vfs_read(struct file *file, char *buf, size_t count, loff_t *pos) { return count; }
void kfree(const void *object) { }
pid_t kernel_clone(struct kernel_clone_args *args) { return 0; }
void do_exit(long code) { for (;;); }
int nine_args(int a1, int a2, int a3, int a4, int a5, int a6, int a7, int a8, u8 a9) { return a9; }
void dput(struct dentry *dentry) { }
int takes_struct(struct path p, int after) { return after; }
