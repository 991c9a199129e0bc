/* arena: creating, attaching and validating KV arena files; keys; stats; the store of arenas.
 *
 * Creation is race-free without a daemon: the creator builds and initialises the whole file
 * under a private temporary name, then link()s it to its final name, which fails with EEXIST if
 * another process got there first; the loser drops its copy and attaches to the winner's. A
 * file at the final name is therefore always fully initialised. */
#define _GNU_SOURCE
#include "arena_shm.h"
#include "base/log.h"
#include "base/settings.h"

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

#include <openssl/evp.h>

#define DEFAULT_BLOCK_TOKENS 16
#define DEFAULT_LEASES 4096
#define MAX_BLOCKS (1u << 30)

struct layout {
	uint32_t block_tokens, n_blocks, n_index, n_leases, n_pins;
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

static int fp_valid(const char *fp)
{
	size_t i;
	if (!fp)
		return 0;
	for (i = 0; i < FI_ARENA_FP_CHARS; i++)
		if (!((fp[i] >= '0' && fp[i] <= '9') || (fp[i] >= 'a' && fp[i] <= 'f')))
			return 0;
	return fp[i] == 0;
}

static fi_err kv_dir(const char *dir, char *buf, size_t n)
{
	int r;
	if (dir && *dir)
		r = snprintf(buf, n, "%s", dir);
	else
		r = snprintf(buf, n, "%s/kv", fi_settings()->home);
	if (r < 0 || (size_t)r >= n)
		return fi_fail(FI_ERANGE, "kv arena directory name too long");
	return FI_OK;
}

fi_err fi_arena_path(const char *dir, const char *fingerprint, char *buf, size_t n)
{
	char d[PATH_MAX];
	fi_err e;
	int r;
	if (!fp_valid(fingerprint))
		return fi_fail(FI_EINVAL, "kv arena: model fingerprint '%.80s' is not 64 lowercase "
			       "hex characters", fingerprint ? fingerprint : "(null)");
	if ((e = kv_dir(dir, d, sizeof d)))
		return e;
	r = snprintf(buf, n, "%s/%s.kv", d, fingerprint);
	if (r < 0 || (size_t)r >= n)
		return fi_fail(FI_ERANGE, "kv arena path too long");
	return FI_OK;
}

static fi_err mkdirs(const char *path)
{
	char p[PATH_MAX], *s;
	snprintf(p, sizeof p, "%s", path);
	for (s = p + 1; ; s++) {
		if (*s == '/' || !*s) {
			char c = *s;
			*s = 0;
			if (mkdir(p, 0755) && errno != EEXIST)
				return fi_fail(FI_EIO, "cannot create '%s': %s", p, strerror(errno));
			*s = c;
			if (!c)
				break;
		}
	}
	return FI_OK;
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
	if (!fp_valid(hfp) || h->fingerprint[FI_ARENA_FP_CHARS])
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
	    L.off_pins != h->off_pins || L.off_data != h->off_data || L.file_bytes != h->file_bytes)
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

static void unmap(struct fi_arena *a)
{
	if (a->base)
		munmap(a->base, a->len);
	if (a->fd >= 0)
		close(a->fd);
	a->base = NULL;
	a->fd = -1;
}

static fi_err attach_file(struct fi_arena *a, const char *fp, const struct fi_arena_opts *o)
{
	struct stat st;
	void *m;
	fi_err e;
	a->fd = open(a->path, O_RDWR | O_CLOEXEC);
	if (a->fd < 0) {
		if (errno == ENOENT)
			return fi_fail(FI_ENOTFOUND, "kv arena '%s' does not exist", a->path);
		return fi_fail(FI_EIO, "cannot open '%s': %s", a->path, strerror(errno));
	}
	if (fstat(a->fd, &st) || !S_ISREG(st.st_mode) || st.st_size < ARENA_HDR_BYTES) {
		unmap(a);
		return fi_fail(FI_EFORMAT, "kv arena '%s': truncated or not a regular file",
			       a->path);
	}
	a->len = (size_t)st.st_size;
	m = mmap(NULL, a->len, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0);
	if (m == MAP_FAILED) {
		unmap(a);
		return fi_fail(FI_EIO, "cannot map '%s': %s", a->path, strerror(errno));
	}
	a->base = m;
	if ((e = validate(a, fp, o))) {
		unmap(a);
		return e;
	}
	set_views(a);
	return FI_OK;
}

static uint64_t default_size(const char *dir)
{
	long pages = sysconf(_SC_PHYS_PAGES), psz = sysconf(_SC_PAGESIZE);
	uint64_t size = pages > 0 && psz > 0 ? (uint64_t)pages * (uint64_t)psz / 8 : 1ull << 30;
	struct statvfs vf;
	if (!statvfs(dir, &vf) && (uint64_t)vf.f_bavail * vf.f_frsize / 2 < size)
		size = (uint64_t)vf.f_bavail * vf.f_frsize / 2;
	return size;
}

static void init_file(struct fi_arena *a, const struct layout *L, const char *fp, int checksum)
{
	struct arena_hdr *h = (struct arena_hdr *)a->base;
	pthread_mutexattr_t ma;
	uint32_t i;
	h->version = ARENA_VERSION;
	h->hdr_struct_bytes = sizeof *h;
	h->mutex_bytes = sizeof(pthread_mutex_t);
	h->flags = checksum ? ARENA_F_CHECKSUM : 0;
	memcpy(h->fingerprint, fp, FI_ARENA_FP_CHARS);
	h->block_tokens = L->block_tokens;
	h->n_blocks = L->n_blocks;
	h->token_bytes = L->token_bytes;
	h->block_bytes = L->block_bytes;
	h->block_stride = L->stride;
	h->n_index = L->n_index;
	h->n_leases = L->n_leases;
	h->n_pins = L->n_pins;
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
	/* The file is zero-filled: the index starts empty; lists need their links. */
	for (i = 0; i < L->n_blocks; i++) {
		a->blk[i].state = BLK_FREE;
		a->blk[i].owner = NIL;
		a->blk[i].prev = NIL;
		a->blk[i].next = i + 1 < L->n_blocks ? i + 1 : NIL;
		a->blk[i].in_list = IN_FREE;
	}
	h->free_head = 0;
	h->free_count = L->n_blocks;
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
 * hold their full size in memory on a tmpfs forever). */
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

/* Creates the arena at a->path. FI_EEXIST when another process created it first. */
static fi_err create_file(struct fi_arena *a, const char *dir, const char *fp,
			  const struct fi_arena_opts *o)
{
	static unsigned seq;
	struct layout L = {0};
	char tmp[PATH_MAX];
	uint64_t size, per;
	void *m;
	fi_err e;
	int r;
	if (!o || !o->token_bytes)
		return fi_fail(FI_EINVAL, "kv arena '%s' does not exist, and creating it needs the "
			       "KV bytes per token", a->path);
	if ((e = mkdirs(dir)))
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
	sweep_tmp(dir, fp);
	snprintf(tmp, sizeof tmp, "%s/.%s.kv.%d.%u.tmp", dir, fp, (int)getpid(), seq++);
	a->fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (a->fd < 0)
		return fi_fail(FI_EIO, "cannot create '%s': %s", tmp, strerror(errno));
	/* Reserve the space now: a sparse file on a full tmpfs would fault later, mid-write. */
	r = posix_fallocate(a->fd, 0, (off_t)L.file_bytes);
	if (r == EOPNOTSUPP || r == EINVAL)
		r = ftruncate(a->fd, (off_t)L.file_bytes) ? errno : 0;
	if (r) {
		unmap(a);
		unlink(tmp);
		return fi_fail(r == ENOSPC ? FI_EFULL : FI_EIO, "cannot create kv arena of %llu "
			       "bytes in '%s': %s", (unsigned long long)L.file_bytes, dir,
			       strerror(r));
	}
	a->len = L.file_bytes;
	m = mmap(NULL, a->len, PROT_READ | PROT_WRITE, MAP_SHARED, a->fd, 0);
	if (m == MAP_FAILED) {
		r = errno;
		unmap(a);
		unlink(tmp);
		return fi_fail(FI_EIO, "cannot map '%s': %s", tmp, strerror(r));
	}
	a->base = m;
	init_file(a, &L, fp, o->checksum);
	r = link(tmp, a->path) ? errno : 0;
	unlink(tmp);
	if (r) {
		unmap(a);
		if (r == EEXIST)
			return FI_EEXIST;
		return fi_fail(FI_EIO, "cannot create '%s': %s", a->path, strerror(r));
	}
	return FI_OK;
}

static struct fi_arena *arena_new(void)
{
	struct fi_arena *a = calloc(1, sizeof *a);
	if (!a)
		return NULL;
	a->fd = -1;
	a->pid = getpid();
	if (proc_start_time(a->pid, &a->start))
		a->start = 0;
	return a;
}

fi_err fi_arena_open(struct fi_arena **out, const char *fingerprint,
		     const struct fi_arena_opts *opts)
{
	struct fi_arena *a;
	char dir[PATH_MAX];
	fi_err e;
	int tries;
	*out = NULL;
	if ((e = fi_arena_path(opts ? opts->dir : NULL, fingerprint, dir, sizeof dir)))
		return e;
	if (!(a = arena_new()))
		return fi_fail(FI_ENOMEM, "kv arena");
	snprintf(a->path, sizeof a->path, "%s", dir);
	kv_dir(opts ? opts->dir : NULL, dir, sizeof dir);
	for (tries = 0; tries < 5; tries++) {
		e = attach_file(a, fingerprint, opts);
		if (e != FI_ENOTFOUND || (opts && opts->no_create))
			break;
		e = create_file(a, dir, fingerprint, opts);
		if (e != FI_EEXIST)
			break;
	}
	/* Tables damaged by anything but a death under the lock (which the lock reports) are
	 * rebuilt from the block table too, so a damaged file never takes its users down. */
	if (!e && !(e = arena_lock(a))) {
		if (arena_check_locked(a)) {
			fi_warn("%s", fi_errmsg());
			arena_repair(a);
		}
		sweep_locked(a);
		arena_unlock(a);
		fi_clear_error();
	}
	if (e) {
		unmap(a);
		free(a);
		return e;
	}
	*out = a;
	return FI_OK;
}

void fi_arena_close(struct fi_arena *a)
{
	if (!a)
		return;
	while (a->n_leases)
		fi_arena_unlease(a->leases[a->n_leases - 1]);
	free(a->leases);
	unmap(a);
	free(a);
}

uint32_t fi_arena_block_tokens(const struct fi_arena *a)
{
	return a->h->block_tokens;
}

uint64_t fi_arena_block_bytes(const struct fi_arena *a)
{
	return a->h->block_bytes;
}

uint32_t fi_arena_n_blocks(const struct fi_arena *a)
{
	return a->h->n_blocks;
}

const char *fi_arena_file(const struct fi_arena *a)
{
	return a->path;
}

void fi_arena_mapping(const struct fi_arena *a, void **base, size_t *len)
{
	*base = a->base;
	*len = a->len;
}

void *fi_arena_data(const struct fi_arena *a, uint32_t b)
{
	if (b >= a->h->n_blocks)
		return NULL;
	return a->data + (uint64_t)b * a->h->block_stride;
}

/* One block's key: SHA-256("fi-kv-1" || parent || fingerprint || tokens as LE uint32). */
static int key_block(EVP_MD_CTX *ctx, const char *fp, const uint8_t *parent,
		     const uint32_t *tokens, uint32_t n, uint8_t *out)
{
	static const uint8_t zero[FI_ARENA_KEY_BYTES];
	uint8_t buf[256];
	unsigned int len = 0;
	uint32_t i, j;
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(ctx, "fi-kv-1", 7) != 1 ||
	    EVP_DigestUpdate(ctx, parent ? parent : zero, FI_ARENA_KEY_BYTES) != 1 ||
	    EVP_DigestUpdate(ctx, fp, FI_ARENA_FP_CHARS) != 1)
		return -1;
	for (i = 0; i < n; i += sizeof buf / 4) {
		uint32_t m = n - i < sizeof buf / 4 ? n - i : (uint32_t)(sizeof buf / 4);
		for (j = 0; j < m; j++) {
			uint32_t t = tokens[i + j];
			buf[4 * j] = (uint8_t)t;
			buf[4 * j + 1] = (uint8_t)(t >> 8);
			buf[4 * j + 2] = (uint8_t)(t >> 16);
			buf[4 * j + 3] = (uint8_t)(t >> 24);
		}
		if (EVP_DigestUpdate(ctx, buf, 4 * (size_t)m) != 1)
			return -1;
	}
	return EVP_DigestFinal_ex(ctx, out, &len) == 1 && len == FI_ARENA_KEY_BYTES ? 0 : -1;
}

