//! stallfs: a read-only FUSE passthrough of a backing directory whose operations can be made to
//! hang, as on a storage backend that stops answering (a stuck NFS server, a CSI driver's FUSE
//! daemon that deadlocked). Tests use it to see what the daemon does when a read of a watched
//! file never returns, while the test itself keeps full control of the backing directory.
//!
//!     stallfs BACKING CONTROL MOUNTPOINT [fuse options]
//!
//! Control, from outside the mount (the test must never need the mount to steer it): the file
//! CONTROL/stall, when present, holds the lines
//!
//!     ops=read,open          operations to hold (getattr, readlink, opendir, readdir, open,
//!                            read, flush, release, statfs; getattr is also every lookup)
//!     match=token            hold only those whose path in the mount contains this (optional)
//!
//! An operation that matches waits, re-reading the file every 10 ms, until it no longer matches
//! (the file removed or changed), then completes normally. Replace the file atomically (rename)
//! so a half-written one is never seen. The server lists the operations it is holding in
//! CONTROL/stalled, one "op path" a line, rewritten atomically at every change, so a test can
//! wait until the daemon is really stuck rather than sleep.
//!
//! Caching is kept minimal so that every access of a reader reaches this server: zero entry,
//! attribute and negative timeouts, direct I/O (no page cache, every read(2) is a READ). A held
//! operation ignores FUSE interrupts, like hung storage: the reader stays in the kernel until it
//! is released or the connection is aborted (the server killed).
//!
//! The server is multithreaded (up to 100 workers), so a held operation ties up one worker and
//! the rest of the mount keeps answering, with one exception: libfuse before 3.17 (Debian 12 has
//! 3.14) never tells the kernel it takes parallel directory operations, so the kernel sends one
//! LOOKUP or READDIR at a time per directory. A held lookup (getattr) or listing (readdir) of a
//! directory's entry therefore also holds every lookup of a name not yet in the kernel's cache
//! and every listing of that directory; read, open, readlink, flush and release hold only
//! themselves.
//!
//! Mounted ro, allow_other (the tests run daemons under other uids) and default_permissions (the
//! kernel checks the backing files' modes, as it would on the real volume).
//!
//! It ends by itself when its parent (the test process) ends, unmounting first: a test process
//! killed while one of its threads is stuck in the mount cannot finish dying until the
//! connection ends, so nothing else would end it.

// 3.12 for fuse_loop_cfg_set_max_threads (Debian 12 has 3.14).
#define FUSE_USE_VERSION 312
#define _GNU_SOURCE

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

static int backing_fd = -1;
static char control_file[PATH_MAX];
static char stalled_file[PATH_MAX];
static char stalled_tmp[PATH_MAX];

// What the server holds now, for CONTROL/stalled.
#define SLOTS 256
static struct {
	const char *op;
	char path[PATH_MAX];
	int used;
} slots[SLOTS];
static pthread_mutex_t slots_lock = PTHREAD_MUTEX_INITIALIZER;

// Paths in the mount are absolute ("/", "/..data/token"); the backing directory is reached
// through its descriptor, so a path is used relative to it.
static const char *rel(const char *path)
{
	if (path == NULL || path[0] == '\0' || (path[0] == '/' && path[1] == '\0'))
		return ".";
	return path[0] == '/' ? path + 1 : path;
}

