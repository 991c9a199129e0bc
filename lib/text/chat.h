/* chat: renders a model's chat template (a Jinja template from tokenizer_config.json or
 * chat_template.jinja) into the prompt text, as transformers' apply_chat_template(tokenize=False)
 * does, byte for byte.
 *
 * The template runs in a small Jinja interpreter (lib/jinja*.c) configured as transformers
 * configures jinja2: trim_blocks, lstrip_blocks, the sandbox's immutable containers, and the
 * globals raise_exception, strftime_now, namespace, dict and range. Template variables are
 * messages, tools, documents (none), add_generation_prompt, the special tokens (bos_token,
 * eos_token, unk_token, sep_token, pad_token, cls_token, mask_token: those the config sets) and
 * any extra variables the caller passes (they override the special tokens).
 *
 * As transformers does, keys whose value is null are dropped from each message, and a message's
 * reasoning (reasoning_content, thinking or reasoning) is also offered under "thinking" and
 * "reasoning_content".
 *
 * Errors (syntax errors, raise_exception, type errors, limits) come back as fi_err codes with a
 * detail naming the template line: "chat template line 3: System role not supported". */
#ifndef FI_CHAT_H
#define FI_CHAT_H

#include <stddef.h>

#include <jansson.h>

#include "base/err.h"

struct fi_chat;

/* Loads a template. config_json is the text of tokenizer_config.json (may be NULL when
 * template_text is given); template_text is the text of chat_template.jinja or NULL. When both
 * carry a template, template_text wins (as transformers does). tokenizer_config's chat_template
 * may be a string or a list of {"name", "template"}: name picks one (NULL picks "default", or the
 * only one). Special tokens may be strings or {"content": ...} objects.
 * FI_ENOTFOUND when no template is found; FI_EFORMAT (with the line) when it does not parse. */
fi_err fi_chat_load(struct fi_chat **out, const char *config_json, const char *template_text,
		    const char *name);
/* Loads DIR/tokenizer_config.json and DIR/chat_template.jinja (either may be absent). */
fi_err fi_chat_load_dir(struct fi_chat **out, const char *dir, const char *name);
void fi_chat_free(struct fi_chat *c);

/* The special tokens of the config as strings, or NULL when unset. */
const char *fi_chat_bos(const struct fi_chat *c);
const char *fi_chat_eos(const struct fi_chat *c);
/* The template source. */
const char *fi_chat_template(const struct fi_chat *c);

struct fi_chat_opts {
	int add_generation_prompt;
	json_t *tools;  /* a JSON array of tool schemas, or NULL (the template sees none) */
	json_t *extra;  /* a JSON object of extra template variables, or NULL */
	long long now;  /* seconds since the epoch for strftime_now (UTC); 0: $FI_CHAT_NOW when set
			 * (seconds, or YYYY-MM-DD), else the current local time */
	int continue_final_message; /* end the prompt inside the final message (to prefill a
				     * reply); not with add_generation_prompt */
};

/* Renders messages (a JSON array of message objects: role, content, optionally name,
 * tool_calls, ...) into a malloc'd NUL-terminated string; *len (may be NULL) gets its length.
 * opts may be NULL (no tools, no generation prompt). An empty conversation is FI_EINVAL, as
 * apply_chat_template refuses it. */
fi_err fi_chat_render_json(const struct fi_chat *c, json_t *messages, const struct fi_chat_opts *opts,
			   char **out, size_t *len);

/* Renders a request given as JSON text: either an array of messages, or an object with
 * "messages" and optionally "tools", "add_generation_prompt" (overrides the argument),
 * "continue_final_message" and any other keys, which become extra template variables
 * (e.g. "enable_thinking"). */
fi_err fi_chat_render(const struct fi_chat *c, const char *request_json, int add_generation_prompt,
		      char **out, size_t *len);

/* Limits of one render (defaults suit real templates; the fuzzer lowers them). */
struct fi_chat_limits {
	size_t max_output;      /* bytes of rendered text (default 64 MiB) */
	size_t max_memory;      /* bytes of interpreter memory per render (default 512 MiB) */
	long long max_steps;    /* loop iterations plus calls (default 10,000,000) */
	int max_depth;          /* nesting of blocks, macro calls and expressions (default 1000) */
};
void fi_chat_set_limits(struct fi_chat *c, const struct fi_chat_limits *l);

#endif