static fi_err chain(const char *fp, const fi_arena_key *parent, const uint32_t *tokens,
		    size_t n, uint32_t block_tokens, fi_arena_key *keys)
{
	EVP_MD_CTX *ctx;
	size_t i, nb;
	if (!fp_valid(fp))
		return fi_fail(FI_EINVAL, "kv arena: model fingerprint '%.80s' is not 64 lowercase "
			       "hex characters", fp ? fp : "(null)");
	if (!block_tokens)
		return fi_fail(FI_EINVAL, "kv arena: block of 0 tokens");
	nb = n / block_tokens;
	if (!nb)
		return FI_OK;
	if (!(ctx = EVP_MD_CTX_new()))
		return fi_fail(FI_ENOMEM, "kv arena: sha-256 context");
	for (i = 0; i < nb; i++) {
		const uint8_t *par = i ? keys[i - 1].b : parent ? parent->b : NULL;
		if (key_block(ctx, fp, par, tokens + i * block_tokens, block_tokens, keys[i].b)) {
			EVP_MD_CTX_free(ctx);
			return fi_fail(FI_EIO, "kv arena: sha-256 failed");
		}
	}
	EVP_MD_CTX_free(ctx);
	return FI_OK;
}

fi_err fi_arena_chain_keys(const char *fingerprint, const uint32_t *tokens, size_t n,
			   uint32_t block_tokens, fi_arena_key *keys_out)
{
	return chain(fingerprint, NULL, tokens, n, block_tokens, keys_out);
}

