/* kv_events: batches of prefix-cache events on a PUB socket, with a replay ROUTER
 * (kv_events.h, fi-kv-events(5)). */
#include <errno.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <zmq.h>

#include "frame.h"
#include "kv_events.h"

struct batch {
	uint64_t seq;
	uint8_t *data;
	size_t len;
};

struct fi_kv_pub {
	void *ctx, *pub, *replay;
	char topic[128], medium[16], ep[256], rep_ep[256];
	uint64_t seq;
	/* the batch being built: its events, packed one after another */
	struct fi_buf ev;
	uint32_t n_ev;
	/* sent batches kept for replay, a ring of FI_KV_PUB_KEEP */
	struct batch keep[FI_KV_PUB_KEEP];
	int n_keep, head;
};

static int buf_write(void *data, const char *b, size_t n)
{
	return fi_buf_append(data, b, n) ? -1 : 0;
}

/* tcp with no host, or "*", binds loopback, as streams do. */
static void bind_addr(const char *ep, char *out, size_t cap)
{
	if (!strncmp(ep, "tcp://", 6) && (ep[6] == ':' || !strncmp(ep + 6, "*:", 2)))
		snprintf(out, cap, "tcp://127.0.0.1%s", strchr(ep + 6, ':'));
	else
		snprintf(out, cap, "%s", ep);
}

fi_err fi_kv_pub_open(struct fi_kv_pub **out, const char *pub, const char *replay,
		      const char *topic, const char *medium)
{
	struct fi_kv_pub *p = calloc(1, sizeof *p);
	char addr[512];
	int zero = 0, hwm = 100000;
	*out = NULL;
	if (!p)
		return fi_fail(FI_ENOMEM, "kv events");
	snprintf(p->topic, sizeof p->topic, "%s", topic ? topic : "");
	snprintf(p->medium, sizeof p->medium, "%s", medium ? medium : "GPU");
	if (!(p->ctx = zmq_ctx_new()) || !(p->pub = zmq_socket(p->ctx, ZMQ_PUB)))
		goto zerr;
	zmq_setsockopt(p->pub, ZMQ_LINGER, &zero, sizeof zero);
	zmq_setsockopt(p->pub, ZMQ_SNDHWM, &hwm, sizeof hwm);
	bind_addr(pub, addr, sizeof addr);
	if (zmq_bind(p->pub, addr)) {
		fi_kv_pub_close(p);
		return fi_fail(FI_EIO, "kv events: cannot bind '%s': %s", addr, zmq_strerror(errno));
	}
	if (replay) {
		if (!(p->replay = zmq_socket(p->ctx, ZMQ_ROUTER)))
			goto zerr;
		zmq_setsockopt(p->replay, ZMQ_LINGER, &zero, sizeof zero);
		bind_addr(replay, addr, sizeof addr);
		if (zmq_bind(p->replay, addr)) {
			fi_kv_pub_close(p);
			return fi_fail(FI_EIO, "kv events: cannot bind '%s': %s", addr, zmq_strerror(errno));
		}
	}
	*out = p;
	return FI_OK;
zerr:
	fi_kv_pub_close(p);
	return fi_fail(FI_EIO, "kv events: zeromq: %s", zmq_strerror(errno));
}

static void pack_str(msgpack_packer *pk, const char *s)
{
	msgpack_pack_str_with_body(pk, s, strlen(s));
}

static void pack_hashes(msgpack_packer *pk, const uint8_t *keys, int n)
{
	msgpack_pack_array(pk, (size_t)n);
	for (int i = 0; i < n; i++)
		msgpack_pack_bin_with_body(pk, keys + 32 * (size_t)i, 32);
}

fi_err fi_kv_pub_stored(struct fi_kv_pub *p, const uint8_t *keys, int n, const uint8_t *parent,
			const uint32_t *tokens, uint32_t block_tokens)
{
	msgpack_packer pk;
	size_t nt = (size_t)n * block_tokens;
	msgpack_packer_init(&pk, &p->ev, buf_write);
	msgpack_pack_array(&pk, 7);
	pack_str(&pk, "BlockStored");
	pack_hashes(&pk, keys, n);
	if (parent)
		msgpack_pack_bin_with_body(&pk, parent, 32);
	else
		msgpack_pack_nil(&pk);
	msgpack_pack_array(&pk, nt);
	for (size_t i = 0; i < nt; i++)
		msgpack_pack_uint32(&pk, tokens[i]);
	msgpack_pack_uint32(&pk, block_tokens);
	msgpack_pack_nil(&pk); /* lora_id */
	pack_str(&pk, p->medium);
	p->n_ev++;
	return FI_OK;
}

fi_err fi_kv_pub_removed(struct fi_kv_pub *p, const uint8_t *key)
{
	msgpack_packer pk;
	msgpack_packer_init(&pk, &p->ev, buf_write);
	msgpack_pack_array(&pk, 3);
	pack_str(&pk, "BlockRemoved");
	pack_hashes(&pk, key, 1);
	pack_str(&pk, p->medium);
	p->n_ev++;
	return FI_OK;
}

fi_err fi_kv_pub_cleared(struct fi_kv_pub *p)
{
	msgpack_packer pk;
	msgpack_packer_init(&pk, &p->ev, buf_write);
	msgpack_pack_array(&pk, 1);
	pack_str(&pk, "AllBlocksCleared");
	p->n_ev++;
	return FI_OK;
}

