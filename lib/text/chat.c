/* chat: loads a chat template and its special tokens, builds the variables transformers'
 * apply_chat_template passes, and renders with the interpreter in jinja*.c. */
#define _GNU_SOURCE
#include "chat.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/settings.h"
#include "text/jinja/jinja.h"

static const char *const special_names[] = { "bos_token", "eos_token", "unk_token", "sep_token",
					     "pad_token", "cls_token", "mask_token" };
#define NSPECIAL (sizeof special_names / sizeof *special_names)

struct fi_chat {
	struct jz_template t;
	char *source;
	char *special[NSPECIAL];
	struct fi_chat_limits lim;
};

void fi_chat_free(struct fi_chat *c)
{
	if (!c)
		return;
	jz_arena_free(&c->t.arena);
	free(c->source);
	for (size_t i = 0; i < NSPECIAL; i++)
		free(c->special[i]);
	free(c);
}

const char *fi_chat_bos(const struct fi_chat *c) { return c->special[0]; }
const char *fi_chat_eos(const struct fi_chat *c) { return c->special[1]; }
const char *fi_chat_template(const struct fi_chat *c) { return c->source; }

void fi_chat_set_limits(struct fi_chat *c, const struct fi_chat_limits *l)
{
	if (l->max_output)
		c->lim.max_output = l->max_output;
	if (l->max_memory)
		c->lim.max_memory = l->max_memory;
	if (l->max_steps)
		c->lim.max_steps = l->max_steps;
	if (l->max_depth)
		c->lim.max_depth = l->max_depth;
}

/* tokenizer_config's chat_template: a string, or a list of {"name", "template"}. */
static fi_err pick_template(json_t *ct, const char *name, const char **out)
{
	*out = NULL;
	if (!ct || json_is_null(ct))
		return FI_OK;
	if (json_is_string(ct)) {
		*out = json_string_value(ct);
		return FI_OK;
	}
	if (!json_is_array(ct))
		return fi_fail(FI_EFORMAT, "tokenizer_config: chat_template is neither a string nor a list");
	size_t i;
	json_t *e;
	const char *only = NULL;
	json_array_foreach(ct, i, e) {
		const char *n = json_string_value(json_object_get(e, "name"));
		const char *t = json_string_value(json_object_get(e, "template"));
		if (!n || !t)
			return fi_fail(FI_EFORMAT, "tokenizer_config: chat_template entry %zu lacks name or template", i);
		if (!strcmp(n, name ? name : "default")) {
			*out = t;
			return FI_OK;
		}
		only = json_array_size(ct) == 1 ? t : NULL;
	}
	if (!name && only) {
		*out = only;
		return FI_OK;
	}
	return fi_fail(FI_ENOTFOUND, "tokenizer_config: no chat template named '%s'", name ? name : "default");
}

fi_err fi_chat_load(struct fi_chat **out, const char *config_json, const char *template_text,
		    const char *name)
{
	json_error_t jerr;
	json_t *cfg = NULL;
	const char *src = template_text;
	struct fi_chat *c;
	fi_err e = FI_OK;
	*out = NULL;
	if (config_json) {
		cfg = json_loads(config_json, JSON_DECODE_INT_AS_REAL, &jerr); /* model_max_length can be 1e30 */
		if (!cfg || !json_is_object(cfg)) {
			json_decref(cfg);
			return fi_fail(FI_EFORMAT, "tokenizer_config: line %d: %s", jerr.line,
				       cfg ? "not a JSON object" : jerr.text);
		}
		if (!src && (e = pick_template(json_object_get(cfg, "chat_template"), name, &src))) {
			json_decref(cfg);
			return e;
		}
	}
	if (!src) {
		json_decref(cfg);
		return fi_fail(FI_ENOTFOUND, "no chat template (tokenizer_config has no chat_template and there is no chat_template.jinja)");
	}
	c = calloc(1, sizeof *c);
	if (!c || !(c->source = strdup(src))) {
		free(c);
		json_decref(cfg);
		return fi_fail(FI_ENOMEM, "out of memory");
	}
	for (size_t i = 0; cfg && i < NSPECIAL; i++) {
		json_t *t = json_object_get(cfg, special_names[i]);
		if (json_is_object(t))
			t = json_object_get(t, "content");
		if (json_is_string(t) && !(c->special[i] = strdup(json_string_value(t))))
			e = FI_ENOMEM;
	}
	json_decref(cfg);
	c->lim = (struct fi_chat_limits){ 64u << 20, 512u << 20, 10000000, 1000 };
	if (e) {
		fi_chat_free(c);
		return fi_fail(e, "out of memory");
	}
	struct jz_ctx *ctx = calloc(1, sizeof *ctx);
	if (!ctx) {
		fi_chat_free(c);
		return fi_fail(FI_ENOMEM, "out of memory");
	}
	ctx->max_depth = c->lim.max_depth;
	ctx->max_output = c->lim.max_output;
	c->t.arena.limit = c->lim.max_memory;
	e = jz_parse(&c->t, c->source, strlen(c->source), ctx);
	if (e) {
		fi_fail(e, "chat template line %d: %s", ctx->line, ctx->msg);
		free(ctx);
		fi_chat_free(c);
		return e;
	}
	free(ctx);
	*out = c;
	return FI_OK;
}

