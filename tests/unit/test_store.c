/* Model store and HF conversion: synthetic checkpoints (every error path), the real
 * stories260K checkpoint, and `-m` resolution. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/settings.h"
#include "model/image.h"
#include "image_synth.h"
#include "model/names.h"
#include "model/safetensors.h"
#include "model/store.h"
#include "util.h"
/* ---- Hugging Face directories ---- */

static const char *const layer_hf[][2] = {
	{"attn_norm", "input_layernorm.weight"}, {"attn_q", "self_attn.q_proj.weight"},
	{"attn_k", "self_attn.k_proj.weight"},   {"attn_v", "self_attn.v_proj.weight"},
	{"attn_o", "self_attn.o_proj.weight"},   {"ffn_norm", "post_attention_layernorm.weight"},
	{"ffn_gate", "mlp.gate_proj.weight"},    {"ffn_up", "mlp.up_proj.weight"},
	{"ffn_down", "mlp.down_proj.weight"},
};

static void hf_name(const char *eng, char *out, size_t outsz)
{
	int l;
	char rest[64];
	if (!strcmp(eng, "tok_embd"))
		snprintf(out, outsz, "model.embed_tokens.weight");
	else if (!strcmp(eng, "out_norm"))
		snprintf(out, outsz, "model.norm.weight");
	else if (!strcmp(eng, "output"))
		snprintf(out, outsz, "lm_head.weight");
	else {
		ck_assert_int_eq(sscanf(eng, "blk.%d.%63s", &l, rest), 2);
		for (size_t i = 0; i < sizeof layer_hf / sizeof layer_hf[0]; i++)
			if (!strcmp(rest, layer_hf[i][0]))
				snprintf(out, outsz, "model.layers.%d.%s", l, layer_hf[i][1]);
	}
}

/* Writes a safetensors file: n tensors, HF names, each of dtype dts[i] with ts[i]'s shape
 * and bytes (f32 data converted for F16/BF16; I8 takes the first numel bytes). */
static void write_st(const char *path, int n, char (*names)[96], const enum fi_dtype *dts,
		     const struct fi_image_src *ts)
{
	char *hdr = malloc(65536);
	size_t hl = 0, off = 0;
	uint64_t len;
	FILE *f = fopen(path, "wb");
	ck_assert_ptr_nonnull(f);
	hl += (size_t)sprintf(hdr + hl, "{\"__metadata__\":{\"format\":\"pt\"}");
	for (int i = 0; i < n; i++) {
		int64_t numel = ts[i].shape[0] * (ts[i].ndim == 2 ? ts[i].shape[1] : 1);
		size_t nb = (size_t)numel * fi_dtype_size(dts[i]);
		hl += (size_t)sprintf(hdr + hl, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%lld", names[i],
				      fi_dtype_name(dts[i]), (long long)ts[i].shape[0]);
		if (ts[i].ndim == 2)
			hl += (size_t)sprintf(hdr + hl, ",%lld", (long long)ts[i].shape[1]);
		hl += (size_t)sprintf(hdr + hl, "],\"data_offsets\":[%zu,%zu]}", off, off + nb);
		off += nb;
	}
	hdr[hl++] = '}';
	while (hl % 8)
		hdr[hl++] = ' ';
	len = hl;
	fwrite(&len, 8, 1, f);
	fwrite(hdr, 1, hl, f);
	for (int i = 0; i < n; i++) {
		int64_t numel = ts[i].shape[0] * (ts[i].ndim == 2 ? ts[i].shape[1] : 1);
		size_t es = fi_dtype_size(dts[i]);
		void *buf = malloc((size_t)numel * es);
		if (fi_dtype_is_compute(dts[i]))
			ck_assert(!fi_convert(buf, dts[i], ts[i].src, FI_DT_F32, (size_t)numel));
		else
			memcpy(buf, ts[i].src, (size_t)numel * es);
		fwrite(buf, es, (size_t)numel, f);
		free(buf);
	}
	ck_assert_int_eq(fclose(f), 0);
	free(hdr);
}