static void seq_bytes(uint64_t seq, uint8_t b[8])
{
	for (int i = 0; i < 8; i++)
		b[i] = (uint8_t)(seq >> (56 - 8 * i));
}

fi_err fi_kv_pub_flush(struct fi_kv_pub *p)
{
	struct fi_buf pl = {0};
	msgpack_packer pk;
	struct timeval tv;
	struct batch *b;
	uint8_t sb[8];
	if (!p->n_ev)
		return FI_OK;
	gettimeofday(&tv, NULL);
	msgpack_packer_init(&pk, &pl, buf_write);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_double(&pk, (double)tv.tv_sec + tv.tv_usec * 1e-6);
	msgpack_pack_array(&pk, p->n_ev);
	if (fi_buf_append(&pl, p->ev.data, p->ev.len)) {
		fi_buf_free(&pl);
		return fi_fail(FI_ENOMEM, "kv events: batch of %zu bytes", p->ev.len);
	}
	p->ev.len = 0;
	p->n_ev = 0;
	seq_bytes(p->seq, sb);
	/* a subscriber too slow for the high-water mark loses batches and replays them */
	if (zmq_send(p->pub, p->topic, strlen(p->topic), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
		zmq_send(p->pub, sb, 8, ZMQ_SNDMORE);
		zmq_send(p->pub, pl.data, pl.len, 0);
	}
	b = &p->keep[(p->head + p->n_keep) % FI_KV_PUB_KEEP];
	if (p->n_keep == FI_KV_PUB_KEEP) {
		b = &p->keep[p->head];
		free(b->data);
		p->head = (p->head + 1) % FI_KV_PUB_KEEP;
		p->n_keep--;
	}
	b->seq = p->seq++;
	b->data = pl.data; /* the ring owns it now */
	b->len = pl.len;
	p->n_keep++;
	return FI_OK;
}

fi_err fi_kv_pub_poll(struct fi_kv_pub *p)
{
	if (!p->replay)
		return FI_OK;
	for (;;) {
		uint8_t id[256], part[3][16], sb[8];
		int n = 0, more = 1, idn, delim = 0;
		size_t ml = sizeof more;
		uint64_t from = 0;
		if ((idn = zmq_recv(p->replay, id, sizeof id, ZMQ_DONTWAIT)) < 0)
			return FI_OK;
		zmq_getsockopt(p->replay, ZMQ_RCVMORE, &more, &ml);
		int len[3] = {0};
		while (more) {
			int r = zmq_recv(p->replay, n < 3 ? part[n] : part[2], 16, 0);
			if (n < 3)
				len[n] = r;
			n++;
			zmq_getsockopt(p->replay, ZMQ_RCVMORE, &more, &ml);
		}
		/* [id, "", seq] or [id, seq]; anything else is ignored */
		if (n == 2 && len[0] == 0 && len[1] == 8)
			delim = 1;
		else if (!(n == 1 && len[0] == 8))
			continue;
		for (int i = 0; i < 8; i++)
			from = from << 8 | part[delim][i];
		for (int k = 0; k < p->n_keep; k++) {
			struct batch *b = &p->keep[(p->head + k) % FI_KV_PUB_KEEP];
			if (b->seq < from)
				continue;
			seq_bytes(b->seq, sb);
			zmq_send(p->replay, id, (size_t)idn, ZMQ_SNDMORE);
			if (delim)
				zmq_send(p->replay, "", 0, ZMQ_SNDMORE);
			zmq_send(p->replay, sb, 8, ZMQ_SNDMORE);
			zmq_send(p->replay, b->data, b->len, 0);
		}
		seq_bytes(UINT64_MAX, sb); /* -1: the end of the replay */
		zmq_send(p->replay, id, (size_t)idn, ZMQ_SNDMORE);
		if (delim)
			zmq_send(p->replay, "", 0, ZMQ_SNDMORE);
		zmq_send(p->replay, sb, 8, ZMQ_SNDMORE);
		zmq_send(p->replay, "", 0, 0);
	}
}

uint64_t fi_kv_pub_seq(const struct fi_kv_pub *p)
{
	return p->seq;
}

const char *fi_kv_pub_endpoint(struct fi_kv_pub *p)
{
	size_t n = sizeof p->ep;
	if (zmq_getsockopt(p->pub, ZMQ_LAST_ENDPOINT, p->ep, &n))
		return "";
	return p->ep;
}

const char *fi_kv_pub_replay_endpoint(struct fi_kv_pub *p)
{
	size_t n = sizeof p->rep_ep;
	if (!p->replay || zmq_getsockopt(p->replay, ZMQ_LAST_ENDPOINT, p->rep_ep, &n))
		return NULL;
	return p->rep_ep;
}

void fi_kv_pub_close(struct fi_kv_pub *p)
{
	if (!p)
		return;
	if (p->pub)
		zmq_close(p->pub);
	if (p->replay)
		zmq_close(p->replay);
	if (p->ctx)
		zmq_ctx_term(p->ctx);
	for (int k = 0; k < p->n_keep; k++)
		free(p->keep[(p->head + k) % FI_KV_PUB_KEEP].data);
	fi_buf_free(&p->ev);
	free(p);
}
