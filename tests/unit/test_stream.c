/* Streams: frames through a pipe (fork), inproc://, ipc:// and tcp://127.0.0.1 (PUSH/PULL),
 * fan-in and fan-out with eos, a slow consumer bounded by the high-water mark, bad frames
 * over ZeroMQ, interruption, CURVE, and the pipe throughput in token frames per second. */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>

#include "frame/frame.h"
#include "base/log.h"
#include "frame/stream.h"
#include "util.h"

static fi_err send_tokens(struct fi_stream *s, const char *id, uint32_t first, uint32_t n)
{
	struct fi_frame f;
	fi_frame_init(&f, FI_FRAME_TOKEN);
	f.id = (char *)id;
	for (uint32_t i = 0; i < n; i++) {
		fi_err e;
		f.tok.token = first + i;
		f.tok.index = i;
		f.tok.text = "ab";
		f.tok.text_len = 2;
		if ((e = fi_stream_write(s, &f)))
			return e;
	}
	return fi_stream_flush(s);
}

/* Reads until EOS; checks that each id's indexes arrive in order; returns the count. */
static long drain(struct fi_stream *s, long *bad)
{
	long n = 0;
	*bad = 0;
	for (;;) {
		struct fi_frame f;
		fi_err e = fi_stream_read(s, &f);
		if (e) {
			(*bad)++;
			fi_frame_free(&f);
			if (fi_stream_broken(s))
				return n;
			continue;
		}
		if (f.type == FI_FRAME_EOS)
			return n;
		if (f.type == FI_FRAME_TOKEN && f.tok.token != f.tok.index + 1000u * (uint32_t)(f.id[0] - 'a'))
			(*bad)++;
		n++;
		fi_frame_free(&f);
	}
}

START_TEST(test_pipe_fork_throughput)
{
	int fds[2];
	pid_t pid;
	const uint32_t n = 200000;
	struct fi_stream *in;
	struct fi_frame f;
	double t0;
	uint32_t got = 0;
	int st;

	ck_assert_int_eq(pipe(fds), 0);
	t0 = fi_now();
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct fi_stream *out;
		close(fds[0]);
		if (fi_stream_open_fd(&out, fds[1], FI_STREAM_OUT, NULL) || send_tokens(out, "a", 0, n) ||
		    fi_stream_close(out))
			_exit(1);
		_exit(0);
	}
	close(fds[1]);
	ck_assert_int_eq(fi_stream_open_fd(&in, fds[0], FI_STREAM_IN, NULL), FI_OK);
	for (;;) {
		ck_assert_int_eq(fi_stream_read(in, &f), FI_OK);
		if (f.type == FI_FRAME_EOS)
			break;
		ck_assert_uint_eq(f.tok.index, got);
		ck_assert_uint_eq(f.tok.token, got);
		ck_assert_str_eq(f.tok.text, "ab");
		got++;
		fi_frame_free(&f);
	}
	printf("pipe: %u token frames in %.3f s: %.0f frames/s (encode+write+read+decode)\n", n,
	       fi_now() - t0, n / (fi_now() - t0));
	ck_assert_uint_eq(got, n);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	fi_stream_close(in);
	close(fds[0]);
}
END_TEST

struct prod {
	const char *ep;
	const char *id;
	uint32_t n;
	struct fi_stream_opts o;
	fi_err err;
};

static void *producer(void *p)
{
	struct prod *pr = p;
	struct fi_stream *out;
	pr->err = fi_stream_open(&out, pr->ep, FI_STREAM_OUT, &pr->o);
	if (!pr->err)
		pr->err = send_tokens(out, pr->id, 1000u * (uint32_t)(pr->id[0] - 'a'), pr->n);
	if (!pr->err)
		pr->err = fi_stream_close(out);
	return NULL;
}

/* A consumer binds ep, one producer thread connects and sends n frames then eos. */
static void push_pull(const char *ep, uint32_t n)
{
	struct fi_stream *in;
	struct prod p = { .id = "a", .n = n };
	pthread_t th;
	long bad, got;

	fi_stream_opts_default(&p.o);
	ck_assert_msg(fi_stream_open(&in, ep, FI_STREAM_IN, NULL) == FI_OK, "%s: %s", ep, fi_errmsg());
	p.ep = fi_stream_endpoint(in); /* resolves a wildcard port */
	pthread_create(&th, NULL, producer, &p);
	got = drain(in, &bad);
	pthread_join(th, NULL);
	ck_assert_int_eq(p.err, FI_OK);
	ck_assert_int_eq(bad, 0);
	ck_assert_int_eq(got, n);
	fi_stream_close(in);
}

