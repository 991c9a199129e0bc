/* arena_store: the KV arena's file: its directory ($FI_HOME/kv, trusted as base/home.h says),
 * the layout of its tables, creation, attachment and header validation. Calls arena_index.c
 * only.
 *
 * Creation is race-free without a daemon: the creator builds and initialises the whole file
 * under a private temporary name, then link()s it to its final name, which fails with EEXIST if
 * another process got there first; the loser drops its copy and attaches to the winner's. A
 * file at the final name is therefore always fully initialised. The file has its full size
 * (so every process maps all of it once), but only the header, the tables and the first
 * extent of data are allocated; arena_index.c allocates the rest an extent at a time. */
#define _GNU_SOURCE
#include "base/settings.h"
#include "arena_shm.h"
#include "base/home.h"
#include "base/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define DEFAULT_BLOCK_TOKENS 16
#define DEFAULT_LEASES 4096
#define MAX_BLOCKS (1u << 30)

struct layout {
	uint32_t block_tokens, n_blocks, n_index, n_leases, n_pins, extent_blocks;
	uint64_t token_bytes, block_bytes, stride;
	uint64_t off_meta, off_index, off_leases, off_pins, off_data, file_bytes;
};

static uint64_t align_up(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}

/* Fills the derived fields of L from block_tokens, token_bytes, n_blocks and n_leases; -1 on
 * overflow or a zero count. */
static int layout_compute(struct layout *L)
{
	uint64_t n = L->n_blocks, x, pins;
	if (!L->block_tokens || !L->token_bytes || !n || n > MAX_BLOCKS || !L->n_leases ||
	    L->n_leases > (1u << 24) || L->token_bytes > (1ull << 40) ||
	    __builtin_mul_overflow(L->token_bytes, (uint64_t)L->block_tokens, &L->block_bytes) ||
	    L->block_bytes > (1ull << 40))
		return -1;
	L->stride = align_up(L->block_bytes, FI_ARENA_ALIGN);
	L->n_index = 16;
	while (L->n_index < 2 * n)
		L->n_index *= 2;
	pins = 4 * n + 1024; /* a block is pinned by a few requests at a time, on average */
	L->n_pins = pins > UINT32_MAX - 1 ? UINT32_MAX - 1 : (uint32_t)pins;
	L->off_meta = ARENA_HDR_BYTES;
	L->off_index = align_up(L->off_meta + n * sizeof(struct arena_block), 64);
	L->off_leases = align_up(L->off_index + (uint64_t)L->n_index * 4, 64);
	L->off_pins = align_up(L->off_leases +
			       (uint64_t)L->n_leases * sizeof(struct arena_lease_slot), 64);
	L->off_data = align_up(L->off_pins + (uint64_t)L->n_pins * sizeof(struct arena_pin),
			       FI_ARENA_ALIGN);
	if (__builtin_mul_overflow(n, L->stride, &x) ||
	    __builtin_add_overflow(x, L->off_data, &L->file_bytes))
		return -1;
	return 0;
}

int arena_fp_valid(const char *fp)
{
	size_t i;
	if (!fp)
		return 0;
	for (i = 0; i < FI_ARENA_FP_CHARS; i++)
		if (!((fp[i] >= '0' && fp[i] <= '9') || (fp[i] >= 'a' && fp[i] <= 'f')))
			return 0;
	return fp[i] == 0;
}

fi_err arena_kv_dir(const char *dir, char *buf, size_t n)
{
	int r;
	if (dir && *dir)
		r = snprintf(buf, n, "%s", dir);
	else
		r = snprintf(buf, n, "%s/kv", fi_home());
	if (r < 0 || (size_t)r >= n)
		return fi_fail(FI_ERANGE, "kv arena directory name too long");
	return FI_OK;
}

fi_err arena_dir_check(const char *opt_dir, const char *dir)
{
	fi_err e;
	if ((!opt_dir || !*opt_dir) && (e = fi_dir_trusted(fi_home(), NULL)))
		return e;
	return fi_dir_trusted(dir, NULL);
}

static void set_views(struct fi_arena *a)
{
	struct arena_hdr *h = (struct arena_hdr *)a->base;
	a->h = h;
	a->blk = (struct arena_block *)(a->base + h->off_meta);
	a->index = (uint32_t *)(a->base + h->off_index);
	a->ls = (struct arena_lease_slot *)(a->base + h->off_leases);
	a->pins = (struct arena_pin *)(a->base + h->off_pins);
	a->data = a->base + h->off_data;
}

