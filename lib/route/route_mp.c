/* route_mp: reading the worker-side frames (hello, load, bye, KV events), which are not
 * request frames, straight from msgpack objects. */
#include <string.h>

#include "route_int.h"

int mp_unpack(const void *buf, size_t len, msgpack_unpacked *u)
{
	struct fi_frame_limits lim;
	size_t ext = 0, off = 0;
	fi_frame_limits_default(&lim);
	lim.max_objects = 1u << 22; /* a KV event batch lists every token of its blocks */
	if (fi_frame_scan(buf, len, &lim, &ext) || ext != len)
		return -1;
	msgpack_unpacked_init(u);
	if (msgpack_unpack_next(u, buf, len, &off) != MSGPACK_UNPACK_SUCCESS || off != len) {
		msgpack_unpacked_destroy(u);
		return -1;
	}
	return 0;
}

const msgpack_object *mp_get(const msgpack_object *map, const char *key)
{
	size_t n = strlen(key);
	if (map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object_kv *kv = &map->via.map.ptr[i];
		if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == n &&
		    !memcmp(kv->key.via.str.ptr, key, n))
			return &kv->val;
	}
	return NULL;
}

int mp_str(const msgpack_object *map, const char *key, char *out, size_t cap)
{
	const msgpack_object *o = mp_get(map, key);
	if (!o || o->type != MSGPACK_OBJECT_STR || o->via.str.size >= cap)
		return -1;
	memcpy(out, o->via.str.ptr, o->via.str.size);
	out[o->via.str.size] = 0;
	return 0;
}

int mp_u64(const msgpack_object *map, const char *key, uint64_t *out)
{
	const msgpack_object *o = mp_get(map, key);
	if (!o || o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return -1;
	*out = o->via.u64;
	return 0;
}