START_TEST(test_inproc)
{
	push_pull("inproc://fi-test-a", 20000);
}
END_TEST

START_TEST(test_ipc)
{
	char ep[128];
	snprintf(ep, sizeof ep, "ipc:///tmp/fi-test-%d.sock", (int)getpid());
	push_pull(ep, 20000);
	unlink(ep + 6);
}
END_TEST

START_TEST(test_tcp_loopback)
{
	struct fi_stream *in;
	/* "*" binds loopback, never every interface. */
	ck_assert_int_eq(fi_stream_open(&in, "tcp://*:*", FI_STREAM_IN, NULL), FI_OK);
	ck_assert_msg(!strncmp(fi_stream_endpoint(in), "tcp://127.0.0.1:", 16), "%s", fi_stream_endpoint(in));
	fi_stream_close(in);
	push_pull("tcp://127.0.0.1:*", 20000);
}
END_TEST

START_TEST(test_fan_in)
{
	/* Two producers into one input that ends after two eos frames. */
	struct fi_stream_opts o;
	struct fi_stream *in;
	struct prod p[2] = { { .id = "a", .n = 3000 }, { .id = "b", .n = 5000 } };
	pthread_t th[2];
	long bad, got;

	fi_stream_opts_default(&o);
	o.eos_count = 2;
	ck_assert_int_eq(fi_stream_open(&in, "inproc://fi-test-fanin", FI_STREAM_IN, &o), FI_OK);
	for (int i = 0; i < 2; i++) {
		fi_stream_opts_default(&p[i].o);
		p[i].ep = "inproc://fi-test-fanin";
		pthread_create(&th[i], NULL, producer, &p[i]);
	}
	got = drain(in, &bad);
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		ck_assert_int_eq(p[i].err, FI_OK);
	}
	ck_assert_int_eq(bad, 0);
	ck_assert_int_eq(got, 8000);
	fi_stream_close(in);
}
END_TEST

struct cons {
	struct fi_stream *in;
	long got, bad;
};

static void *consumer(void *p)
{
	struct cons *c = p;
	c->got = drain(c->in, &c->bad);
	return NULL;
}

START_TEST(test_fan_out)
{
	/* One output over two workers: frames spread over both, and both get their eos. */
	struct cons c[2] = { 0 };
	pthread_t th[2];
	struct prod p = { .ep = "inproc://fi-test-w0,inproc://fi-test-w1", .id = "a", .n = 10000 };

	ck_assert_int_eq(fi_stream_open(&c[0].in, "inproc://fi-test-w0", FI_STREAM_IN, NULL), FI_OK);
	ck_assert_int_eq(fi_stream_open(&c[1].in, "inproc://fi-test-w1", FI_STREAM_IN, NULL), FI_OK);
	for (int i = 0; i < 2; i++)
		pthread_create(&th[i], NULL, consumer, &c[i]);
	fi_stream_opts_default(&p.o);
	producer(&p);
	ck_assert_int_eq(p.err, FI_OK);
	for (int i = 0; i < 2; i++) {
		pthread_join(th[i], NULL);
		fi_stream_close(c[i].in);
		ck_assert_int_gt(c[i].got, 1000);
	}
	/* Indexes are not checked per worker here: drain's check holds per frame. */
	ck_assert_int_eq(c[0].bad + c[1].bad, 0);
	ck_assert_int_eq(c[0].got + c[1].got, 10000);
}
END_TEST

