/* C functions compiled like the kernel (-pg -mfentry -mnop-mcount -mrecord-mcount): each
 * starts with a `brcl 0,0` ftrace site recorded in __mcount_loc. */
long sink;

__attribute__((noinline)) long s390_c_func(long a, long b)
{
	sink = a;
	return a * 3 + b;
}

__attribute__((noinline)) long s390_c_loop(long n)
{
	long s = 0;
	for (long i = 0; i < n; i++)
		s += i ^ sink;
	return s + s390_c_func(n, s);
}
