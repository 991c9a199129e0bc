/* route_workers: the worker registry (a worker joins with its hello, reports its load,
 * leaves), the choice of a worker for a request, and the prefix blocks each worker holds,
 * from its KV events or, until they come, from what the router sent it. What happens to a
 * leaving worker's requests is route_req.c's, which calls in here. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "base/log.h"
#include "base/settings.h"
#include "route_int.h"

static void worker_free(struct rworker *w)
{
	if (w->sub)
		zmq_close(w->sub);
	if (w->rep)
		zmq_close(w->rep);
	kset_clear(&w->held);
	rmap_free(&w->held.map);
	for (size_t i = 0; i < w->hmap.cap; i++)
		free(w->hmap.slot[i].val);
	rmap_free(&w->hmap);
	free(w);
}

/* w leaves the table and is freed; its requests are gone already (route_worker_dead). */
void route_worker_remove(struct fi_route *r, struct rworker *w)
{
	int i;
	rmap_del(&r->by_ident, w->ident, w->ilen);
	for (i = 0; i < r->nw && r->w[i] != w; i++)
		;
	if (i < r->nw) {
		memmove(&r->w[i], &r->w[i + 1], sizeof *r->w * (size_t)(r->nw - i - 1));
		r->nw--;
	}
	worker_free(w);
}

void route_worker_hello(struct fi_route *r, const uint8_t *ident, size_t ilen, int fd,
			const msgpack_object *m)
{
	struct rworker *w;
	const msgpack_object *fp = mp_get(m, "fingerprint"), *kr = mp_get(m, "kv_root");
	uint64_t v;
	char ep[256] = "";
	if (r->nw == ROUTE_MAX_WORKERS || ilen > sizeof w->ident) {
		fi_warn("worker refused: %d workers already", r->nw);
		return;
	}
	if (!(w = calloc(1, sizeof *w)))
		return;
	if (mp_str(m, "id", w->name, sizeof w->name))
		snprintf(w->name, sizeof w->name, "worker-%d", r->nw);
	if (mp_str(m, "role", w->role, sizeof w->role))
		strcpy(w->role, "decode");
	memcpy(w->ident, ident, ilen);
	w->ilen = ilen;
	w->fd = fd;
	w->last_seen = route_now_ms();
	if (fp && fp->type == MSGPACK_OBJECT_BIN && fp->via.bin.size == 32)
		memcpy(w->fp, fp->via.bin.ptr, 32);
	/* the root of its block keys: kv_root when it says (fi-decode does: the scheduler's
	 * root), else the fingerprint (the null worker) */
	if (kr && kr->type == MSGPACK_OBJECT_BIN && kr->via.bin.size == 32) {
		memcpy(w->kroot, kr->via.bin.ptr, 32);
		w->own_keys = 1;
	} else
		memcpy(w->kroot, w->fp, 32);
	for (int i = 0; i < 32; i++)
		snprintf(w->root + 2 * i, 3, "%02x", w->kroot[i]);
	w->block_tokens = !mp_u64(m, "block_tokens", &v) && v && v <= 1u << 16 ? (uint32_t)v : 16;
	w->kv_blocks = !mp_u64(m, "kv_blocks", &v) && v && v <= 1u << 28 ? (uint32_t)v : 4096;
	w->max_batch = !mp_u64(m, "max_batch", &v) && v && v <= 1u << 20 ? (uint32_t)v : 64;
	w->load.kv_total = w->kv_blocks;
	w->recent_at = r->n_sent;
	kset_init(&w->held, w->kv_blocks);
	if (!mp_str(m, "kv_events", ep, sizeof ep) && *ep) {
		int zero = 0, one = 1;
		w->sub = zmq_socket(r->ctx, ZMQ_SUB);
		if (w->sub && strstr(ep, "://[")) /* an IPv6 address */
			zmq_setsockopt(w->sub, ZMQ_IPV6, &one, sizeof one);
		if (w->sub && (zmq_setsockopt(w->sub, ZMQ_LINGER, &zero, sizeof zero) ||
			       zmq_setsockopt(w->sub, ZMQ_SUBSCRIBE, "", 0) || zmq_connect(w->sub, ep))) {
			fi_warn("worker %s: cannot subscribe to its KV events at '%s': %s", w->name, ep,
				zmq_strerror(zmq_errno()));
			zmq_close(w->sub);
			w->sub = NULL;
		}
	}
	if (w->sub && !mp_str(m, "kv_events_replay", ep, sizeof ep) && *ep) {
		int zero = 0, one = 1;
		w->rep = zmq_socket(r->ctx, ZMQ_DEALER);
		if (w->rep && strstr(ep, "://["))
			zmq_setsockopt(w->rep, ZMQ_IPV6, &one, sizeof one);
		if (w->rep && (zmq_setsockopt(w->rep, ZMQ_LINGER, &zero, sizeof zero) ||
			       zmq_connect(w->rep, ep))) {
			fi_warn("worker %s: cannot connect to its KV event replay at '%s': %s", w->name,
				ep, zmq_strerror(zmq_errno()));
			zmq_close(w->rep);
			w->rep = NULL;
		}
	}
	if (rmap_put(&r->by_ident, ident, ilen, w)) {
		worker_free(w);
		return;
	}
	r->w[r->nw++] = w;
	if (r->o.verbose)
		fi_info("worker %s joined (%s, %u KV blocks of %u tokens, batch %u)", w->name, w->role,
		       w->kv_blocks, w->block_tokens, w->max_batch);
}