START_TEST(test_slow_consumer_hwm)
{
	/* A consumer that does not read: the producer is held back at about SNDHWM + RCVHWM
	 * frames instead of queueing everything in memory. */
	struct fi_stream_opts o;
	struct fi_stream *in, *out;
	struct fi_frame f;
	struct cons c = { 0 };
	pthread_t th;
	long sent = 0;
	fi_err e = FI_OK;

	fi_stream_opts_default(&o);
	o.hwm = 50;
	ck_assert_int_eq(fi_stream_open(&in, "inproc://fi-test-slow", FI_STREAM_IN, &o), FI_OK);
	ck_assert_int_eq(fi_stream_open(&out, "inproc://fi-test-slow", FI_STREAM_OUT, &o), FI_OK);
	fi_frame_init(&f, FI_FRAME_TOKEN);
	f.id = "a";
	while (sent < 100000) {
		f.tok.token = f.tok.index = (uint32_t)sent;
		if ((e = fi_stream_write_timeout(out, &f, 50)))
			break;
		sent++;
	}
	ck_assert_int_eq(e, FI_EFULL);
	printf("slow consumer: producer held at %ld frames (hwm 50 each side)\n", sent);
	ck_assert_int_ge(sent, 50);
	ck_assert_int_le(sent, 400);
	/* The consumer catches up and everything queued arrives, then the eos. */
	c.in = in;
	pthread_create(&th, NULL, consumer, &c);
	ck_assert_int_eq(fi_stream_close(out), FI_OK);
	pthread_join(th, NULL);
	ck_assert_int_eq(c.got, sent);
	ck_assert_int_eq(c.bad, 0);
	fi_stream_close(in);
}
END_TEST

START_TEST(test_zmq_bad_frames)
{
	/* Garbage messages are per-frame errors; the stream goes on. */
	struct fi_stream *in, *out;
	struct fi_frame f;
	static const uint8_t junk[] = { 0xdd, 0xff, 0xff, 0xff, 0xff };
	static const uint8_t no_type[] = { 0x82, 0xa1, 'v', 0x01, 0xa2, 'i', 'd', 0xa1, 'q' };

	ck_assert_int_eq(fi_stream_open(&in, "inproc://fi-test-bad", FI_STREAM_IN, NULL), FI_OK);
	ck_assert_int_eq(fi_stream_open(&out, "inproc://fi-test-bad", FI_STREAM_OUT, NULL), FI_OK);
	ck_assert_int_eq(fi_stream_write_raw(out, junk, sizeof junk), FI_OK);
	ck_assert_int_eq(fi_stream_write_raw(out, no_type, sizeof no_type), FI_OK);
	ck_assert_int_eq(send_tokens(out, "a", 0, 1), FI_OK);
	ck_assert_int_eq(fi_stream_close(out), FI_OK);
	ck_assert_int_eq(fi_stream_read(in, &f), FI_ERANGE);
	fi_frame_free(&f);
	ck_assert_int_eq(fi_stream_read(in, &f), FI_EFORMAT);
	ck_assert_str_eq(f.id, "q");
	fi_frame_free(&f);
	ck_assert_int_eq(fi_stream_read(in, &f), FI_OK);
	ck_assert_int_eq(f.type, FI_FRAME_TOKEN);
	fi_frame_free(&f);
	ck_assert_int_eq(fi_stream_read(in, &f), FI_OK);
	ck_assert_int_eq(f.type, FI_FRAME_EOS);
	ck_assert(!fi_stream_broken(in));
	fi_stream_close(in);
}
END_TEST

/* A repeat within a second (timeout(1) signals its child, then its process group) is the same
 * request; a second signal later ends the process. */
START_TEST(test_second_signal)
{
	for (int later = 0; later < 2; later++) {
		int st;
		pid_t p = fork();
		ck_assert_int_ge(p, 0);
		if (!p) {
			fi_stream_catch_signals();
			raise(SIGINT);
			if (later)
				sleep(3);
			raise(SIGINT);
			_exit(fi_stream_interrupted() ? 0 : 1);
		}
		ck_assert_int_eq(waitpid(p, &st, 0), p);
		if (later)
			ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGINT, "a later second signal did not end it");
		else
			ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "a repeat at once ended it");
	}
}
END_TEST

START_TEST(test_interrupt_and_timeout)
{
	struct fi_stream *in;
	struct fi_frame f;
	int fds[2];

	fi_stream_catch_signals();
	ck_assert_int_eq(fi_stream_open(&in, "inproc://fi-test-int", FI_STREAM_IN, NULL), FI_OK);
	ck_assert_int_eq(fi_stream_read_timeout(in, &f, 50), FI_OK);
	ck_assert_int_eq(f.type, FI_FRAME_NONE);
	raise(SIGTERM); /* caught: sets the flag */
	ck_assert(fi_stream_interrupted());
	ck_assert_int_eq(fi_stream_read(in, &f), FI_EINTERRUPT);
	fi_stream_close(in);

	ck_assert_int_eq(pipe(fds), 0);
	ck_assert_int_eq(fi_stream_open_fd(&in, fds[0], FI_STREAM_IN, NULL), FI_OK);
	ck_assert_int_eq(fi_stream_read(in, &f), FI_EINTERRUPT);
	fi_stream_set_interrupted(0);
	ck_assert_int_eq(fi_stream_read_timeout(in, &f, 30), FI_OK);
	ck_assert_int_eq(f.type, FI_FRAME_NONE);
	fi_stream_close(in);
	close(fds[0]);
	close(fds[1]);
	signal(SIGTERM, SIG_DFL);
	signal(SIGINT, SIG_DFL);
}
END_TEST