static void write_text(const char *dir, const char *name, const char *text)
{
	char p[600];
	FILE *f;
	snprintf(p, sizeof p, "%s/%s", dir, name);
	f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	ck_assert_int_eq(fclose(f), 0);
}

enum { HF_PLAIN, HF_EXTRAS, HF_I8, HF_UNKNOWN, HF_MISSING, HF_BF16 };

/* A synthetic HF directory of the tiny config under tmpdir/hf, in one of the variants. */
static const char *make_hf(struct synth *s, int variant)
{
	static char dir[512];
	char p[600], names[80][96];
	enum fi_dtype dts[80];
	struct fi_image_src ts[80];
	struct fi_config c = tiny();
	char *cj;
	int n = 0;
	float extra[4] = {1, 2, 3, 4};
	snprintf(dir, sizeof dir, "%s/hf", tmpdir);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	if (variant == HF_EXTRAS)
		c.tie_embeddings = 1;
	cj = fi_config_to_json(&c);
	write_text(dir, "config.json", cj);
	free(cj);
	write_text(dir, "tokenizer.json", "{\"version\":\"1.0\"}");
	synth_make(s, &c, 11);
	for (int i = 0; i < s->n; i++) {
		if (variant == HF_MISSING && !strcmp(s->src[i].name, "blk.1.ffn_up"))
			continue;
		hf_name(s->src[i].name, names[n], sizeof names[n]);
		dts[n] = variant == HF_BF16 ? FI_DT_BF16 : FI_DT_F32;
		if (variant == HF_I8 && i == 4)
			dts[n] = FI_DT_I8;
		ts[n++] = s->src[i];
	}
	if (variant == HF_EXTRAS) {
		/* A rotary buffer (skipped) and a copy of the tied embedding (dropped). */
		snprintf(names[n], sizeof names[n], "model.layers.0.self_attn.rotary_emb.inv_freq");
		ts[n] = (struct fi_image_src){"x", 1, {4}, FI_DT_F32, extra, 0};
		dts[n++] = FI_DT_F32;
		snprintf(names[n], sizeof names[n], "lm_head.weight");
		ts[n] = s->src[0];
		dts[n++] = FI_DT_F32;
	}
	if (variant == HF_UNKNOWN) {
		snprintf(names[n], sizeof names[n], "model.vision_tower.proj.weight");
		ts[n] = (struct fi_image_src){"x", 1, {4}, FI_DT_F32, extra, 0};
		dts[n++] = FI_DT_F32;
	}
	snprintf(p, sizeof p, "%s/model.safetensors", dir);
	write_st(p, n, names, dts, ts);
	return dir;
}

START_TEST(test_convert_hf)
{
	struct synth s;
	struct fi_image *im;
	const struct fi_image_blob *b;
	char out[600];
	const char *dir;
	mk_tmp();
	dir = make_hf(&s, HF_PLAIN);
	snprintf(out, sizeof out, "%s/m.fim", tmpdir);
	ck_assert_msg(!fi_image_convert_hf(dir, out, FI_DT_F32, 0), "%s", fi_errmsg());
	ck_assert_msg(!fi_image_open(out, &im), "%s", fi_errmsg());
	ck_assert_int_eq(im->set.n, s.n);
	for (int i = 0; i < s.n; i++) {
		/* Image order is the engine's expected order. */
		ck_assert_str_eq(im->set.t[i].name, s.src[i].name);
		ck_assert_int_eq(memcmp(im->set.t[i].data, s.data[i], im->set.t[i].nbytes), 0);
	}
	ck_assert_ptr_nonnull(b = fi_image_blob(im, "tokenizer.json"));
	ck_assert_str_eq(b->data, "{\"version\":\"1.0\"}");
	ck_assert_ptr_nonnull(fi_image_blob(im, "config.json"));
	ck_assert_ptr_null(fi_image_blob(im, "chat_template.jinja"));
	ck_assert_ptr_nonnull(b = fi_image_blob(im, "provenance.json"));
	ck_assert_ptr_nonnull(strstr(b->data, "\"source\": \"/"));
	ck_assert_ptr_nonnull(strstr(b->data, "\"created\": \"20"));
	ck_assert_ptr_nonnull(strstr(b->data, "\"source_dtype\": \"F32\""));
	ck_assert_int_eq(fi_image_verify(im), FI_OK);
	fi_image_close(im);
	synth_free(&s);
	rm_tree(tmpdir);
}
END_TEST