void route_worker_load(struct rworker *w, const msgpack_object *m)
{
	struct rload *l = &w->load;
	mp_u64(m, "queued", &l->queued);
	mp_u64(m, "queued_tokens", &l->queued_tokens);
	mp_u64(m, "running", &l->running);
	mp_u64(m, "running_tokens", &l->running_tokens);
	mp_u64(m, "kv_used", &l->kv_used);
	mp_u64(m, "kv_total", &l->kv_total);
	mp_u64(m, "prefix_hits", &l->prefix_hits);
	mp_u64(m, "prefix_lookups", &l->prefix_lookups);
}

/* ---- choosing a worker ---- */

static int has_room(const struct rworker *w)
{
	/* twice its batch: a queue as deep as what it runs keeps it busy between our sends */
	return w->inflight < 2 * w->max_batch;
}

/* Leading blocks of q's prompt that w holds. */
static uint32_t hits(const struct rworker *w, const struct rreq *q)
{
	uint32_t i = 0;
	while (i < q->nkeys && kset_has(&w->held, &q->keys[i]))
		i++;
	return i;
}

/* Prompt tokens w has to compute before q: its queue as it reports it, or what we sent it
 * less what it held, when that is more (its load frame lags our sends by up to 100 ms).
 * Cached prompt tokens cost nothing, so they are not load. */
static uint64_t load_tokens(const struct rworker *w)
{
	uint64_t rep = w->load.queued_tokens;
	return rep > w->inflight_tokens ? rep : w->inflight_tokens;
}

/* The work a worker was given lately: prompt tokens it had to compute plus tokens it
 * generated, halved every RECENT_HALF requests dispatched (to any worker). The load above
 * only sees what is in flight; when requests are short (few in flight, each done within a
 * step) it is 0 on every worker most of the time, and each new prefix would go to the
 * first worker of the table, which then holds more of the prefixes and takes more of the
 * requests for good. The recent work spreads new prefixes evenly, and a worker that took
 * much more than the others lately loses its prefix bonus (a second copy is computed
 * elsewhere) once the excess passes the bonus. */
#define RECENT_HALF 256.0

static double recent(const struct fi_route *r, const struct rworker *w)
{
	uint64_t age = r->n_sent - w->recent_at;
	return age ? w->recent * exp2(-(double)age / RECENT_HALF) : w->recent;
}

void route_note_work(struct fi_route *r, struct rworker *w, double tokens)
{
	w->recent = recent(r, w) + tokens;
	w->recent_at = r->n_sent;
}

