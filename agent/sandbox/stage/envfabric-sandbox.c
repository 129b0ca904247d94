// envfabric-sandbox: the stage program of the run sandbox (docs/sandbox.md, "How a run is started").
//
// The agent starts it as "envfabric-sandbox-ready ANNOUNCE N DIR... HOME..." with a socket on fd 3 (see
// run_ready): it joins the run's cgroup directories, if any, and waits for its run, ahead of it
// when the agent keeps it in its pool. The run arrives as descriptors, which become:
//   fd 0-2  the program's stdin, stdout and stderr;
//   fd 3    the status pipe: one line "error <message>" for a failure before the program ran,
//           and (init stage) "exit <code>" or "signal <number>" for the program's end;
//   fd 4    the plan (a memfd written by agent/sandbox/plan.go; the format is described there);
//   fd 5    with the user-mode network only: one byte when the network is ready, EOF if it failed.
//
// With a PID namespace the stage makes the tier's namespaces (unshare) and forks the init stage,
// pid 1 of the new PID namespace, which dies with it: the init stage builds the mount view and
// the network, forks the exec stage, reaps every orphan and exits when the program does, which
// makes the kernel kill whatever is left in the namespace. Without one the stage is the exec
// stage itself. The exec stage sets the rlimits, joins a fresh session keyring, drops to the run
// user, seals the user keyrings, installs the system-call filter (assembled by the agent) and
// execve()s the program.
//
// It is C, and one process image, because the stages used to be two re-executions of the 17 MB
// Go agent: their runtime and package start-up, twice, were most of the sandbox's cost. It links
// nothing but the C library (statically where available) and allocates nothing after the
// address-space limit.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

enum { STATUS_FD = 3, PLAN_FD = 4, GO_FD = 5, EXIT_SETUP = 125 };

// Plan records: a tag byte, a little-endian 32-bit length, the value. Must match plan.go.
enum {
	T_HEAD = 1, T_PATH, T_ARG, T_ENV, T_DIR, T_HIDE, T_RO, T_RW, T_DENY, T_FILTER,
};
enum {
	F_NAMESPACE = 1 << 0, F_PIDNS = 1 << 1, F_DROP = 1 << 2, F_SLIRP = 1 << 3, F_FILTER = 1 << 4,
	F_USERNS = 1 << 5, // the PID namespace of an unprivileged agent needs a user namespace
	F_FALLBACKS = 1 << 6, // tests: take the ways of kernels without close_range and mount_setattr
};

// head is T_HEAD's value: nine little-endian 64-bit numbers.
struct head {
	uint64_t flags, uid, gid, cpu, as, fsize, nofile, nproc, tmpfs_size;
};

struct list {
	char **v;
	size_t n;
};

struct deny {
	uint32_t addr; // network byte order
	uint8_t ones;
};

static struct head h;
static char *path, *dir;
static struct list args, env, hide, ro, rw;
static struct deny *denies;
static size_t ndeny;
static struct sock_filter *filter;
static size_t nfilter;

static int fail(const char *fmt, ...) {
	char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof buf - 2)
		n = sizeof buf - 2;
	dprintf(STATUS_FD, "error %.*s\n", n, buf);
	return EXIT_SETUP;
}

// errstr is strerror in the words the Go side used (lower case, as Go's errno strings).
static const char *errstr(int e) {
	static char buf[128];
	snprintf(buf, sizeof buf, "%s", strerror(e));
	if (buf[0] >= 'A' && buf[0] <= 'Z' && !(buf[1] >= 'A' && buf[1] <= 'Z'))
		buf[0] = (char)(buf[0] - 'A' + 'a');
	return buf;
}

static void push(struct list *l, const char *s, size_t n) {
	l->v = realloc(l->v, (l->n + 2) * sizeof *l->v);
	l->v[l->n] = strndup(s, n);
	l->v[++l->n] = NULL;
}