/* Checks an attached file's header; fp NULL accepts any model. */
static fi_err validate(struct fi_arena *a, const char *fp, const struct fi_arena_opts *o)
{
	const struct arena_hdr *h = (const struct arena_hdr *)a->base;
	struct layout L = {0};
	char hfp[FI_ARENA_FP_CHARS + 1];
	if (memcmp(h->magic, ARENA_MAGIC, 8))
		return fi_fail(FI_EFORMAT, "'%s': not a kv arena (bad magic)", a->path);
	if (h->version != ARENA_VERSION)
		return fi_fail(FI_EMISMATCH, "kv arena '%s': format version %u, this build uses %u; "
			       "remove the arena", a->path, h->version, ARENA_VERSION);
	if (h->hdr_struct_bytes != sizeof(struct arena_hdr) ||
	    h->mutex_bytes != sizeof(pthread_mutex_t))
		return fi_fail(FI_EMISMATCH, "kv arena '%s': made by an incompatible build",
			       a->path);
	memcpy(hfp, h->fingerprint, FI_ARENA_FP_CHARS);
	hfp[FI_ARENA_FP_CHARS] = 0;
	if (!arena_fp_valid(hfp) || h->fingerprint[FI_ARENA_FP_CHARS])
		return fi_fail(FI_EFORMAT, "kv arena '%s': corrupt model fingerprint", a->path);
	if (fp && strcmp(fp, hfp))
		return fi_fail(FI_EMISMATCH, "kv arena '%s' holds model %.16s..., not %.16s...",
			       a->path, hfp, fp);
	L.block_tokens = h->block_tokens;
	L.token_bytes = h->token_bytes;
	L.n_blocks = h->n_blocks;
	L.n_leases = h->n_leases;
	if (layout_compute(&L) || L.block_bytes != h->block_bytes || L.stride != h->block_stride ||
	    L.n_index != h->n_index || L.n_pins != h->n_pins || L.off_meta != h->off_meta ||
	    L.off_index != h->off_index || L.off_leases != h->off_leases ||
	    L.off_pins != h->off_pins || L.off_data != h->off_data || L.file_bytes != h->file_bytes ||
	    !h->extent_blocks || h->extent_blocks > h->n_blocks || h->n_alloc > h->n_blocks)
		return fi_fail(FI_EFORMAT, "kv arena '%s': corrupt layout in header", a->path);
	if (h->file_bytes != a->len)
		return fi_fail(FI_EFORMAT, "kv arena '%s': file is %zu bytes, header says %llu "
			       "(truncated?)", a->path, a->len, (unsigned long long)h->file_bytes);
	if (o && o->block_tokens && o->block_tokens != h->block_tokens)
		return fi_fail(FI_EMISMATCH, "kv arena '%s': blocks of %u tokens, not %u", a->path,
			       h->block_tokens, o->block_tokens);
	if (o && o->token_bytes && o->token_bytes != h->token_bytes)
		return fi_fail(FI_EMISMATCH, "kv arena '%s': %llu KV bytes per token, not %llu",
			       a->path, (unsigned long long)h->token_bytes,
			       (unsigned long long)o->token_bytes);
	return FI_OK;
}

void arena_unmap(struct fi_arena *a)
{
	if (a->base)
		munmap(a->base, a->len);
	if (a->fd >= 0)
		close(a->fd);
	a->base = NULL;
	a->fd = -1;
}

fi_err arena_attach(struct fi_arena *a, const char *fp, const struct fi_arena_opts *o)
{
	struct stat st;
	void *m;
	fi_err e;
	/* O_NONBLOCK: a FIFO at the name is refused below, not waited on */
	a->fd = open(a->path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (a->fd < 0) {
		if (errno == ENOENT)
			return fi_fail(FI_ENOTFOUND, "kv arena '%s' does not exist", a->path);
		return fi_fail(FI_EIO, "cannot open '%s': %s", a->path, strerror(errno));
	}
	if (fstat(a->fd, &st) || !S_ISREG(st.st_mode) || st.st_size < ARENA_HDR_BYTES) {
		arena_unmap(a);
		return fi_fail(FI_EFORMAT, "kv arena '%s': truncated or not a regular file",
			       a->path);
	}
	a->len = (size_t)st.st_size;
	m = mmap(NULL, a->len, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0);
	if (m == MAP_FAILED) {
		arena_unmap(a);
		return fi_fail(FI_EIO, "cannot map '%s': %s", a->path, strerror(errno));
	}
	a->base = m;
	if ((e = validate(a, fp, o))) {
		arena_unmap(a);
		return e;
	}
	set_views(a);
	return FI_OK;
}

/* 1/8 of RAM, at most half the free space of dir: the arena's maximum (its data is
 * allocated as it fills). */
static uint64_t default_size(const char *dir)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	uint64_t size = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz / 8 : 1ull << 30;
	struct statvfs vf;
	if (!statvfs(dir, &vf) && (uint64_t)vf.f_bavail * vf.f_frsize / 2 < size)
		size = (uint64_t)vf.f_bavail * vf.f_frsize / 2;
	return size;
}