// Whether CONTROL/stall asks to hold `op` on `path`. Read afresh every time: it is a few bytes
// on a local file system, and a stale cached copy is the one thing a control must not have.
static int wanted(const char *op, const char *path)
{
	char buf[PATH_MAX + 512];
	int fd = open(control_file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';

	int op_listed = 0;
	const char *match = NULL;
	char *save = NULL;
	for (char *line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		if (strncmp(line, "ops=", 4) == 0) {
			char *s2 = NULL;
			for (char *o = strtok_r(line + 4, ",", &s2); o; o = strtok_r(NULL, ",", &s2))
				if (strcmp(o, op) == 0)
					op_listed = 1;
		} else if (strncmp(line, "match=", 6) == 0) {
			match = line + 6;
		}
	}
	if (!op_listed)
		return 0;
	return match == NULL || *match == '\0' || strstr(path ? path : "", match) != NULL;
}

// Called with slots_lock held. Write then rename: a reader sees the old list or the new one.
static void publish(void)
{
	FILE *f = fopen(stalled_tmp, "we");
	if (f == NULL)
		return;
	for (int i = 0; i < SLOTS; i++)
		if (slots[i].used)
			fprintf(f, "%s %s\n", slots[i].op, slots[i].path);
	if (fclose(f) == 0)
		rename(stalled_tmp, stalled_file);
}

static void hold(const char *op, const char *path)
{
	if (!wanted(op, path))
		return;
	int slot = -1;
	pthread_mutex_lock(&slots_lock);
	for (int i = 0; i < SLOTS; i++) {
		if (!slots[i].used) {
			slot = i;
			slots[i].used = 1;
			slots[i].op = op;
			snprintf(slots[i].path, sizeof slots[i].path, "%s", path ? path : "");
			publish();
			break;
		}
	}
	pthread_mutex_unlock(&slots_lock);

	const struct timespec tick = {0, 10 * 1000 * 1000};
	while (wanted(op, path))
		nanosleep(&tick, NULL);

	if (slot >= 0) {
		pthread_mutex_lock(&slots_lock);
		slots[slot].used = 0;
		publish();
		pthread_mutex_unlock(&slots_lock);
	}
}

// The parent's end: gone, or a zombie leader (the process is exiting; threads of it stuck in
// this mount keep it from being reaped).
static void *watchdog(void *mountpoint)
{
	pid_t parent = getppid();
	char stat_path[64];
	snprintf(stat_path, sizeof stat_path, "/proc/%d/stat", (int)parent);
	const struct timespec tick = {0, 100 * 1000 * 1000};
	for (;;) {
		nanosleep(&tick, NULL);
		char buf[512];
		int fd = open(stat_path, O_RDONLY | O_CLOEXEC);
		ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
		if (fd >= 0)
			close(fd);
		char state = '?';
		if (n > 0) {
			buf[n] = '\0';
			char *paren = strrchr(buf, ')');
			if (paren && paren[1] == ' ')
				state = paren[2];
		}
		if (getppid() != parent || n <= 0 || state == 'Z' || state == 'X') {
			umount2((const char *)mountpoint, MNT_DETACH);
			// Closing /dev/fuse at exit aborts the connection: every stuck request fails.
			_exit(3);
		}
	}
	return NULL;
}

static void *sfs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	(void)conn;
	cfg->use_ino = 1;
	cfg->readdir_ino = 1;
	cfg->entry_timeout = 0;
	cfg->attr_timeout = 0;
	cfg->negative_timeout = 0;
	cfg->direct_io = 1;
	cfg->kernel_cache = 0;
	cfg->auto_cache = 0;
	// Nothing is ever unlinked through the mount; no .fuse_hidden files.
	cfg->hard_remove = 1;
	return NULL;
}

static int sfs_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	hold("getattr", path);
	int r = fi ? fstat((int)fi->fh, st) : fstatat(backing_fd, rel(path), st, AT_SYMLINK_NOFOLLOW);
	return r < 0 ? -errno : 0;
}

static int sfs_readlink(const char *path, char *buf, size_t size)
{
	hold("readlink", path);
	if (size == 0)
		return -EINVAL;
	ssize_t n = readlinkat(backing_fd, rel(path), buf, size - 1);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	return 0;
}

static int sfs_opendir(const char *path, struct fuse_file_info *fi)
{
	hold("opendir", path);
	int fd = openat(backing_fd, rel(path), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (d == NULL) {
		int e = errno;
		close(fd);
		return -e;
	}
	fi->fh = (uint64_t)(uintptr_t)d;
	return 0;
}

// The whole listing at once (offset 0 to the filler): libfuse buffers it and serves the
// kernel's later calls from that buffer, so no directory offsets to keep.
static int sfs_readdir(const char *path, void *buf, fuse_fill_dir_t filler, off_t off,
		       struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	(void)off;
	(void)flags;
	hold("readdir", path);
	DIR *d = (DIR *)(uintptr_t)fi->fh;
	rewinddir(d);
	errno = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		struct stat st;
		memset(&st, 0, sizeof st);
		st.st_ino = e->d_ino;
		st.st_mode = (mode_t)DTTOIF(e->d_type);
		if (filler(buf, e->d_name, &st, 0, 0))
			break;
	}
	return errno ? -errno : 0;
}