struct rworker *route_pick(struct fi_route *r, struct rreq *q)
{
	struct rworker *best = NULL;
	double best_cost = 0, least = -1, rec[ROUTE_MAX_WORKERS];
	if (!r->nw)
		return NULL;
	if (q->session[0]) {
		struct rworker *w = rmap_get(&r->sessions, q->session, strlen(q->session));
		for (int i = 0; i < r->nw; i++)
			if (r->w[i] == w && has_room(w))
				return w;
	}
	if (r->o.policy == FI_ROUTE_RR) {
		for (int k = 0; k < r->nw; k++) {
			struct rworker *w = r->w[(r->rr + (unsigned)k) % (unsigned)r->nw];
			if (has_room(w)) {
				r->rr = (r->rr + (unsigned)k + 1) % (unsigned)r->nw;
				return w;
			}
		}
		return NULL;
	}
	for (int i = 0; i < r->nw; i++) {
		rec[i] = recent(r, r->w[i]);
		if (least < 0 || rec[i] < least)
			least = rec[i];
	}
	for (int i = 0; i < r->nw; i++) {
		struct rworker *w = r->w[i];
		if (!has_room(w))
			continue;
		/* cost in tokens: the prompt tokens w must compute (its cached prefix is free)
		 * plus the tokens already waiting on it plus what it took lately beyond the
		 * least busy worker; computing weighs double, since a prefix computed twice
		 * also takes a second copy of pool space */
		uint64_t cached = (uint64_t)hits(w, q) * w->block_tokens;
		double miss = q->ntokens > cached ? (double)(q->ntokens - cached) : 0;
		double cost = 2 * miss + (double)load_tokens(w) + (rec[i] - least);
		if (!best || cost < best_cost) {
			best = w;
			best_cost = cost;
		}
	}
	return best;
}

/* q goes to w: the blocks of its prompt are in w's pool now (until its KV events say). */
void route_note_sent(struct fi_route *r, struct rworker *w, struct rreq *q)
{
	uint32_t h = hits(w, q);
	uint64_t cached = (uint64_t)h * w->block_tokens;
	q->miss_tokens = q->ntokens > cached ? (uint32_t)(q->ntokens - cached) : 0;
	w->hit_blocks += h;
	w->lookup_blocks += q->nkeys;
	r->n_sent++;
	route_note_work(r, w, q->miss_tokens);
	if (!w->events)
		for (uint32_t i = 0; i < q->nkeys; i++)
			kset_touch(&w->held, &q->keys[i]);
	if (q->session[0])
		rmap_put(&r->sessions, q->session, strlen(q->session), w);
}

/* ---- KV events (fi-kv-events(5), vLLM's KVEventBatch) ----
 * Blocks are mapped to our own keys through their token ids and parents, so our matching
 * holds whatever root the worker's chain starts from. */