static void init_file(struct fi_arena *a, const struct layout *L, const char *fp,
		      uint32_t n_alloc)
{
	struct arena_hdr *h = (struct arena_hdr *)a->base;
	pthread_mutexattr_t ma;
	uint32_t i;
	h->version = ARENA_VERSION;
	h->hdr_struct_bytes = sizeof *h;
	h->mutex_bytes = sizeof(pthread_mutex_t);
	memcpy(h->fingerprint, fp, FI_ARENA_FP_CHARS);
	h->block_tokens = L->block_tokens;
	h->n_blocks = L->n_blocks;
	h->token_bytes = L->token_bytes;
	h->block_bytes = L->block_bytes;
	h->block_stride = L->stride;
	h->n_index = L->n_index;
	h->n_leases = L->n_leases;
	h->n_pins = L->n_pins;
	h->extent_blocks = L->extent_blocks;
	h->off_meta = L->off_meta;
	h->off_index = L->off_index;
	h->off_leases = L->off_leases;
	h->off_pins = L->off_pins;
	h->off_data = L->off_data;
	h->file_bytes = L->file_bytes;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&h->lock.m, &ma);
	pthread_mutexattr_destroy(&ma);
	set_views(a);
	/* The file is zero-filled: the index starts empty; the allocated blocks make the free
	 * list, the others are on none. */
	for (i = 0; i < L->n_blocks; i++) {
		a->blk[i].state = BLK_FREE;
		a->blk[i].owner = NIL;
		a->blk[i].prev = NIL;
		a->blk[i].next = i + 1 < n_alloc ? i + 1 : NIL;
		a->blk[i].in_list = i < n_alloc ? IN_FREE : IN_NONE;
	}
	h->n_alloc = n_alloc;
	h->free_head = 0;
	h->free_count = n_alloc;
	h->lru_head = h->lru_tail = NIL;
	for (i = 0; i < L->n_pins; i++) {
		a->pins[i].block = NIL;
		a->pins[i].next = i + 1 < L->n_pins ? i + 1 : NIL;
	}
	h->pin_free = 0;
	for (i = 0; i < L->n_leases; i++)
		a->ls[i].pin_head = NIL;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	memcpy(h->magic, ARENA_MAGIC, 8);
}

/* Removes temporary files of creators of this arena that died before finishing (they would
 * hold their tables in memory on a tmpfs forever). */
static void sweep_tmp(const char *dir, const char *fp)
{
	char prefix[FI_ARENA_FP_CHARS + 8], path[PATH_MAX * 2];
	struct dirent *de;
	DIR *dp = opendir(dir);
	size_t pl;
	if (!dp)
		return;
	pl = (size_t)snprintf(prefix, sizeof prefix, ".%s.kv.", fp);
	while ((de = readdir(dp))) {
		uint64_t start;
		char *end;
		long pid;
		if (strncmp(de->d_name, prefix, pl))
			continue;
		pid = strtol(de->d_name + pl, &end, 10);
		if (*end != '.' || pid <= 0 || !proc_start_time((pid_t)pid, &start))
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		unlink(path);
	}
	closedir(dp);
}

