/* libFuzzer target: chat templates. The input is a template, optionally followed by a NUL byte
 * and a chat request (JSON: messages, or an object with messages, tools and variables; without
 * one, a fixed conversation with and without the generation prompt, and one that continues a
 * partial assistant reply). Any input either renders or fails with an error naming the
 * template line; it never crashes, and the limits (steps, output, memory, nesting) keep every
 * run short. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "text/chat.h"

static const char default_request[] =
	"{\"messages\": [{\"role\": \"system\", \"content\": \"sys\"},"
	" {\"role\": \"user\", \"content\": \"h\\u00e9llo\"},"
	" {\"role\": \"assistant\", \"content\": \"<think>t</think>ok\", \"tool_calls\":"
	" [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"arguments\": {\"a\": [1, 2.5, null]}}}]},"
	" {\"role\": \"tool\", \"content\": \"{}\"}],"
	" \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"f\", \"parameters\":"
	" {\"type\": \"object\", \"properties\": {\"a\": {\"type\": \"array\"}}}}}],"
	" \"enable_thinking\": false}";

/* The same conversation, ending inside a partial assistant reply. */
static const char continue_request[] =
	"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"},"
	" {\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"Hel\"}]}],"
	" \"continue_final_message\": true}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *nul = memchr(data, 0, size);
	size_t tlen = nul ? (size_t)(nul - (const char *)data) : size;
	char *tpl = malloc(tlen + 1), *req = NULL, *out = NULL;
	struct fi_chat *c = NULL;
	struct fi_chat_limits lim = { .max_output = 1 << 20, .max_memory = 64 << 20,
				      .max_steps = 200000, .max_depth = 100 };
	if (!tpl)
		return 0;
	memcpy(tpl, data, tlen);
	tpl[tlen] = 0;
	if (nul) {
		size_t rlen = size - tlen - 1;
		req = malloc(rlen + 1);
		if (!req) {
			free(tpl);
			return 0;
		}
		memcpy(req, nul + 1, rlen);
		req[rlen] = 0;
	}
	if (fi_chat_load(&c, "{\"bos_token\": \"<s>\", \"eos_token\": \"</s>\"}", tpl, NULL) == FI_OK) {
		fi_chat_set_limits(c, &lim);
		for (int run = 0; run < 3; run++) {
			const char *r = req ? req : run == 2 ? continue_request : default_request;
			if (req && run == 2)
				break;
			if (fi_chat_render(c, r, run == 1, &out, NULL) == FI_OK) {
				if (!out)
					abort();
				free(out);
				out = NULL;
			}
		}
		fi_chat_free(c);
	}
	free(tpl);
	free(req);
	return 0;
}