static void stored(struct rworker *w, const msgpack_object *ev)
{
	const msgpack_object *a = ev->via.array.ptr, *hs, *toks;
	fi_arena_key parent, key;
	int have_parent = 0;
	uint32_t bs;
	if (w->own_keys && ev->via.array.size >= 2 && a[1].type == MSGPACK_OBJECT_ARRAY) {
		/* its hashes are our keys (same root, same chain): no mapping needed, and a
		 * block whose parent we missed still counts */
		for (uint32_t i = 0; i < a[1].via.array.size; i++) {
			const msgpack_object *h = &a[1].via.array.ptr[i];
			fi_arena_key k;
			if (h->type != MSGPACK_OBJECT_BIN || h->via.bin.size != sizeof k.b)
				return;
			memcpy(k.b, h->via.bin.ptr, sizeof k.b);
			kset_touch(&w->held, &k);
		}
		return;
	}
	if (ev->via.array.size < 5 || a[1].type != MSGPACK_OBJECT_ARRAY ||
	    a[3].type != MSGPACK_OBJECT_ARRAY || a[4].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    !a[4].via.u64 || a[4].via.u64 > 1u << 16)
		return;
	hs = &a[1];
	toks = &a[3];
	bs = (uint32_t)a[4].via.u64;
	if (a[2].type == MSGPACK_OBJECT_BIN && a[2].via.bin.size == 32) {
		fi_arena_key *p = rmap_get(&w->hmap, a[2].via.bin.ptr, 32);
		if (!p)
			return; /* its parent was never seen: we cannot name these blocks */
		parent = *p;
		have_parent = 1;
	}
	if (toks->via.array.size < (uint64_t)hs->via.array.size * bs)
		return;
	for (uint32_t i = 0; i < hs->via.array.size; i++) {
		const msgpack_object *h = &hs->via.array.ptr[i];
		uint32_t t[bs > 4096 ? 1 : 4096];
		fi_arena_key *copy;
		if (h->type != MSGPACK_OBJECT_BIN || h->via.bin.size != 32 || bs > 4096)
			return;
		for (uint32_t j = 0; j < bs; j++) {
			const msgpack_object *o = &toks->via.array.ptr[(size_t)i * bs + j];
			if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER || o->via.u64 > UINT32_MAX)
				return;
			t[j] = (uint32_t)o->via.u64;
		}
		if (fi_arena_key_next(w->root, have_parent ? &parent : NULL, t, bs, &key))
			return;
		if (!(copy = malloc(sizeof *copy)))
			return;
		*copy = key;
		free(rmap_get(&w->hmap, h->via.bin.ptr, 32));
		if (rmap_put(&w->hmap, h->via.bin.ptr, 32, copy)) {
			free(copy);
			return;
		}
		kset_touch(&w->held, &key);
		parent = key;
		have_parent = 1;
	}
}

static void removed(struct rworker *w, const msgpack_object *ev)
{
	const msgpack_object *hs = &ev->via.array.ptr[1];
	if (ev->via.array.size < 2 || hs->type != MSGPACK_OBJECT_ARRAY)
		return;
	for (uint32_t i = 0; i < hs->via.array.size; i++) {
		const msgpack_object *h = &hs->via.array.ptr[i];
		fi_arena_key *k;
		if (h->type != MSGPACK_OBJECT_BIN || h->via.bin.size != 32)
			continue;
		if (w->own_keys) {
			fi_arena_key key;
			memcpy(key.b, h->via.bin.ptr, sizeof key.b);
			kset_remove(&w->held, &key);
			continue;
		}
		if ((k = rmap_del(&w->hmap, h->via.bin.ptr, 32))) {
			kset_remove(&w->held, k);
			free(k);
		}
	}
}

static void cleared(struct rworker *w)
{
	for (size_t i = 0; i < w->hmap.cap; i++)
		free(w->hmap.slot[i].val);
	rmap_free(&w->hmap);
	kset_clear(&w->held);
}

/* One batch's payload, [ts, events, ...] (fi-kv-events(5)). */
static void apply_batch(struct rworker *w, const void *p, size_t n)
{
	msgpack_unpacked u;
	if (mp_unpack(p, n, &u))
		return;
	const msgpack_object *b = &u.data;
	if (b->type == MSGPACK_OBJECT_ARRAY && b->via.array.size >= 2 &&
	    b->via.array.ptr[1].type == MSGPACK_OBJECT_ARRAY) {
		const msgpack_object *evs = &b->via.array.ptr[1];
		if (!w->events) { /* events now say what it holds */
			w->events = 1;
			cleared(w);
		}
		for (uint32_t i = 0; i < evs->via.array.size; i++) {
			const msgpack_object *ev = &evs->via.array.ptr[i];
			const msgpack_object *tag;
			if (ev->type != MSGPACK_OBJECT_ARRAY || !ev->via.array.size)
				continue;
			tag = &ev->via.array.ptr[0];
			if (tag->type != MSGPACK_OBJECT_STR)
				continue;
			if (tag->via.str.size == 11 && !memcmp(tag->via.str.ptr, "BlockStored", 11))
				stored(w, ev);
			else if (tag->via.str.size == 12 && !memcmp(tag->via.str.ptr, "BlockRemoved", 12))
				removed(w, ev);
			else if (tag->via.str.size == 16 && !memcmp(tag->via.str.ptr, "AllBlocksCleared", 16))
				cleared(w);
		}
	}
	msgpack_unpacked_destroy(&u);
}