fi_err fi_arena_key_next(const char *fingerprint, const fi_arena_key *parent,
			 const uint32_t *tokens, uint32_t block_tokens, fi_arena_key *out)
{
	return chain(fingerprint, parent, tokens, block_tokens, block_tokens, out);
}

void fi_arena_key_hex(const fi_arena_key *k, char out[2 * FI_ARENA_KEY_BYTES + 1])
{
	static const char hex[] = "0123456789abcdef";
	int i;
	for (i = 0; i < FI_ARENA_KEY_BYTES; i++) {
		out[2 * i] = hex[k->b[i] >> 4];
		out[2 * i + 1] = hex[k->b[i] & 15];
	}
	out[2 * FI_ARENA_KEY_BYTES] = 0;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

fi_err fi_arena_key_parse(const char *hex, fi_arena_key *out)
{
	int i;
	for (i = 0; i < 2 * FI_ARENA_KEY_BYTES; i++)
		if (hexval(hex[i]) < 0)
			break;
	if (i != 2 * FI_ARENA_KEY_BYTES || hex[i])
		return fi_fail(FI_EFORMAT, "kv block key '%.80s' is not 64 hex characters", hex);
	for (i = 0; i < FI_ARENA_KEY_BYTES; i++)
		out->b[i] = (uint8_t)(hexval(hex[2 * i]) << 4 | hexval(hex[2 * i + 1]));
	return FI_OK;
}

fi_err arena_attach_path(const char *path, struct fi_arena **out)
{
	struct fi_arena *a = arena_new();
	fi_err e;
	*out = NULL;
	if (!a)
		return fi_fail(FI_ENOMEM, "kv arena");
	snprintf(a->path, sizeof a->path, "%s", path);
	if ((e = attach_file(a, NULL, NULL))) {
		free(a);
		return e;
	}
	*out = a;
	return FI_OK;
}

fi_err arena_kv_dir(const char *dir, char *buf, size_t n)
{
	return kv_dir(dir, buf, n);
}