/* After a signal, fi_stream_drain reads the rest of a pipe (which a plain read refuses with
 * FI_EINTERRUPT) to its end: each request gets an error frame "who is shutting down", error
 * frames are passed on when asked and counted, other frames dropped. And it stops after
 * quiet_ms on an input that stays open. */
START_TEST(test_drain_after_signal)
{
	struct fi_stream *in, *out, *back;
	struct fi_frame f;
	int fds[2], ofd[2], n_req = 0, n_err = 0, n_other = 0;
	unsigned long failed = 0;
	double t0;

	ck_assert_int_eq(pipe(fds), 0);
	ck_assert_int_eq(pipe(ofd), 0);
	ck_assert_int_eq(fi_stream_open_fd(&out, fds[1], FI_STREAM_OUT, NULL), FI_OK);
	for (int i = 0; i < 300; i++) {
		char id[16];
		uint32_t tok = 7;
		snprintf(id, sizeof id, "r%d", i);
		fi_frame_init(&f, i % 3 == 2 ? FI_FRAME_ERROR : i % 3 ? FI_FRAME_CANCEL : FI_FRAME_REQUEST);
		f.id = id;
		if (f.type == FI_FRAME_REQUEST) {
			f.req.tokens = &tok;
			f.req.ntokens = 1;
		} else if (f.type == FI_FRAME_ERROR) {
			f.err.code = FI_EINVAL;
			f.err.message = "upstream";
		}
		ck_assert_int_eq(fi_stream_write(out, &f), FI_OK);
	}
	ck_assert_int_eq(fi_stream_flush(out), FI_OK);
	ck_assert_int_eq(fi_stream_open_fd(&in, fds[0], FI_STREAM_IN, NULL), FI_OK);
	fi_stream_close(out);
	close(fds[1]); /* EOF after the 300 frames */
	ck_assert_int_eq(fi_stream_open_fd(&back, ofd[1], FI_STREAM_OUT, NULL), FI_OK);
	fi_stream_set_interrupted(1);
	ck_assert_int_eq(fi_stream_read(in, &f), FI_EINTERRUPT);
	ck_assert_int_eq(fi_stream_drain(in, back, "tester", 1u << FI_FRAME_ERROR, 5000, &failed),
			 FI_OK);
	fi_stream_set_interrupted(0);
	fi_stream_close(back);
	close(ofd[1]);
	fi_stream_close(in);
	close(fds[0]);
	ck_assert_uint_eq(failed, 200); /* 100 requests answered, 100 errors passed on */
	ck_assert_int_eq(fi_stream_open_fd(&in, ofd[0], FI_STREAM_IN, NULL), FI_OK);
	while (!fi_stream_read(in, &f) && f.type != FI_FRAME_EOS) {
		ck_assert_int_eq(f.type, FI_FRAME_ERROR);
		if (!strcmp(f.err.message, "tester is shutting down")) {
			ck_assert_int_eq(f.err.code, FI_EINTERRUPT);
			ck_assert_int_eq(atoi(f.id + 1) % 3, 0);
			n_req++;
		} else if (!strcmp(f.err.message, "upstream")) {
			n_err++;
		} else {
			n_other++;
		}
		fi_frame_free(&f);
	}
	fi_stream_close(in);
	close(ofd[0]);
	ck_assert_int_eq(n_req, 100);
	ck_assert_int_eq(n_err, 100);
	ck_assert_int_eq(n_other, 0);

	/* an input left open with nothing on it: the drain ends after quiet_ms */
	ck_assert_int_eq(pipe(fds), 0);
	ck_assert_int_eq(fi_stream_open_fd(&in, fds[0], FI_STREAM_IN, NULL), FI_OK);
	ck_assert_int_eq(fi_stream_open_fd(&back, open("/dev/null", O_WRONLY), FI_STREAM_OUT, NULL),
			 FI_OK);
	fi_stream_set_interrupted(1);
	t0 = fi_now();
	failed = 0;
	ck_assert_int_eq(fi_stream_drain(in, back, "tester", 0, 200, &failed), FI_OK);
	ck_assert(fi_now() - t0 >= 0.19 && fi_now() - t0 < 5);
	ck_assert_uint_eq(failed, 0);
	fi_stream_set_interrupted(0);
	close(fi_stream_fd(back));
	fi_stream_close(back);
	fi_stream_close(in);
	close(fds[0]);
	close(fds[1]);
}
END_TEST