static int sfs_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	closedir((DIR *)(uintptr_t)fi->fh);
	return 0;
}

static int sfs_open(const char *path, struct fuse_file_info *fi)
{
	hold("open", path);
	if ((fi->flags & O_ACCMODE) != O_RDONLY)
		return -EROFS;
	int fd = openat(backing_fd, rel(path), O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	fi->fh = (uint64_t)fd;
	fi->direct_io = 1;
	fi->keep_cache = 0;
	return 0;
}

static int sfs_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	hold("read", path);
	ssize_t n = pread((int)fi->fh, buf, size, off);
	return n < 0 ? -errno : (int)n;
}

// Implemented (rather than left to ENOSYS, after which the kernel stops sending FLUSH) so that
// every close(2) of a reader reaches the server and can be held.
static int sfs_flush(const char *path, struct fuse_file_info *fi)
{
	(void)fi;
	hold("flush", path);
	return 0;
}

static int sfs_release(const char *path, struct fuse_file_info *fi)
{
	hold("release", path);
	close((int)fi->fh);
	return 0;
}

static int sfs_statfs(const char *path, struct statvfs *st)
{
	hold("statfs", path);
	return fstatvfs(backing_fd, st) < 0 ? -errno : 0;
}

static const struct fuse_operations ops = {
	.init = sfs_init,
	.getattr = sfs_getattr,
	.readlink = sfs_readlink,
	.opendir = sfs_opendir,
	.readdir = sfs_readdir,
	.releasedir = sfs_releasedir,
	.open = sfs_open,
	.read = sfs_read,
	.flush = sfs_flush,
	.release = sfs_release,
	.statfs = sfs_statfs,
};

int main(int argc, char *argv[])
{
	if (argc < 4) {
		fprintf(stderr, "usage: %s BACKING CONTROL MOUNTPOINT [fuse options]\n", argv[0]);
		return 2;
	}
	backing_fd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (backing_fd < 0) {
		perror(argv[1]);
		return 1;
	}
	snprintf(control_file, sizeof control_file, "%s/stall", argv[2]);
	snprintf(stalled_file, sizeof stalled_file, "%s/stalled", argv[2]);
	snprintf(stalled_tmp, sizeof stalled_tmp, "%s/.stalled.tmp", argv[2]);

	// Our mount options first, then the caller's.
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	fuse_opt_add_arg(&args, argv[0]);
	fuse_opt_add_arg(&args, "-o");
	fuse_opt_add_arg(&args, "ro,allow_other,default_permissions,fsname=stallfs,subtype=stallfs");
	for (int i = 4; i < argc; i++)
		fuse_opt_add_arg(&args, argv[i]);

	struct fuse *f = fuse_new(&args, &ops, sizeof ops, NULL);
	if (f == NULL)
		return 1;
	if (fuse_mount(f, argv[3]) != 0)
		return 1;
	// SIGTERM and SIGINT end the loop and unmount (SIGKILL leaves the unmount to the test).
	if (fuse_set_signal_handlers(fuse_get_session(f)) != 0)
		return 1;

	pthread_t dog;
	if (pthread_create(&dog, NULL, watchdog, argv[3]) != 0)
		return 1;

	// fuse_main's loop stops adding workers at 10: ten held operations would then hang every
	// other request too. Each held operation ties up one worker; allow plenty.
	struct fuse_loop_config *loop = fuse_loop_cfg_create();
	fuse_loop_cfg_set_max_threads(loop, 100);
	int r = fuse_loop_mt(f, loop);
	fuse_loop_cfg_destroy(loop);

	fuse_remove_signal_handlers(fuse_get_session(f));
	fuse_unmount(f);
	fuse_destroy(f);
	fuse_opt_free_args(&args);
	return r == 0 ? 0 : 1;
}
