//! seccomp_deny: runs a command under a seccomp filter that makes some system calls fail, as a
//! container runtime's profile may (a profile older than a call refuses it, with EPERM in older
//! runtimes and ENOSYS in newer ones). Tests run the daemon through it to see that it falls back
//! instead of failing.
//!
//!     seccomp_deny [--errno EPERM|ENOSYS|N] SYSCALL[,SYSCALL...] -- CMD [ARGS...]
//!
//! The named calls fail with EPERM (the default) or the given errno; every other call is allowed.
//! no_new_privs is set (the kernel requires it of an unprivileged filter, and it keeps the filter
//! honest: a set-uid program started under it cannot shed it). The filter is inherited across
//! fork and exec, so the command and everything it starts run under it.
//!
//!     seccomp_deny --try SYSCALL[,SYSCALL...]
//!
//! makes each named call with harmless arguments and prints "NAME ok" or "NAME ERRNONAME", one a
//! line: run under the launcher, it shows that the filter is in effect without depending on
//! any other program. Known to --try: pidfd_open, pidfd_send_signal, kill, tgkill.

#define _GNU_SOURCE

#include <errno.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

static void usage(void)
{
	fprintf(stderr, "usage: seccomp_deny [--errno EPERM|ENOSYS|N] SYSCALL[,SYSCALL...] -- CMD "
			"[ARGS...]\n       seccomp_deny --try SYSCALL[,SYSCALL...]\n");
	exit(2);
}

static int parse_errno(const char *s)
{
	if (strcmp(s, "EPERM") == 0)
		return EPERM;
	if (strcmp(s, "ENOSYS") == 0)
		return ENOSYS;
	if (strcmp(s, "EACCES") == 0)
		return EACCES;
	char *end;
	long n = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || n <= 0 || n > 4095) {
		fprintf(stderr, "seccomp_deny: bad errno %s\n", s);
		exit(2);
	}
	return (int)n;
}

static const char *errno_name(int e)
{
	switch (e) {
	case EPERM:
		return "EPERM";
	case ENOSYS:
		return "ENOSYS";
	case EACCES:
		return "EACCES";
	case EBADF:
		return "EBADF";
	case EINVAL:
		return "EINVAL";
	case ESRCH:
		return "ESRCH";
	default:
		return "other";
	}
}

// Raw syscall numbers (glibc 2.36 has no wrappers for the pidfd calls); the arguments are chosen
// so that an allowed call succeeds or fails harmlessly (signal 0, an invalid descriptor).
static int try_calls(char *list)
{
	char *save = NULL;
	for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
		long r;
		if (strcmp(name, "pidfd_open") == 0) {
			r = syscall(SYS_pidfd_open, getpid(), 0);
			if (r >= 0)
				close((int)r);
		} else if (strcmp(name, "pidfd_send_signal") == 0) {
			// An allowed call fails with EBADF on descriptor -1.
			r = syscall(SYS_pidfd_send_signal, -1, 0, NULL, 0);
		} else if (strcmp(name, "kill") == 0) {
			r = syscall(SYS_kill, getpid(), 0);
		} else if (strcmp(name, "tgkill") == 0) {
			r = syscall(SYS_tgkill, getpid(), gettid(), 0);
		} else {
			fprintf(stderr, "seccomp_deny: --try does not know %s\n", name);
			return 2;
		}
		if (r >= 0)
			printf("%s ok\n", name);
		else
			printf("%s %s\n", name, errno_name(errno));
	}
	return 0;
}

int main(int argc, char *argv[])
{
	int err = EPERM;
	int i = 1;
	if (i < argc && strcmp(argv[i], "--try") == 0) {
		if (i + 1 >= argc)
			usage();
		return try_calls(argv[i + 1]);
	}
	if (i + 1 < argc && strcmp(argv[i], "--errno") == 0) {
		err = parse_errno(argv[i + 1]);
		i += 2;
	}
	if (i + 2 >= argc || strcmp(argv[i + 1], "--") != 0)
		usage();
	char *list = argv[i];
	char **cmd = &argv[i + 2];

	// The native architecture only; a call through another ABI (int 0x80, x32) kills the
	// process (libseccomp's default for a foreign architecture), so the filter cannot be
	// sidestepped unnoticed.
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
	if (ctx == NULL) {
		fprintf(stderr, "seccomp_deny: seccomp_init failed\n");
		return 1;
	}
	char *save = NULL;
	for (char *name = strtok_r(list, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
		int nr = seccomp_syscall_resolve_name(name);
		if (nr == __NR_SCMP_ERROR) {
			fprintf(stderr, "seccomp_deny: unknown system call %s\n", name);
			return 2;
		}
		int r = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(err), nr, 0);
		if (r != 0) {
			fprintf(stderr, "seccomp_deny: rule for %s: %s\n", name, strerror(-r));
			return 1;
		}
	}
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		perror("seccomp_deny: no_new_privs");
		return 1;
	}
	int r = seccomp_load(ctx);
	if (r != 0) {
		fprintf(stderr, "seccomp_deny: seccomp_load: %s\n", strerror(-r));
		return 1;
	}
	seccomp_release(ctx);

	execvp(cmd[0], cmd);
	fprintf(stderr, "seccomp_deny: %s: %s\n", cmd[0], strerror(errno));
	return 127;
}