START_TEST(test_convert_hf_bf16_source)
{
	/* BF16 weights converted to a bf16 image are copied bit for bit; converted to an f32
	 * image and back they are the same bits. */
	struct synth s;
	struct fi_image *im;
	char out[600];
	const char *dir;
	mk_tmp();
	dir = make_hf(&s, HF_BF16);
	snprintf(out, sizeof out, "%s/m.fim", tmpdir);
	ck_assert_msg(!fi_image_convert_hf(dir, out, FI_DT_BF16, 0), "%s", fi_errmsg());
	ck_assert(!fi_image_open(out, &im));
	for (int i = 0; i < s.n; i++) {
		const uint16_t *h = im->set.t[i].data;
		for (int64_t j = 0; j < fi_tensor_numel(&im->set.t[i]); j++)
			ck_assert_uint_eq(h[j], fi_f32_to_bf16(s.data[i][j]));
	}
	fi_image_close(im);
	synth_free(&s);
	rm_tree(tmpdir);
}
END_TEST

START_TEST(test_convert_hf_extras)
{
	struct synth s;
	struct fi_image *im;
	char out[600];
	const char *dir;
	mk_tmp();
	dir = make_hf(&s, HF_EXTRAS);
	snprintf(out, sizeof out, "%s/m.fim", tmpdir);
	ck_assert_msg(!fi_image_convert_hf(dir, out, FI_DT_BF16, 0), "%s", fi_errmsg());
	ck_assert(!fi_image_open(out, &im));
	ck_assert_int_eq(im->set.n, s.n);
	ck_assert_ptr_null(fi_tensor_find(&im->set, "output"));
	ck_assert(im->config.tie_embeddings);
	fi_image_close(im);
	synth_free(&s);
	rm_tree(tmpdir);
}
END_TEST

static void convert_fails(int variant, fi_err code, const char *what, const char *what2)
{
	struct synth s;
	char out[600];
	const char *dir;
	mk_tmp();
	dir = make_hf(&s, variant);
	snprintf(out, sizeof out, "%s/m.fim", tmpdir);
	ck_assert_int_eq(fi_image_convert_hf(dir, out, FI_DT_BF16, 0), code);
	ck_assert_msg(strstr(fi_errmsg(), what), "expected '%s' in: %s", what, fi_errmsg());
	if (what2)
		ck_assert_msg(strstr(fi_errmsg(), what2), "expected '%s' in: %s", what2, fi_errmsg());
	ck_assert_int_eq(count_entries(tmpdir), 1); /* only hf/ */
	synth_free(&s);
	rm_tree(tmpdir);
}

START_TEST(test_convert_hf_errors)
{
	convert_fails(HF_I8, FI_EUNSUPPORTED, "model.layers.0.self_attn.v_proj.weight", "I8");
	convert_fails(HF_UNKNOWN, FI_EUNSUPPORTED, "model.vision_tower.proj.weight", NULL);
	convert_fails(HF_MISSING, FI_EMISMATCH, "blk.1.ffn_up", "missing");
}
END_TEST

