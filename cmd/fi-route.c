/* fi-route: one endpoint in front of many workers. Clients send request frames to its
 * client socket (-i) or OpenAI requests to its HTTP port (--http); workers connect to its
 * worker socket (--workers) and register (fi-frame(5)). Each request goes to the worker whose
 * cost (prompt tokens to compute, given the prefix blocks it holds, plus its load) is lowest.
 * The routing is in lib/route (route.h); --null-worker runs a model-less worker for tests
 * and measurements (fi-route(1)). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "frame/stream.h"
#include "route/route.h"

#include "opt.h"

enum {
	O_WORKERS = OPT_LONG, O_HTTP, O_KEYS, O_CURVE, O_POLICY, O_HTTP_QUEUE, O_MAX_PENDING,
	O_NULL, O_ROUTER, O_NAME, O_NULL_TOKENS, O_TOKEN_MS, O_KV_BLOCKS, O_BLOCK_TOKENS,
	O_MAX_BATCH,
};

int main(int argc, char **argv)
{
	struct cmd_args a;
	struct fi_route_opts o;
	struct fi_null_worker_opts n = {.tokens = 16, .kv_blocks = 4096, .block_tokens = 16,
					.max_batch = 256};
	const char *model = NULL, *in = NULL, *policy = "cost";
	int null = 0, ntok = 16, kvb = 4096, bt = 16, mb = 256;
	struct fi_route *r = NULL;
	struct fi_route_model *m = NULL;
	struct route_http *http = NULL;
	fi_err e;
	char sum[256];
	fi_route_opts_default(&o);
	const struct opt own[] = {
		{'m', NULL, "MODEL", OPT_STR, 0, 0, &model},
		{'i', NULL, "ENDPOINT", OPT_STR, 0, 0, &in},
		{O_WORKERS, "workers", "ENDPOINT", OPT_STR, 0, 0, &o.worker_ep},
		{O_HTTP, "http", "[ADDR:]PORT", OPT_STR, 0, 0, &o.http},
		{O_KEYS, "api-key-file", "FILE", OPT_STR, 0, 0, &o.api_key_file},
		{O_CURVE, "curve-key", "FILE", OPT_STR, 0, 0, &o.curve_key},
		{O_POLICY, "policy", "cost|round-robin", OPT_CHOICE, 0, 0, &policy},
		{O_HTTP_QUEUE, "http-queue", "N", OPT_INT, 1, 1 << 20, &o.http_queue},
		{O_MAX_PENDING, "max-pending", "N", OPT_INT, 1, 1 << 20, &o.max_pending},
		{'v', NULL, NULL, OPT_FLAG, 0, 0, &o.verbose},
		{O_NULL, "null-worker", NULL, OPT_FLAG, 0, 0, &null},
		{O_ROUTER, "router", "ENDPOINT", OPT_STR, 0, 0, &n.router},
		{O_NAME, "name", "NAME", OPT_STR, 0, 0, &n.name},
		{O_NULL_TOKENS, "null-tokens", "N", OPT_INT, 1, 1 << 20, &ntok},
		{O_TOKEN_MS, "token-ms", "MS", OPT_DOUBLE, 0, 1e5, &n.token_ms},
		{O_KV_BLOCKS, "kv-blocks", "N", OPT_INT, 1, 1 << 26, &kvb},
		{O_BLOCK_TOKENS, "block-tokens", "N", OPT_INT, 1, 4096, &bt},
		{O_MAX_BATCH, "max-batch", "N", OPT_INT, 1, 1 << 16, &mb},
		{0},
	};
	static const char *const usage[] = {
		"--workers [-m] [-i] [--http] [--api-key-file] [--curve-key] [--policy] "
		"[--http-queue] [--max-pending] [-v]",
		"--null-worker --router [--name] [--curve-key] [--null-tokens] [--token-ms] "
		"[--kv-blocks] [--block-tokens] [--max-batch]",
		NULL,
	};
	const struct cmd cmd = {.name = "fi-route", .groups = 0, .opts = own, .usage = usage};
	if (cmd_parse(&cmd, &a, argc, argv) != argc)
		usage_error("unexpected operand '%s'", argv[optind]);
	fi_stream_catch_signals();
	if (null) {
		if (!n.router)
			usage_error("--null-worker needs --router ENDPOINT");
		if (o.worker_ep || in || o.http || model)
			usage_error("--null-worker takes only the worker options");
		n.tokens = (uint32_t)ntok;
		n.kv_blocks = (uint32_t)kvb;
		n.block_tokens = (uint32_t)bt;
		n.max_batch = (uint32_t)mb;
		n.curve_key = o.curve_key; /* its client keys, with the router's server-key */
		if (fi_null_worker_run(&n))
			die(EXIT_RUNTIME, NULL);
		/* what the prefix-affinity measurement reads (fi-route(1), NOTES) */
		fprintf(stderr, "fi-route: null worker %s: %llu requests, %llu prefix blocks looked up, "
			"%llu found\n", n.name ? n.name : "", (unsigned long long)n.n_req,
			(unsigned long long)n.lookups, (unsigned long long)n.hits);
		return EXIT_OK;
	}
	if (n.router || n.name || cmd_given(O_NULL_TOKENS) || cmd_given(O_TOKEN_MS) ||
	    cmd_given(O_KV_BLOCKS) || cmd_given(O_BLOCK_TOKENS) || cmd_given(O_MAX_BATCH))
		usage_error("--router, --name, --null-tokens, --token-ms, --kv-blocks, --block-tokens "
			    "and --max-batch are for --null-worker");
	if (!o.worker_ep)
		usage_error("--workers ENDPOINT is required (the socket workers connect to)");
	if (o.http && !model)
		usage_error("--http needs -m MODEL (its tokenizer and chat template)");
	if (!in && !o.http)
		usage_error("nothing to serve: give -i ENDPOINT, --http PORT, or both");
	o.client_ep = in;
	o.policy = !strcmp(policy, "round-robin") ? FI_ROUTE_RR : FI_ROUTE_COST;
	if (model && fi_route_model_open(model, &m))
		die(EXIT_RUNTIME, NULL);
	o.model = m;
	if ((e = fi_route_new(&r, &o))) {
		fi_route_model_close(m);
		die(EXIT_RUNTIME, NULL);
	}
	if (o.http && route_http_start(&http, r, &o)) {
		fi_route_free(r);
		fi_route_model_close(m);
		die(EXIT_RUNTIME, NULL);
	}
	e = fi_route_run(r);
	if (e)
		cmd_error(NULL);
	route_http_stop(http);
	fi_route_summary(r, sum, sizeof sum);
	if (o.verbose)
		fi_info("%s", sum);
	fi_route_free(r);
	fi_route_model_close(m);
	return e ? EXIT_RUNTIME : EXIT_OK;
}