static char *slurp(const char *path, fi_err *e)
{
	FILE *f = fopen(path, "rb");
	char *b = NULL;
	long n;
	*e = FI_OK;
	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) ||
	    !(b = malloc((size_t)n + 1)) || fread(b, 1, (size_t)n, f) != (size_t)n) {
		*e = fi_fail(FI_EIO, "cannot read '%s'", path);
		free(b);
		b = NULL;
	} else {
		b[n] = 0;
	}
	fclose(f);
	return b;
}

fi_err fi_chat_load_dir(struct fi_chat **out, const char *dir, const char *name)
{
	char p[4096];
	fi_err e1, e2;
	snprintf(p, sizeof p, "%s/tokenizer_config.json", dir);
	char *cfg = slurp(p, &e1);
	snprintf(p, sizeof p, "%s/chat_template.jinja", dir);
	char *tpl = slurp(p, &e2);
	fi_err e = e1 ? e1 : e2;
	if (!e)
		e = fi_chat_load(out, cfg, tpl, name);
	free(cfg);
	free(tpl);
	if (e)
		fi_fail_ctx(e, "'%s'", dir);
	return e;
}

/* The message as transformers hands it to the template: null-valued keys dropped, reasoning
 * also offered as "thinking" (first) and "reasoning_content". */
static jv prepare_message(struct jz_ctx *c, json_t *m)
{
	static const char *const rf[] = { "reasoning_content", "thinking", "reasoning" };
	jv d = jv_dict(c), r = jv_undef(NULL);
	for (int i = 0; i < 3 && r.k == JV_UNDEF; i++) {
		json_t *x = json_object_get(m, rf[i]);
		if (x && !json_is_null(x))
			r = jv_from_json(c, x);
	}
	if (r.k != JV_UNDEF)
		jv_dset(c, d.d, jv_cstr(c, "thinking"), r);
	const char *k;
	json_t *x;
	json_object_foreach(m, k, x) {
		if (json_is_null(x))
			continue;
		if (r.k != JV_UNDEF && (!strcmp(k, "thinking") || !strcmp(k, "reasoning_content")))
			jv_dset(c, d.d, jv_cstr(c, k), jv_from_json(c, x));
		else
			jv_dappend(c, d.d, jv_cstr(c, k), jv_from_json(c, x));
	}
	if (r.k != JV_UNDEF)
		jv_dset(c, d.d, jv_cstr(c, "reasoning_content"), r);
	return d;
}

static long long env_now(void)
{
	const char *s = fi_settings()->chat_now;
	struct tm tm = { 0 };
	char *end;
	if (!s || !*s)
		return -1;
	long long v = strtoll(s, &end, 10);
	if (!*end)
		return v;
	end = strptime(s, "%Y-%m-%d", &tm);
	if (end && *end == 'T')
		end = strptime(end + 1, "%H:%M:%S", &tm);
	return end && !*end ? (long long)timegm(&tm) : -1;
}

/* continue_final_message: the final message is tagged, rendered, and the text cut at the tag,
 * so the prompt ends inside that message (as apply_chat_template does it). */