START_TEST(test_store_resolution)
{
	struct synth s;
	struct fi_image *im;
	struct fi_store_entry *e;
	char home[600], want[900], p[700], tmpsub[700];
	const char *dir;
	int n;
	mk_tmp();
	snprintf(home, sizeof home, "%s/home", tmpdir);
	setenv("FI_HOME", home, 1);
	fi_settings_reload();
	ck_assert_str_eq(fi_home(), home);
	ck_assert_int_eq(fi_store_open("nope", &im), FI_ENOTFOUND);
	snprintf(want, sizeof want, "model 'nope' not found in %s/models (fi-load -l lists models)", home);
	ck_assert_str_eq(fi_errmsg(), want);
	ck_assert_int_eq(fi_store_open("no/such/file", &im), FI_ENOTFOUND);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), "'no/such/file'"));
	ck_assert(!fi_store_list(&e, &n));
	ck_assert_int_eq(n, 0);
	/* A directory: converted on the fly, nothing left behind. */
	dir = make_hf(&s, HF_PLAIN);
	ck_assert_msg(!fi_store_open(dir, &im), "%s", fi_errmsg());
	ck_assert_int_eq(im->set.n, s.n);
	ck_assert_int_eq(im->dtype, FI_DT_BF16);
	fi_image_close(im);
	snprintf(tmpsub, sizeof tmpsub, "%s/tmp", home);
	ck_assert_int_eq(count_entries(tmpsub), 0);
	/* A store name and a path. */
	ck_assert(!fi_store_models_dir(p, sizeof p, 1));
	ck_assert(!fi_store_path("tiny", p, sizeof p));
	ck_assert(!fi_image_convert_hf(dir, p, FI_DT_F16, 0));
	ck_assert_msg(!fi_store_open("tiny", &im), "%s", fi_errmsg());
	ck_assert_int_eq(im->dtype, FI_DT_F16);
	fi_image_close(im);
	ck_assert(!fi_store_open(p, &im));
	fi_image_close(im);
	/* A file that is not an image. */
	snprintf(p, sizeof p, "%s/config.json", dir);
	ck_assert_int_eq(fi_store_open(p, &im), FI_EFORMAT);
	ck_assert(!fi_store_list(&e, &n));
	ck_assert_int_eq(n, 1);
	ck_assert_str_eq(e[0].name, "tiny");
	ck_assert_ptr_nonnull(e[0].im);
	fi_store_list_free(e, n);
	ck_assert(!fi_store_remove("tiny"));
	ck_assert_int_eq(fi_store_remove("tiny"), FI_ENOTFOUND);
	ck_assert_int_eq(fi_store_open("tiny", &im), FI_ENOTFOUND);
	ck_assert_int_eq(fi_store_remove("../x"), FI_EINVAL);
	unsetenv("FI_HOME");
	fi_settings_reload();
	snprintf(want, sizeof want, "/dev/shm/fi-%u", (unsigned)geteuid());
	ck_assert_str_eq(fi_home(), want); /* one per user */
	synth_free(&s);
	rm_tree(tmpdir);
}
END_TEST

static int t_in_group(gid_t gid)
{
	gid_t g[256];
	int n = getgroups(256, g);
	if (getegid() == gid)
		return 1;
	for (int i = 0; i < n; i++)
		if (g[i] == gid)
			return 1;
	return 0;
}

/* FI_HOME trust, as ssh's StrictModes: a directory someone else can write is refused, with
 * the reason, by every way in (names, listing, storing, arenas); a group directory (setgid,
 * 2770) is shared on purpose; directories fi makes are 0700, or 2770 in a group directory. */