static int read_plan(void) {
	struct stat st;
	if (fstat(PLAN_FD, &st) != 0)
		return fail("read plan: %s", errstr(errno));
	size_t size = (size_t)st.st_size;
	unsigned char *b = malloc(size + 1);
	size_t got = 0;
	while (got < size) {
		ssize_t r = pread(PLAN_FD, b + got, size - got, (off_t)got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return fail("read plan: %s", r < 0 ? errstr(errno) : "short");
		got += (size_t)r;
	}
	close(PLAN_FD);
	int have_head = 0;
	for (size_t i = 0; i < size;) {
		if (size - i < 5)
			return fail("decode plan: truncated record");
		unsigned tag = b[i];
		uint32_t n;
		memcpy(&n, b + i + 1, 4);
		i += 5;
		if (n > size - i)
			return fail("decode plan: record %u overruns", tag);
		const char *v = (const char *)b + i;
		switch (tag) {
		case T_HEAD:
			if (n != sizeof h)
				return fail("decode plan: head of %u bytes", n);
			memcpy(&h, v, sizeof h);
			have_head = 1;
			break;
		case T_PATH: path = strndup(v, n); break;
		case T_DIR: dir = strndup(v, n); break;
		case T_ARG: push(&args, v, n); break;
		case T_ENV: push(&env, v, n); break;
		case T_HIDE: push(&hide, v, n); break;
		case T_RO: push(&ro, v, n); break;
		case T_RW: push(&rw, v, n); break;
		case T_DENY:
			if (n != 5)
				return fail("decode plan: deny of %u bytes", n);
			denies = realloc(denies, (ndeny + 1) * sizeof *denies);
			memcpy(&denies[ndeny].addr, v, 4);
			denies[ndeny].ones = (uint8_t)v[4];
			ndeny++;
			break;
		case T_FILTER:
			if (n == 0 || n % sizeof(struct sock_filter) != 0)
				return fail("decode plan: filter of %u bytes", n);
			filter = malloc(n);
			memcpy(filter, v, n);
			nfilter = n / sizeof(struct sock_filter);
			break;
		default:
			return fail("decode plan: unknown record %u", tag);
		}
		i += n;
	}
	if (!have_head || !path || !dir || args.n == 0)
		return fail("decode plan: incomplete");
	if (!env.v)
		env.v = calloc(1, sizeof *env.v);
	free(b);
	return 0;
}

// cloexec_extra makes every descriptor above stderr close-on-exec, so the program starts with 0, 1
// and 2 and nothing else: not the status pipe (a failed execve still reports on it), and not what
// the agent inherited without close-on-exec from its own parent.
static int cloexec_extra(void) {
	if (!(h.flags & F_FALLBACKS)) {
		if (syscall(SYS_close_range, 3U, ~0U, 4U /* CLOSE_RANGE_CLOEXEC */) == 0)
			return 0;
		if (errno != ENOSYS && errno != EINVAL)
			return fail("descriptors: close_range: %s", errstr(errno));
	}
	DIR *d = opendir("/proc/self/fd");
	if (d) {
		int self = dirfd(d);
		struct dirent *e;
		while ((e = readdir(d))) {
			int fd = atoi(e->d_name);
			if (fd > 2 && fd != self && fcntl(fd, F_SETFD, FD_CLOEXEC) != 0 && errno != EBADF)
				return fail("descriptors: close-on-exec fd %d: %s", fd, errstr(errno));
		}
		closedir(d);
		return 0;
	}
	struct rlimit lim;
	if (getrlimit(RLIMIT_NOFILE, &lim) != 0)
		return fail("descriptors: open-files limit: %s", errstr(errno));
	for (rlim_t fd = 3; fd < lim.rlim_cur && fd < (1 << 20); fd++)
		if (fcntl((int)fd, F_SETFD, FD_CLOEXEC) != 0 && errno != EBADF)
			return fail("descriptors: close-on-exec fd %d: %s", (int)fd, errstr(errno));
	return 0;
}

static int is_dir(const char *p) {
	struct stat st;
	return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_real_dir(const char *p) {
	struct stat st;
	return lstat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int mkdir_all(const char *p) {
	char buf[4096];
	if (snprintf(buf, sizeof buf, "%s", p) >= (int)sizeof buf) {
		errno = ENAMETOOLONG;
		return -1;
	}
	for (char *s = buf + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = 0;
		if (mkdir(buf, 0755) != 0 && errno != EEXIST)
			return -1;
		*s = '/';
	}
	if (mkdir(buf, 0755) != 0 && errno != EEXIST)
		return -1;
	return 0;
}

// unescape_mountinfo undoes mountinfo's octal escapes (\040 for a space), in place.
static void unescape_mountinfo(char *s) {
	char *w = s;
	for (char *r = s; *r; r++) {
		if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' && r[3] >= '0' && r[3] <= '7') {
			*w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
			r += 3;
			continue;
		}
		*w++ = *r;
	}
	*w = 0;
}

// read_only_each makes the host's file system read-only on kernels before 5.12 (no
// mount_setattr): every mount point in turn, outermost first, keeping the flags it has.
static int read_only_each(void) {
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return fail("mounts: list mounts: %s", errstr(errno));
	char *line = NULL;
	size_t cap = 0;
	struct list points = {0};
	while (getline(&line, &cap, f) > 0) {
		char *save, *field = strtok_r(line, " ", &save);
		for (int i = 0; field && i < 4; i++)
			field = strtok_r(NULL, " ", &save);
		if (field) {
			unescape_mountinfo(field);
			push(&points, field, strlen(field));
		}
	}
	free(line);
	fclose(f);
	for (size_t i = 0; i < points.n; i++) {
		struct statfs st;
		if (statfs(points.v[i], &st) != 0)
			continue; // a mount point under one that was covered: not reachable
		unsigned long flags = MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID;
		if (st.f_flags & ST_NODEV)
			flags |= MS_NODEV;
		if (st.f_flags & ST_NOEXEC)
			flags |= MS_NOEXEC;
		if (st.f_flags & ST_NOATIME)
			flags |= MS_NOATIME;
		if (st.f_flags & ST_RELATIME)
			flags |= MS_RELATIME;
		if (mount("", points.v[i], NULL, flags, NULL) != 0)
			return fail("mounts: remount %s read-only: %s", points.v[i], errstr(errno));
	}
	return 0;
}

struct mount_attr_ {
	uint64_t attr_set, attr_clr, propagation, userns_fd;
};

// read_only_root makes every mount of the (private) mount namespace read-only and nosuid, so no
// world-writable directory of the host is a channel between runs. Mounts made afterwards (the
// private tmpfs, the work directory) are not affected.
static int read_only_root(void) {
	struct mount_attr_ attr = {.attr_set = 0x1 /* RDONLY */ | 0x2 /* NOSUID */};
	if (h.flags & F_FALLBACKS)
		return read_only_each();
	if (syscall(442 /* mount_setattr */, AT_FDCWD, "/", 0x8000 /* AT_RECURSIVE */, &attr, sizeof attr) == 0)
		return 0;
	if (errno != ENOSYS)
		return fail("mounts: mount_setattr / read-only: %s", errstr(errno));
	return read_only_each();
}

static const char *writable_places[] = {"/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/var/lock"};

// private_writable mounts a fresh tmpfs on every writable place that is a real directory (a
// symlink shares its target's), and the run's own message queue file system on /dev/mqueue.
static int private_writable(void) {
	char opts[128];
	snprintf(opts, sizeof opts, "mode=1777,size=%llu,nr_inodes=65536", (unsigned long long)h.tmpfs_size);
	for (size_t i = 0; i < sizeof writable_places / sizeof *writable_places; i++) {
		if (!is_real_dir(writable_places[i]))
			continue;
		if (mount("tmpfs", writable_places[i], "tmpfs", MS_NOSUID | MS_NODEV, opts) != 0)
			return fail("mounts: private %s: %s", writable_places[i], errstr(errno));
	}
	if (is_real_dir("/dev/mqueue") && mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
		return fail("mounts: private /dev/mqueue: %s", errstr(errno));
	return 0;
}

// slirp_resolv_conf points name resolution at slirp4netns's DNS forwarder, through a file in a
// small tmpfs mounted only long enough to bind it over /etc/resolv.conf.
static int slirp_resolv_conf(void) {
	struct stat st;
	if (stat("/etc/resolv.conf", &st) != 0)
		return 0;
	const char *d = "/tmp/.envfabric-net", *f = "/tmp/.envfabric-net/resolv.conf";
	if (mkdir(d, 0700) != 0)
		return fail("mounts: resolv.conf: %s", errstr(errno));
	if (mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=4k,mode=0755") != 0)
		return fail("mounts: resolv.conf tmpfs: %s", errstr(errno));
	int fd = open(f, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	const char *text = "nameserver 10.0.2.3\n";
	if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text))
		return fail("mounts: resolv.conf: %s", errstr(errno));
	close(fd);
	if (mount(f, "/etc/resolv.conf", NULL, MS_BIND, NULL) != 0)
		return fail("mounts: bind resolv.conf: %s", errstr(errno));
	if (mount("", "/etc/resolv.conf", NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0)
		return fail("mounts: read-only resolv.conf: %s", errstr(errno));
	if (umount2(d, MNT_DETACH) != 0)
		return fail("mounts: resolv.conf tmpfs: %s", errstr(errno));
	rmdir(d);
	return 0;
}

// setup_mounts builds the program's view of the file system in the new mount namespace: nothing
// propagates back to the host; the host's file system is read-only; the writable places are
// private and empty; every hidden directory is an empty read-only tmpfs; the read-only and
// writable directories are bound back at their own paths; /proc shows only the new PID
// namespace, without the key lists.
static int setup_mounts(void) {
	if (mount("", "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
		return fail("mounts: make / private: %s", errstr(errno));
	// Open what is bound back before anything is hidden: afterwards its path leads into a tmpfs.
	size_t nbind = ro.n + rw.n;
	int *fds = calloc(nbind + 1, sizeof *fds);
	for (size_t i = 0; i < nbind; i++) {
		const char *p = i < ro.n ? ro.v[i] : rw.v[i - ro.n];
		fds[i] = open(p, O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (fds[i] < 0)
			return fail("mounts: open %s: %s", p, errstr(errno));
	}
	int rc;
	if ((rc = read_only_root()) || (rc = private_writable()))
		return rc;
	if ((h.flags & F_SLIRP) && (rc = slirp_resolv_conf()))
		return rc;
	// hide holds only outermost directories (the agent drops those inside another); one under a
	// writable place already replaced (DATA_ROOT under /tmp, say) is gone already.
	char *hidden[hide.n + 1];
	size_t nhidden = 0;
	for (size_t i = 0; i < hide.n; i++) {
		if (!is_dir(hide.v[i]))
			continue;
		if (mount("tmpfs", hide.v[i], "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755,size=1m") != 0)
			return fail("mounts: hide %s: %s", hide.v[i], errstr(errno));
		hidden[nhidden++] = hide.v[i];
	}
	for (size_t i = 0; i < nbind; i++) {
		const char *p = i < ro.n ? ro.v[i] : rw.v[i - ro.n];
		if (mkdir_all(p) != 0)
			return fail("mounts: mount point %s: %s", p, errstr(errno));
		char src[64];
		snprintf(src, sizeof src, "/proc/self/fd/%d", fds[i]);
		if (mount(src, p, NULL, MS_BIND, NULL) != 0)
			return fail("mounts: bind %s: %s", p, errstr(errno));
		unsigned long flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV;
		if (i < ro.n)
			flags |= MS_RDONLY;
		if (mount("", p, NULL, flags, NULL) != 0)
			return fail("mounts: remount %s: %s", p, errstr(errno));
		close(fds[i]);
	}
	free(fds);
	for (size_t i = 0; i < nhidden; i++)
		if (mount("", hidden[i], NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
			return fail("mounts: read-only %s: %s", hidden[i], errstr(errno));
	if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) != 0)
		return fail("mounts: mount /proc: %s", errstr(errno));
	// /proc/keys and /proc/key-users list the serial numbers of the run user's other keys, which
	// a serial is all it takes to address: cover them with an empty file.
	const char *keys[] = {"/proc/keys", "/proc/key-users"};
	for (int i = 0; i < 2; i++) {
		struct stat st;
		if (stat(keys[i], &st) != 0)
			continue; // a kernel without keys
		if (mount("/dev/null", keys[i], NULL, MS_BIND, NULL) != 0)
			return fail("mounts: hide %s: %s", keys[i], errstr(errno));
	}
	return 0;
}

// loopback_up sets IFF_UP on lo: code that talks to itself over 127.0.0.1 expects it up.
static int loopback_up(void) {
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return fail("loopback: %s", errstr(errno));
	struct ifreq ifr = {0};
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) != 0)
		return fail("loopback: SIOCGIFFLAGS: %s", errstr(errno));
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(fd, SIOCSIFFLAGS, &ifr) != 0)
		return fail("loopback: SIOCSIFFLAGS: %s", errstr(errno));
	close(fd);
	return 0;
}

// wait_for_network blocks until the agent says the user-mode network is set up.
static int wait_for_network(void) {
	char c;
	ssize_t r;
	while ((r = read(GO_FD, &c, 1)) < 0 && errno == EINTR) {
	}
	close(GO_FD);
	if (r != 1)
		return fail("network set-up: %s", r < 0 ? errstr(errno) : "EOF");
	return 0;
}

// prohibit_routes adds a "prohibit" route for each denied IPv4 network to the (run's) main
// routing table: a connection there fails at once, whatever the default route.
static int prohibit_routes(void) {
	int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (fd < 0)
		return fail("network: netlink socket: %s", errstr(errno));
	for (size_t i = 0; i < ndeny; i++) {
		struct {
			struct nlmsghdr nh;
			struct rtmsg rt;
			struct rtattr ra;
			uint32_t dst;
		} req = {0};
		req.nh.nlmsg_len = sizeof req;
		req.nh.nlmsg_type = RTM_NEWROUTE;
		req.nh.nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
		req.nh.nlmsg_seq = (uint32_t)i + 1;
		req.rt.rtm_family = AF_INET;
		req.rt.rtm_dst_len = denies[i].ones;
		req.rt.rtm_table = RT_TABLE_MAIN;
		req.rt.rtm_protocol = RTPROT_STATIC;
		req.rt.rtm_scope = RT_SCOPE_UNIVERSE;
		req.rt.rtm_type = RTN_PROHIBIT;
		req.ra.rta_len = sizeof req.ra + 4;
		req.ra.rta_type = RTA_DST;
		req.dst = denies[i].addr;
		char name[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &denies[i].addr, name, sizeof name);
		struct sockaddr_nl to = {.nl_family = AF_NETLINK};
		if (sendto(fd, &req, sizeof req, 0, (struct sockaddr *)&to, sizeof to) < 0)
			return fail("network: prohibit %s/%u: %s", name, denies[i].ones, errstr(errno));
		char buf[4096];
		ssize_t n = recv(fd, buf, sizeof buf, 0);
		if (n < 0)
			return fail("network: prohibit %s/%u: %s", name, denies[i].ones, errstr(errno));
		struct nlmsghdr *m = (struct nlmsghdr *)buf;
		if (n < (ssize_t)sizeof *m || m->nlmsg_type != NLMSG_ERROR)
			return fail("network: prohibit %s/%u: no answer from netlink", name, denies[i].ones);
		int e = -((struct nlmsgerr *)NLMSG_DATA(m))->error;
		if (e != 0 && e != EEXIST)
			return fail("network: prohibit %s/%u: %s", name, denies[i].ones, errstr(e));
	}
	close(fd);
	return 0;
}

// keyctl operations and special keyrings (linux/keyctl.h).
enum {
	KEYCTL_GET_KEYRING_ID_ = 0, KEYCTL_JOIN_SESSION_KEYRING_ = 1, KEYCTL_SETPERM_ = 5, KEYCTL_DESCRIBE_ = 6,
};
#define KEY_SEALED 0x3f010000u // every permission for a possessor, "view" for the owner, none else
#define KEY_USR_VIEW_ 0x00010000u

// sealed reports whether the keyring gives its owner at most "view", and group and others nothing.
static int sealed(long serial) {
	char buf[256] = {0};
	long n = syscall(SYS_keyctl, KEYCTL_DESCRIBE_, serial, buf, sizeof buf - 1);
	if (n < 0 || n >= (long)sizeof buf)
		return 0;
	// "type;uid;gid;perm;description"
	char *p = buf;
	for (int i = 0; i < 3; i++) {
		p = strchr(p, ';');
		if (!p)
			return 0;
		p++;
	}
	char *end;
	unsigned long perm = strtoul(p, &end, 16);
	return end != p && *end == ';' && (perm & 0x00ffffffu & ~KEY_USR_VIEW_) == 0;
}

// seal_user_keyrings leaves the run user's user and user-session keyrings reachable by possessors
// only (a run possesses neither). Run as the run user, after the drop; the keyrings are made if
// they do not exist yet, so no run can make them open later.
static int seal_user_keyrings(void) {
	long ids[] = {-4 /* KEY_SPEC_USER_KEYRING */, -5 /* KEY_SPEC_USER_SESSION_KEYRING */};
	for (int i = 0; i < 2; i++) {
		long serial = syscall(SYS_keyctl, KEYCTL_GET_KEYRING_ID_, ids[i], 1);
		if (serial < 0) {
			if (errno == ENOSYS)
				return 0;
			if (errno == EDQUOT)
				continue; // the user's key quota is full: it cannot be made, by code either
			return fail("find keyring %ld: %s", ids[i], errstr(errno));
		}
		if (syscall(SYS_keyctl, KEYCTL_SETPERM_, serial, KEY_SEALED) != 0) {
			if (errno == EACCES && sealed(serial))
				continue; // an earlier run sealed it, and with that took the owner's right to set it
			return fail("seal keyring %ld (serial %ld): %s", ids[i], serial, errstr(errno));
		}
	}
	return 0;
}

static void raw_write(const char *s) {
	size_t n = strlen(s);
	while (n > 0) {
		ssize_t w = write(STATUS_FD, s, n);
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

// run_exec sets the limits, drops privileges and becomes the program.
static int run_exec(void) {
	int rc;
	if ((rc = cloexec_extra()))
		return rc;
	// No setuid binary (su, sudo, ping) can give the code more than it starts with.
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		return fail("no_new_privs: %s", errstr(errno));
	// Ambient capabilities (systemd AmbientCapabilities=) would pass through execve even after
	// the drop: clear them. EINVAL means a kernel without them.
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
		return fail("clear ambient capabilities: %s", errstr(errno));
	struct {
		const char *name;
		int resource;
		uint64_t value;
		int set;
	} limits[] = {
		{"core", RLIMIT_CORE, 0, 1},
		{"cpu", RLIMIT_CPU, h.cpu, h.cpu > 0},
		{"fsize", RLIMIT_FSIZE, h.fsize, h.fsize > 0},
		{"nofile", RLIMIT_NOFILE, h.nofile, h.nofile > 0},
		// NPROC before the drop: setuid then marks the process when the run user already has
		// more processes than the soft limit, and its execve fails with EAGAIN if it is still so.
		// The soft limit is one less until after the drop, so that a run user who already has
		// RUN_LIMIT_PROCESSES processes gets no new one (setuid compares the others' count alone).
		{"nproc", RLIMIT_NPROC, h.nproc, h.nproc > 0},
	};
	for (size_t i = 0; i < sizeof limits / sizeof *limits; i++) {
		if (!limits[i].set)
			continue;
		struct rlimit l = {limits[i].value, limits[i].value};
		if (limits[i].resource == RLIMIT_NPROC)
			l.rlim_cur = limits[i].value - 1;
		if (setrlimit(limits[i].resource, &l) != 0)
			return fail("rlimit %s=%llu: %s", limits[i].name, (unsigned long long)limits[i].value, errstr(errno));
	}
	// A fresh anonymous session keyring: keys the run adds are its own and die with it. Made
	// before the drop, so it counts against root's key quota, not the run user's.
	if (syscall(SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING_, NULL) < 0 && errno != ENOSYS)
		return fail("join a fresh session keyring: %s", errstr(errno));
	if (h.flags & F_DROP) {
		if (setgroups(0, NULL) != 0)
			return fail("setgroups: %s", errstr(errno));
		if (setgid((gid_t)h.gid) != 0)
			return fail("setgid %llu: %s", (unsigned long long)h.gid, errstr(errno));
		if (setuid((uid_t)h.uid) != 0)
			return fail("setuid %llu: %s", (unsigned long long)h.uid, errstr(errno));
		if ((rc = seal_user_keyrings()))
			return rc;
	}
	if (h.nproc > 0) {
		struct rlimit l = {h.nproc, h.nproc};
		if (setrlimit(RLIMIT_NPROC, &l) != 0)
			return fail("rlimit nproc=%llu: %s", (unsigned long long)h.nproc, errstr(errno));
	}
	if (chdir(dir) != 0)
		return fail("chdir %s: %s", dir, errstr(errno));
	// The failure reports are built now: after the address-space limit nothing may allocate.
	static char eacces[8192], eagain[8192], other[8192];
	snprintf(eacces, sizeof eacces, "error eacces exec %s as uid %d: permission denied (every directory on the way to it, and the interpreter it links to, must be readable and searchable by the run user)\n", path, (int)getuid());
	snprintf(eagain, sizeof eagain, "error exec %s: uid %d already has its process limit (RUN_LIMIT_PROCESSES=%llu counts every run at once): resource temporarily unavailable\n", path, (int)getuid(), (unsigned long long)h.nproc);
	snprintf(other, sizeof other, "error exec %s: ", path);
	// Last before the limit: from here on the code's rules bind this stage too.
	if (h.flags & F_FILTER) {
		struct sock_fprog prog = {.len = (unsigned short)nfilter, .filter = filter};
		if (nfilter == 0)
			return fail("install the system-call filter: none in the plan");
		if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog) != 0)
			return fail("install the system-call filter: %s", errstr(errno));
	}
	if (h.as > 0) {
		struct rlimit l = {h.as, h.as};
		if (setrlimit(RLIMIT_AS, &l) != 0)
			return fail("rlimit as=%llu: %s", (unsigned long long)h.as, errstr(errno));
	}
	execve(path, args.v, env.v);
	int e = errno;
	if (e == EACCES) {
		raw_write(eacces);
	} else if (e == EAGAIN) {
		raw_write(eagain);
	} else {
		raw_write(other);
		raw_write(errstr(e));
		raw_write("\n");
	}
	return EXIT_SETUP;
}

// run_init is pid 1 of the sandbox's PID namespace.
static int run_init(void) {
	int rc;
	if ((rc = cloexec_extra()))
		return rc;
	if (h.flags & F_NAMESPACE) {
		if ((rc = setup_mounts()))
			return rc;
		// The UTS namespace is new either way; a filter may forbid naming it (systemd's
		// ProtectHostname=), which costs nothing but the name.
		(void)sethostname("sandbox", 7);
		if ((rc = loopback_up()))
			return rc;
		if (h.flags & F_SLIRP) {
			if ((rc = wait_for_network()) || (rc = prohibit_routes()))
				return rc;
		}
	}
	pid_t child = fork();
	if (child < 0)
		return fail("start exec stage: %s", errstr(errno));
	if (child == 0)
		_exit(run_exec());
	// Reap everything: orphans of the program are re-parented to us. Only the program's own end
	// ends the sandbox.
	for (;;) {
		int ws;
		pid_t pid = wait(&ws);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid < 0)
			return fail("wait: %s", errstr(errno));
		if (pid != child)
			continue;
		if (WIFSIGNALED(ws)) {
			dprintf(STATUS_FD, "signal %d\n", WTERMSIG(ws));
			return 128 + WTERMSIG(ws);
		}
		dprintf(STATUS_FD, "exit %d\n", WEXITSTATUS(ws));
		return WEXITSTATUS(ws);
	}
}

static int write_file(const char *dir, const char *file, const char *value) {
	char p[4096];
	snprintf(p, sizeof p, "%s/%s", dir, file);
	int fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t w = write(fd, value, strlen(value));
	close(fd);
	return w == (ssize_t)strlen(value) ? 0 : -1;
}

// run_ready is a stage started ahead of its run, so that joining the run's cgroup (which waits
// for an RCU grace period, about 10 ms here) is off the run's critical path. Usage:
//   envfabric-sandbox-ready ANNOUNCE N DIR... HOME...
// with the agent's end of a socket on fd 3. It joins the N run cgroup directories, says so with
// one byte if ANNOUNCE is 1 (a stage of the agent's pool), and waits. The run arrives as one message whose descriptors are the run's stdin,
// stdout, stderr, status pipe, plan and (with the user-mode network) network pipe; the stage then
// makes the run's namespaces itself (unshare), and its child is the namespace's init. If the
// agent goes away instead (EOF: it closed the socket, or died), it moves back into the HOME
// cgroups, removes the run cgroups and exits.
static int run_ready(int argc, char **argv) {
	int announce = argc > 1 && strcmp(argv[1], "1") == 0;
	int n = argc > 2 ? atoi(argv[2]) : -1;
	if (n < 0 || argc != 3 + 2 * n)
		return EXIT_SETUP;
	char **dirs = argv + 3, **homes = argv + 3 + n;
	pid_t agent = getppid();
	int sock = fcntl(3, F_DUPFD_CLOEXEC, 10);
	close(3);
	int joined = 0, join_errno = 0;
	for (; joined < n; joined++)
		if (write_file(dirs[joined], "cgroup.procs", "0") != 0) {
			join_errno = errno;
			break;
		}
	// For the agent's pool: "r", in the run's cgroup and ready; "e", could not join it. A stage
	// started for the run at hand says nothing (the agent sends the run at once and closes its
	// end; unread data there would reset this end), and reports a failure on the run's status
	// pipe instead.
	if (announce)
		(void)send(sock, joined == n ? "r" : "e", 1, MSG_NOSIGNAL);
	char byte;
	union {
		char buf[CMSG_SPACE(8 * sizeof(int))];
		struct cmsghdr align;
	} u;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof u.buf};
	ssize_t r;
	while ((r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR) {
	}
	struct cmsghdr *c = r > 0 ? CMSG_FIRSTHDR(&msg) : NULL;
	if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) {
		for (int i = 0; i < n; i++) {
			(void)write_file(homes[i], "cgroup.procs", "0");
			// The kernel releases a memory cgroup a moment after its last process left.
			for (int tries = 0; rmdir(dirs[i]) != 0 && errno == EBUSY && tries < 500; tries++)
				usleep(10000);
		}
		return 0;
	}
	// From here on the run dies with the agent, as one started directly does.
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != agent)
		return EXIT_SETUP;
	int nfd = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
	int fds[8];
	memcpy(fds, CMSG_DATA(c), (size_t)nfd * sizeof(int));
	if (nfd < 5)
		return EXIT_SETUP;
	// Out of the way first, then into place: a received descriptor may sit where another goes.
	for (int i = 0; i < nfd; i++) {
		int moved = fcntl(fds[i], F_DUPFD_CLOEXEC, 100);
		close(fds[i]);
		fds[i] = moved;
	}
	for (int i = 0; i < nfd; i++) {
		if (fds[i] < 0 || dup2(fds[i], i) != i)
			return EXIT_SETUP;
		close(fds[i]);
	}
	if (joined < n)
		return fail("join run cgroup: write %s/cgroup.procs: %s", dirs[joined], errstr(join_errno));
	int rc = read_plan();
	if (rc)
		return rc;
	if (!(h.flags & F_PIDNS)) {
		close(sock);
		return run_exec();
	}
	// The init stage, this process's child, is pid 1 of the new PID namespace; when it exits the
	// kernel kills everything left in there, including processes that called setsid.
	int flags = CLONE_NEWPID;
	if (h.flags & F_NAMESPACE)
		flags |= CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET;
	uid_t uid = getuid();
	gid_t gid = getgid();
	if (h.flags & F_USERNS)
		flags |= CLONE_NEWUSER;
	if (unshare(flags) != 0)
		return fail("unshare: %s", errstr(errno));
	if (h.flags & F_USERNS) {
		// Only the agent's own ids, mapped to themselves: the code is no one new, and the
		// capabilities it would hold in there end at the exec stage's execve.
		char m[64];
		snprintf(m, sizeof m, "%u %u 1", (unsigned)uid, (unsigned)uid);
		if (write_file("/proc/self", "uid_map", m) != 0 || write_file("/proc/self", "setgroups", "deny") != 0)
			return fail("user namespace: %s", errstr(errno));
		snprintf(m, sizeof m, "%u %u 1", (unsigned)gid, (unsigned)gid);
		if (write_file("/proc/self", "gid_map", m) != 0)
			return fail("user namespace: %s", errstr(errno));
	}
	pid_t child = fork();
	if (child < 0)
		return fail("start init stage: %s", errstr(errno));
	if (child == 0) {
		// The init stage dies with this process (which the agent kills on timeout).
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(sock);
		_exit(run_init());
	}
	// The agent needs the init stage's pid for the user-mode network of its namespace.
	if (h.flags & F_SLIRP) {
		char pid[32];
		int len = snprintf(pid, sizeof pid, "%d", (int)child);
		(void)send(sock, pid, (size_t)len, MSG_NOSIGNAL);
	}
	close(sock);
	for (int fd = 0; fd < nfd; fd++)
		close(fd);
	for (;;) {
		int ws;
		pid_t pid = waitpid(child, &ws, 0);
		if (pid < 0 && errno == EINTR)
			continue;
		if (pid < 0)
			return EXIT_SETUP;
		return WIFSIGNALED(ws) ? 128 + WTERMSIG(ws) : WEXITSTATUS(ws);
	}
}

int main(int argc, char **argv) {
	// The default program of the agent's probe: /proc/self/exe is this program.
	if (argv[0] && strcmp(argv[0], "envfabric-sandbox-probe") == 0)
		return 0;
	if (argv[0] && strcmp(argv[0], "envfabric-sandbox-ready") == 0)
		return run_ready(argc, argv);
	fprintf(stderr, "envfabric-sandbox: the agent's run sandbox stage; not to be run by hand\n");
	return EXIT_SETUP;
}
