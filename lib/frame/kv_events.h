/* kv_events: a worker's prefix-cache changes published on ZeroMQ in vLLM's KV event shape
 * (fi-kv-events(5)), for KV-aware routers (fi-route, llm-d, Dynamo).
 *
 * Events collect into a batch; fi_kv_pub_flush sends it (once per scheduler step) as the
 * 3-part message [topic, seq (uint64 big-endian), payload] on a PUB socket, payload the
 * msgpack array [ts (float64 seconds since the epoch), events]. Events:
 *   ["BlockStored", [hash...], parent_hash | nil, [token_id...], block_size, nil, medium]
 *   ["BlockRemoved", [hash...], medium]
 *   ["AllBlocksCleared"]
 * hashes are bin 32, fi's block keys (scheduler.h, fi_prefix_block_keys). The last
 * FI_KV_PUB_KEEP batches are kept for the replay socket (a ROUTER): a request
 * [identity, "", seq (8 bytes big-endian)] (the empty part optional, as REQ and DEALER
 * clients send) is answered with one [identity, "", seq, payload] per kept batch from seq
 * on, then [identity, "", -1 (8 bytes), ""] (fi_kv_pub_poll). */
#ifndef FI_KV_EVENTS_H
#define FI_KV_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "base/err.h"

#define FI_KV_PUB_KEEP 1024

struct fi_kv_pub;

/* Binds pub (and replay, NULL: none) as ZeroMQ endpoints (tcp:// binds loopback unless an
 * address is given, as streams do). medium: "GPU" or "CPU", said in every event. */
fi_err fi_kv_pub_open(struct fi_kv_pub **p, const char *pub, const char *replay,
		      const char *topic, const char *medium);
/* Events, into the batch being built. keys are 32 bytes each; parent NULL: none. */
fi_err fi_kv_pub_stored(struct fi_kv_pub *p, const uint8_t *keys, int n, const uint8_t *parent,
			const uint32_t *tokens, uint32_t block_tokens);
fi_err fi_kv_pub_removed(struct fi_kv_pub *p, const uint8_t *key);
fi_err fi_kv_pub_cleared(struct fi_kv_pub *p);
/* Sends the batch (nothing when it is empty) without blocking (PUB drops for slow
 * subscribers, which replay); keeps it for replay. */
fi_err fi_kv_pub_flush(struct fi_kv_pub *p);
/* Answers the replay requests that have arrived. */
fi_err fi_kv_pub_poll(struct fi_kv_pub *p);
/* The next batch's sequence number (the first is 0). */
uint64_t fi_kv_pub_seq(const struct fi_kv_pub *p);
/* The endpoints bound (ports resolved). */
const char *fi_kv_pub_endpoint(struct fi_kv_pub *p);
/* The replay endpoint bound, or NULL without one (told to routers in the hello frame). */
const char *fi_kv_pub_replay_endpoint(struct fi_kv_pub *p);
void fi_kv_pub_close(struct fi_kv_pub *p);

#endif