START_TEST(test_home_trust)
{
	struct fi_image *im;
	struct fi_store_entry *e;
	struct stat st;
	char home[600], p[700], sub[700];
	int n, group;
	mk_tmp();
	snprintf(home, sizeof home, "%s/home", tmpdir);
	setenv("FI_HOME", home, 1);
	fi_settings_reload();
	/* made by fi: 0700, trusted */
	ck_assert_msg(!fi_store_models_dir(p, sizeof p, 1), "%s", fi_errmsg());
	ck_assert_int_eq(stat(home, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0700);
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0700);
	ck_assert_int_eq(fi_dir_trusted(home, &group), FI_OK);
	ck_assert_int_eq(group, 0);
	/* writable by everyone: refused everywhere, naming the directory and the reason */
	ck_assert_int_eq(chmod(home, 0777), 0);
	ck_assert_int_eq(fi_dir_trusted(home, NULL), FI_EINVAL);
	ck_assert_msg(strstr(fi_errmsg(), "is writable by every user (mode 0777)"), "%s", fi_errmsg());
	ck_assert_int_eq(fi_store_open("tiny", &im), FI_EINVAL);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), home));
	ck_assert_int_eq(fi_store_list(&e, &n), FI_EINVAL);
	ck_assert_int_eq(fi_store_path("tiny", p, sizeof p), FI_EINVAL);
	ck_assert_int_eq(fi_store_models_dir(p, sizeof p, 1), FI_EINVAL);
	ck_assert_int_eq(chmod(home, 01777), 0); /* sticky changes nothing: others plant files */
	ck_assert_int_eq(fi_dir_trusted(home, NULL), FI_EINVAL);
	/* writable by its group without being a group directory */
	ck_assert_int_eq(chmod(home, 0770), 0);
	ck_assert_int_eq(fi_dir_trusted(home, NULL), FI_EINVAL);
	ck_assert_msg(strstr(fi_errmsg(), "not a group directory"), "%s", fi_errmsg());
	/* a subdirectory written by others is refused too */
	ck_assert_int_eq(chmod(home, 0700), 0);
	snprintf(sub, sizeof sub, "%s/models", home);
	ck_assert_int_eq(chmod(sub, 0757), 0);
	ck_assert_int_eq(fi_store_list(&e, &n), FI_EINVAL);
	ck_assert_ptr_nonnull(strstr(fi_errmsg(), sub));
	ck_assert_int_eq(chmod(sub, 0700), 0);
	ck_assert(!fi_store_list(&e, &n));
	fi_store_list_free(e, n);
	/* a group directory of one of this process's groups: shared; what fi makes in it is
	 * the group's (2770) */
	ck_assert_int_eq(chown(home, (uid_t)-1, getegid()), 0);
	ck_assert_int_eq(chmod(home, 02770), 0);
	ck_assert_int_eq(fi_dir_trusted(home, &group), FI_OK);
	ck_assert_int_eq(group, 1);
	snprintf(sub, sizeof sub, "%s/kv/x", home);
	ck_assert_msg(!fi_dir_make(sub, &group), "%s", fi_errmsg());
	ck_assert_int_eq(group, 1);
	ck_assert_int_eq(stat(sub, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 02770);
	ck_assert_uint_eq(fi_file_mode(1), 0660);
	ck_assert_uint_eq(fi_file_mode(0), 0600);
	/* another user's directory: refused (as root, which can make one) */
	if (geteuid() == 0) {
		ck_assert_int_eq(chmod(home, 0755), 0);
		ck_assert_int_eq(chown(home, 65534, 65534), 0);
		ck_assert_int_eq(fi_dir_trusted(home, NULL), FI_EINVAL);
		ck_assert_msg(strstr(fi_errmsg(), "belongs to user 65534"), "%s", fi_errmsg());
		ck_assert_int_eq(fi_store_open("tiny", &im), FI_EINVAL);
		/* a group directory of a group this process is not in */
		ck_assert_int_eq(chmod(home, 02770), 0);
		if (!t_in_group(65534)) {
			ck_assert_int_eq(fi_dir_trusted(home, NULL), FI_EINVAL);
			ck_assert_msg(strstr(fi_errmsg(), "which this user is not in"), "%s",
				      fi_errmsg());
		}
		ck_assert_int_eq(chown(home, 0, 0), 0);
	}
	snprintf(p, sizeof p, "%s/nope", tmpdir);
	ck_assert_int_eq(fi_dir_trusted(p, NULL), FI_ENOTFOUND);
	unsetenv("FI_HOME");
	fi_settings_reload();
	rm_tree(tmpdir);
}
END_TEST