START_TEST(test_bad_specs)
{
	struct fi_stream *s;
	ck_assert_int_eq(fi_stream_open(&s, "http://x", FI_STREAM_IN, NULL), FI_EINVAL);
	ck_assert_ptr_null(s);
	ck_assert_int_eq(fi_stream_open(&s, "", FI_STREAM_OUT, NULL), FI_EINVAL);
	ck_assert_int_eq(fi_stream_open(&s, "tcp://127.0.0.1", FI_STREAM_IN, NULL), FI_EINVAL);
	ck_assert_int_eq(fi_stream_open(&s, "-", FI_STREAM_OUT, NULL), FI_OK);
	ck_assert_str_eq(fi_stream_endpoint(s), "-");
	ck_assert_int_eq(fi_stream_fd(s), 1);
	fi_stream_close(s);
}
END_TEST

static void write_keyfile(const char *path, const char *pub, const char *sec, const char *srv)
{
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fchmod(fileno(f), 0600);
	fprintf(f, "# test certificate\ncurve\n    public-key = \"%s\"\n    secret-key = \"%s\"\n", pub, sec);
	if (srv)
		fprintf(f, "    server-key = \"%s\"\n", srv);
	fclose(f);
}

START_TEST(test_curve)
{
	char spub[41], ssec[41], cpub[41], csec[41], sk[128], ck[128];
	struct fi_stream_opts so;
	struct fi_stream *in;
	struct prod p = { .id = "a", .n = 2000 };
	pthread_t th;
	long got, bad;

	if (!zmq_has("curve")) {
		printf("SKIPPED: curve: libzmq without CURVE\n");
		return;
	}
	ck_assert_int_eq(zmq_curve_keypair(spub, ssec), 0);
	ck_assert_int_eq(zmq_curve_keypair(cpub, csec), 0);
	snprintf(sk, sizeof sk, "/tmp/fi-test-%d-server.key", (int)getpid());
	snprintf(ck, sizeof ck, "/tmp/fi-test-%d-client.key", (int)getpid());
	write_keyfile(sk, spub, ssec, NULL);
	write_keyfile(ck, cpub, csec, spub);
	fi_stream_opts_default(&so);
	so.curve_key = sk;
	ck_assert_int_eq(fi_stream_open(&in, "tcp://127.0.0.1:*", FI_STREAM_IN, &so), FI_OK);
	fi_stream_opts_default(&p.o);
	p.o.curve_key = ck;
	p.ep = fi_stream_endpoint(in);
	pthread_create(&th, NULL, producer, &p);
	got = drain(in, &bad);
	pthread_join(th, NULL);
	ck_assert_int_eq(p.err, FI_OK);
	ck_assert_int_eq(got, 2000);
	fi_stream_close(in);
	/* A client key file without server-key cannot connect. */
	p.o.curve_key = sk;
	ck_assert_int_eq(fi_stream_open(&in, "tcp://127.0.0.1:9", FI_STREAM_OUT, &p.o), FI_EINVAL);
	write_keyfile(ck, "short", csec, NULL);
	p.o.curve_key = ck;
	ck_assert_int_eq(fi_stream_open(&in, "tcp://127.0.0.1:9", FI_STREAM_OUT, &p.o), FI_EFORMAT);
	unlink(sk);
	unlink(ck);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("stream");
	TCase *tc = tcase_create("stream");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_pipe_fork_throughput);
	tcase_add_test(tc, test_inproc);
	tcase_add_test(tc, test_ipc);
	tcase_add_test(tc, test_tcp_loopback);
	tcase_add_test(tc, test_fan_in);
	tcase_add_test(tc, test_fan_out);
	tcase_add_test(tc, test_slow_consumer_hwm);
	tcase_add_test(tc, test_zmq_bad_frames);
	tcase_add_test(tc, test_interrupt_and_timeout);
	tcase_add_test(tc, test_second_signal);
	tcase_add_test(tc, test_drain_after_signal);
	tcase_add_test(tc, test_bad_specs);
	tcase_add_test(tc, test_curve);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