#define CONTINUE_TAG "CONTINUE_FINAL_MESSAGE_TAG "

static jv tag_final_message(struct jz_ctx *c, const struct fi_chat *ch, jv msgs)
{
	jv tag = jv_cstr(c, CONTINUE_TAG);
	if (!strstr(ch->source, "content"))
		jz_fail(c, FI_EINVAL, "continue_final_message is set but the chat template does not read \"content\"");
	jv last = msgs.l->v[msgs.l->n - 1], *content = jv_dgets(last.d, "content");
	if (!content)
		jz_fail(c, FI_EINVAL, "continue_final_message is set but the final message has no content");
	if (content->k == JV_LIST) {
		for (size_t i = content->l->n; i-- > 0;) {
			jv blk = content->l->v[i], *text;
			if (blk.k != JV_DICT || !(text = jv_dgets(blk.d, "text")))
				continue;
			if (text->k != JV_STR)
				jz_fail(c, FI_EINVAL, "the final message's text is not a string");
			jv orig = *text;
			struct jbuf b = { 0 };
			jv_str_into(c, &b, orig);
			jv_str_into(c, &b, tag);
			*text = jb_value(c, &b);
			return orig;
		}
		jz_fail(c, FI_EINVAL, "continue_final_message is set but the final message has no text to continue");
	}
	if (content->k != JV_STR)
		jz_fail(c, FI_EINVAL, "the final message's content is not a string");
	jv orig = *content;
	struct jbuf b = { 0 };
	jv_str_into(c, &b, orig);
	jv_str_into(c, &b, tag);
	*content = jb_value(c, &b);
	return orig;
}

static void cut_at_tag(struct jz_ctx *c, char *out, size_t *len, jv orig)
{
	static const char tag[] = CONTINUE_TAG;
	size_t tn = sizeof tag - 2, n = *len; /* the tag without its trailing space */
	jv so = js_strip(c, orig, jv_none, 1, 1);
	const char *loc = NULL, *p = out;
	while ((p = memmem(p, n - (size_t)(p - out), tag, tn))) {
		loc = p;
		p += tn;
	}
	if (!loc || !memmem(out, n, so.s->p, so.s->n))
		jz_fail(c, FI_EINVAL, "continue_final_message is set but the final message does not appear in the rendered chat");
	size_t k = (size_t)(loc - out);
	if (n - k >= tn + 1 && loc[tn] == ' ') {
		*len = k;
	} else {
		jv r = js_strip(c, jv_str(c, out, k), jv_none, 0, 1);
		*len = r.s->n;
	}
	out[*len] = 0;
}

/* The variables of one render, then the render; failures unwind here. */
static fi_err run(struct jz_ctx *c, const struct fi_chat *ch, json_t *messages,
		  const struct fi_chat_opts *o, jv *final, char **out, size_t *len)
{
	if (setjmp(c->jb))
		return fi_fail(c->code, "chat: %s", c->msg);
	jv g = jv_dict(c), msgs = jv_list(c, json_array_size(messages));
	for (size_t i = 0; i < NSPECIAL; i++)
		if (ch->special[i])
			jv_dset(c, g.d, jv_cstr(c, special_names[i]), jv_cstr(c, ch->special[i]));
	if (o->extra) {
		const char *k;
		json_t *x;
		json_object_foreach(o->extra, k, x) {
			if (!strcmp(k, "messages") || !strcmp(k, "tools") || !strcmp(k, "documents") ||
			    !strcmp(k, "add_generation_prompt"))
				jz_fail(c, FI_EINVAL, "extra variable '%s' clashes with a template argument", k);
			jv_dset(c, g.d, jv_cstr(c, k), jv_from_json(c, x));
		}
	}
	size_t i;
	json_t *m;
	json_array_foreach(messages, i, m) {
		if (!json_is_object(m))
			jz_fail(c, FI_EINVAL, "message %zu is not a JSON object", i);
		jv_push(c, msgs, prepare_message(c, m));
	}
	if (o->continue_final_message) {
		if (o->add_generation_prompt)
			jz_fail(c, FI_EINVAL, "continue_final_message and add_generation_prompt are not compatible");
		*final = tag_final_message(c, ch, msgs);
	}
	jv_dset(c, g.d, jv_cstr(c, "messages"), msgs);
	jv_dset(c, g.d, jv_cstr(c, "tools"), o->tools ? jv_from_json(c, o->tools) : jv_none);
	jv_dset(c, g.d, jv_cstr(c, "documents"), jv_none);
	jv_dset(c, g.d, jv_cstr(c, "add_generation_prompt"), jv_bool(o->add_generation_prompt));
	fi_err e = jz_render(&ch->t, c, g, out, len);
	if (e)
		fi_fail(e, "chat template line %d: %s", c->line, c->msg);
	return e;
}