/* The real checkpoint: every tensor of the f32 image equals its safetensors source. */
START_TEST(test_convert_stories260k)
{
	const char *dir = fi_test_corpus("corpus/models/stories260K-hf", "stories260K conversion");
	struct fi_st_model *m;
	struct fi_image *im;
	char out[600], eng[64];
	int mapped = 0;
	if (!dir)
		return;
	mk_tmp();
	snprintf(out, sizeof out, "%s/s.fim", tmpdir);
	ck_assert_msg(!fi_image_convert_hf(dir, out, FI_DT_F32, 0), "%s", fi_errmsg());
	ck_assert(!fi_image_open(out, &im));
	ck_assert(!fi_st_open_dir(dir, &m));
	for (int i = 0; i < m->set.n; i++) {
		const struct fi_tensor *t;
		if (fi_name_from_hf(m->set.t[i].name, eng, sizeof eng) != 1)
			continue;
		mapped++;
		ck_assert_ptr_nonnull(t = fi_tensor_find(&im->set, eng));
		ck_assert_uint_eq(t->nbytes, m->set.t[i].nbytes);
		ck_assert_int_eq(memcmp(t->data, m->set.t[i].data, t->nbytes), 0);
	}
	ck_assert_int_eq(mapped, im->set.n);
	ck_assert_int_eq(im->set.n, 47);
	ck_assert_int_eq(fi_image_params(im), 260032);
	ck_assert_uint_eq(fi_image_blob(im, "tokenizer.json")->size, 14787);
	fi_st_close_dir(m);
	fi_image_close(im);
	rm_tree(tmpdir);
}
END_TEST

/* Temporary images of killed writers are swept by listing; a live writer's (locked) is not,
 * nor one created within the last minute (a writer locks it just after creating it). */
START_TEST(test_store_sweeps_stale)
{
	struct fi_store_entry *e;
	char home[600], dead[900], live[900], young[900];
	struct timespec old[2] = {{time(NULL) - 120, 0}, {time(NULL) - 120, 0}};
	int n, fd;
	mk_tmp();
	snprintf(home, sizeof home, "%s/home", tmpdir);
	setenv("FI_HOME", home, 1);
	fi_settings_reload();
	ck_assert(!fi_store_models_dir(dead, sizeof dead, 1));
	snprintf(dead, sizeof dead, "%s/models/.fim-tmp.dead01", home);
	snprintf(live, sizeof live, "%s/models/.fim-tmp.live01", home);
	snprintf(young, sizeof young, "%s/models/.fim-tmp.young1", home);
	fd = open(dead, O_CREAT | O_WRONLY, 0644);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(utimensat(AT_FDCWD, dead, old, 0), 0);
	fd = open(young, O_CREAT | O_WRONLY, 0644);
	ck_assert_int_ge(fd, 0);
	close(fd);
	fd = open(live, O_CREAT | O_WRONLY, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(futimens(fd, old), 0);
	ck_assert_int_eq(flock(fd, LOCK_EX), 0);
	ck_assert(!fi_store_list(&e, &n));
	ck_assert_int_eq(n, 0);
	ck_assert_int_ne(access(dead, F_OK), 0);
	ck_assert_int_eq(access(live, F_OK), 0);
	ck_assert_int_eq(access(young, F_OK), 0);
	close(fd);
	unsetenv("FI_HOME");
	fi_settings_reload();
	rm_tree(tmpdir);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("store");
	TCase *tc = tcase_create("store");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_convert_hf);
	tcase_add_test(tc, test_convert_hf_bf16_source);
	tcase_add_test(tc, test_convert_hf_extras);
	tcase_add_test(tc, test_convert_hf_errors);
	tcase_add_test(tc, test_store_resolution);
	tcase_add_test(tc, test_home_trust);
	tcase_add_test(tc, test_store_sweeps_stale);
	tcase_add_test(tc, test_convert_stories260k);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
