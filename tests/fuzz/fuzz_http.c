/* Fuzzes fi-route's HTTP request-body path (lib/route/route_openai.c): any bytes as the body of
 * /v1/completions and of /v1/chat/completions. A body that parses must make a request frame
 * that encodes and decodes back; one that does not must give a status and an error body that
 * is JSON; nothing may crash or leak. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame/frame.h"
#include "route/openai.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	for (int chat = 0; chat < 2; chat++) {
		struct oai_req o;
		struct oai_err e;
		if (!oai_parse((const char *)data, size, chat, &o, &e)) {
			struct fi_buf b = {0};
			struct fi_frame g;
			o.f.id = strdup("fuzz");
			if (chat && !o.f.req.tokens) { /* the front tokenizes the rendered messages */
				o.f.req.tokens = malloc(sizeof *o.f.req.tokens);
				o.f.req.tokens[0] = 1;
				o.f.req.ntokens = 1;
			}
			if (fi_frame_encode(&o.f, &b) || fi_frame_decode(b.data, b.len, NULL, &g))
				abort();
			if (g.req.ntokens != o.f.req.ntokens || g.req.nstop != o.f.req.nstop ||
			    g.req.max_tokens != o.f.req.max_tokens)
				abort();
			fi_frame_free(&g);
			fi_buf_free(&b);
		} else {
			char *s = oai_error_json(&e);
			json_t *j;
			if (e.status < 400 || e.status > 599 || !s || !(j = json_loads(s, 0, NULL)))
				abort();
			json_decref(j);
			free(s);
		}
		oai_req_free(&o);
	}
	return 0;
}