static uint64_t seq_of(zmq_msg_t *m)
{
	const uint8_t *s = zmq_msg_data(m);
	uint64_t seq = 0;
	for (int i = 0; i < 8; i++)
		seq = seq << 8 | s[i];
	return seq;
}

/* Up to 3 parts of one message on sock; the count read (the rest closed). */
static int recv_parts(void *sock, zmq_msg_t part[3])
{
	int n = 0, more = 1;
	while (more) {
		zmq_msg_t m;
		zmq_msg_init(&m);
		if (zmq_msg_recv(&m, sock, ZMQ_DONTWAIT) < 0) {
			zmq_msg_close(&m);
			break;
		}
		more = zmq_msg_more(&m);
		if (n < 3)
			part[n++] = m;
		else
			zmq_msg_close(&m);
	}
	return n;
}

/* One message on w's SUB socket: [topic, seq (8 bytes big-endian), payload]. A seq past the
 * one expected means batches were lost (the PUB drops for a slow subscriber, and the first
 * ones go before we subscribe): they are asked of its replay socket, from the first missing
 * up to this one, and applied when they come (after this batch: the few blocks stored and
 * removed in between may be misjudged until they are used again). */
void route_kv_event(struct fi_route *r, struct rworker *w)
{
	zmq_msg_t part[3];
	int n = recv_parts(w->sub, part);
	int drop = fi_settings()->route_kv_drop;
	if (n == 3 && zmq_msg_size(&part[1]) == 8 && drop && ++w->ev_recv % (unsigned)drop == 0)
		n = -n; /* FI_ROUTE_KV_DROP: as if lost */
	if (n == 3 && zmq_msg_size(&part[1]) == 8) {
		uint64_t seq = seq_of(&part[1]);
		if (seq > w->ev_seq && w->rep && !w->replaying) {
			uint8_t sb[8];
			for (int i = 0; i < 8; i++)
				sb[i] = (uint8_t)(w->ev_seq >> (56 - 8 * i));
			if (zmq_send(w->rep, "", 0, ZMQ_SNDMORE | ZMQ_DONTWAIT) == 0 &&
			    zmq_send(w->rep, sb, 8, ZMQ_DONTWAIT) == 8) {
				w->replaying = 1;
				w->replay_to = seq;
				w->replay_t = route_now_ms();
			}
		} else if (seq > w->ev_seq && !w->rep && r->o.verbose) {
			fi_info("worker %s: KV event batches %llu to %llu lost (no replay socket)", w->name,
				(unsigned long long)w->ev_seq, (unsigned long long)seq - 1);
		}
		apply_batch(w, zmq_msg_data(&part[2]), zmq_msg_size(&part[2]));
		w->ev_batches++;
		if (seq >= w->ev_seq)
			w->ev_seq = seq + 1;
	}
	for (int i = 0; i < (n < 0 ? -n : n); i++)
		zmq_msg_close(&part[i]);
}

/* One message on w's replay DEALER: ["", seq, payload], the last with seq -1. */
void route_kv_replay(struct fi_route *r, struct rworker *w)
{
	zmq_msg_t part[3];
	int n = recv_parts(w->rep, part);
	(void)r;
	if (n >= 2 && zmq_msg_size(&part[n - 2]) == 8) {
		uint64_t seq = seq_of(&part[n - 2]);
		if (seq == UINT64_MAX) {
			w->replaying = 0;
		} else if (w->replaying && seq < w->replay_to) {
			apply_batch(w, zmq_msg_data(&part[n - 1]), zmq_msg_size(&part[n - 1]));
			w->ev_batches++;
			w->ev_replayed++;
		}
	}
	for (int i = 0; i < n; i++)
		zmq_msg_close(&part[i]);
}