/* The cut for continue_final_message, after a successful render. */
static fi_err finish(struct jz_ctx *c, jv final, char **out, size_t *len)
{
	if (setjmp(c->jb)) {
		free(*out);
		*out = NULL;
		return fi_fail(c->code, "chat: %s", c->msg);
	}
	cut_at_tag(c, *out, len, final);
	return FI_OK;
}

fi_err fi_chat_render_json(const struct fi_chat *ch, json_t *messages, const struct fi_chat_opts *opts,
			   char **out, size_t *len)
{
	static const struct fi_chat_opts none;
	const struct fi_chat_opts *o = opts ? opts : &none;
	struct jz_arena arena = { .limit = ch->lim.max_memory };
	struct jz_ctx *c;
	*out = NULL;
	if (!json_is_array(messages))
		return fi_fail(FI_EINVAL, "chat: messages must be a JSON array");
	if (!json_array_size(messages)) /* as apply_chat_template refuses it */
		return fi_fail(FI_EINVAL, "chat: cannot apply the chat template to an empty conversation");
	if (o->tools && !json_is_array(o->tools))
		return fi_fail(FI_EINVAL, "chat: tools must be a JSON array");
	if (o->extra && !json_is_object(o->extra))
		return fi_fail(FI_EINVAL, "chat: extra variables must be a JSON object");
	if (!(c = calloc(1, sizeof *c)))
		return fi_fail(FI_ENOMEM, "out of memory");
	c->arena = &arena;
	c->max_steps = ch->lim.max_steps;
	c->max_depth = ch->lim.max_depth;
	c->max_output = ch->lim.max_output;
	c->now = o->now ? o->now : env_now();
	jv final = jv_none;
	size_t n = 0;
	fi_err e = run(c, ch, messages, o, &final, out, &n);
	if (!e && o->continue_final_message)
		e = finish(c, final, out, &n);
	if (!e && len)
		*len = n;
	jz_arena_free(&arena);
	free(c);
	return e;
}

fi_err fi_chat_render(const struct fi_chat *c, const char *request_json, int add_generation_prompt,
		      char **out, size_t *len)
{
	json_error_t jerr;
	json_t *req = json_loads(request_json, 0, &jerr), *msgs, *extra = NULL;
	struct fi_chat_opts o = { .add_generation_prompt = add_generation_prompt };
	fi_err e;
	*out = NULL;
	if (!req)
		return fi_fail(FI_EFORMAT, "chat request: line %d: %s", jerr.line, jerr.text);
	if (json_is_array(req)) {
		msgs = req;
	} else if (json_is_object(req) && json_is_array(msgs = json_object_get(req, "messages"))) {
		const char *k;
		json_t *x;
		extra = json_object();
		json_object_foreach(req, k, x) {
			if (!strcmp(k, "messages"))
				continue;
			if (!strcmp(k, "tools"))
				o.tools = json_is_null(x) ? NULL : x;
			else if (!strcmp(k, "add_generation_prompt"))
				o.add_generation_prompt = json_is_true(x);
			else if (!strcmp(k, "continue_final_message"))
				o.continue_final_message = json_is_true(x);
			else if (strcmp(k, "documents"))
				json_object_set(extra, k, x);
		}
		o.extra = extra;
	} else {
		json_decref(req);
		return fi_fail(FI_EFORMAT, "chat request: expected an array of messages or an object with \"messages\"");
	}
	e = fi_chat_render_json(c, msgs, &o, out, len);
	json_decref(extra);
	json_decref(req);
	return e;
}