fi_err arena_create(struct fi_arena *a, const char *dir, const char *fp,
		    const struct fi_arena_opts *o)
{
	static unsigned seq;
	struct layout L = {0};
	char tmp[PATH_MAX];
	uint64_t size, per, head;
	uint32_t n_alloc;
	int r, group = 0;
	void *m;
	fi_err e;
	if (!o || !o->token_bytes)
		return fi_fail(FI_EINVAL, "kv arena '%s' does not exist, and creating it needs the "
			       "KV bytes per token", a->path);
	if ((!o->dir || !*o->dir) && (e = fi_dir_make(fi_home(), NULL)))
		return e;
	if ((e = fi_dir_make(dir, &group)))
		return e;
	L.block_tokens = o->block_tokens ? o->block_tokens : DEFAULT_BLOCK_TOKENS;
	L.token_bytes = o->token_bytes;
	L.n_leases = o->max_leases ? o->max_leases : DEFAULT_LEASES;
	L.n_blocks = 1;
	if (layout_compute(&L))
		return fi_fail(FI_EINVAL, "kv arena: bad layout (%u tokens x %llu bytes per block, "
			       "%u leases)", L.block_tokens, (unsigned long long)L.token_bytes,
			       L.n_leases);
	size = o->size_bytes ? o->size_bytes : default_size(dir);
	per = L.stride + sizeof(struct arena_block) + 16 + 4 * sizeof(struct arena_pin);
	L.n_blocks = size > L.file_bytes ? (uint32_t)((size - L.file_bytes) / per + 1 > MAX_BLOCKS
					       ? MAX_BLOCKS : (size - L.file_bytes) / per + 1) : 1;
	while (L.n_blocks > 1 && (layout_compute(&L) || L.file_bytes > size))
		L.n_blocks--;
	if (layout_compute(&L) || L.file_bytes > size)
		return fi_fail(FI_EINVAL, "kv arena: %llu bytes cannot hold one block of %llu bytes "
			       "and the tables", (unsigned long long)size,
			       (unsigned long long)L.block_bytes);
	per = o->extent_bytes ? o->extent_bytes : ARENA_EXTENT_BYTES;
	L.extent_blocks = per <= L.stride ? 1 : per / L.stride >= L.n_blocks ? L.n_blocks
										: (uint32_t)(per / L.stride);
	sweep_tmp(dir, fp);
	snprintf(tmp, sizeof tmp, "%s/.%s.kv.%d.%u.tmp", dir, fp, (int)getpid(), seq++);
	a->fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, fi_file_mode(group));
	if (a->fd < 0)
		return fi_fail(FI_EIO, "cannot create '%s': %s", tmp, strerror(errno));
	if (group)
		fchmod(a->fd, fi_file_mode(group)); /* past the umask: the group shares it */
	/* The full size, sparse; then the header, tables and first extent reserved now: a
	 * sparse page on a full tmpfs would fault later, mid-write. */
	n_alloc = L.extent_blocks < L.n_blocks ? L.extent_blocks : L.n_blocks;
	head = L.off_data + (uint64_t)n_alloc * L.stride;
	r = ftruncate(a->fd, (off_t)L.file_bytes) ? errno : 0;
	if (!r)
		r = posix_fallocate(a->fd, 0, (off_t)head);
	if (r == EOPNOTSUPP || r == EINVAL)
		r = 0; /* no fallocate on this file system: sparse it is */
	if (r) {
		arena_unmap(a);
		unlink(tmp);
		return fi_fail(r == ENOSPC ? FI_EFULL : FI_EIO, "cannot create kv arena of %llu "
			       "bytes in '%s': %s", (unsigned long long)head, dir, strerror(r));
	}
	a->len = L.file_bytes;
	m = mmap(NULL, a->len, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0);
	if (m == MAP_FAILED) {
		r = errno;
		arena_unmap(a);
		unlink(tmp);
		return fi_fail(FI_EIO, "cannot map '%s': %s", tmp, strerror(r));
	}
	a->base = m;
	init_file(a, &L, fp, n_alloc);
	r = link(tmp, a->path) ? errno : 0;
	unlink(tmp);
	if (r) {
		arena_unmap(a);
		if (r == EEXIST)
			return FI_EEXIST;
		return fi_fail(FI_EIO, "cannot create '%s': %s", a->path, strerror(r));
	}
	return FI_OK;
}

struct fi_arena *arena_new(void)
{
	struct fi_arena *a = calloc(1, sizeof *a);
	double t = fi_settings()->arena_lock_timeout;
	if (!a)
		return NULL;
	a->fd = -1;
	a->pid = getpid();
	if (proc_start_time(a->pid, &a->start))
		a->start = 0;
	a->lock_ms = ARENA_LOCK_MS;
	if (t > 0) /* FI_ARENA_LOCK_TIMEOUT, in (0, 3600] seconds */
		a->lock_ms = (int)(t * 1000 + 0.5) > 0 ? (int)(t * 1000 + 0.5) : 1;
	return a;
}
