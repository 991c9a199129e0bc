/* fi-route's addresses (route_addr.c): which tcp endpoints and --http addresses are
 * loopback, IPv4 and IPv6 (binding anything else needs keys), and the HTTP address parsed
 * into a socket address. Needs no network: it runs where IPv6 is disabled too. */
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

#include "route/route_int.h"
#include "util.h"

static int tcp(const char *ep, int *v6, char *out)
{
	return route_tcp_loopback(ep, out, 128, v6);
}

START_TEST(tcp_endpoints)
{
	char out[128];
	int v6;
	ck_assert(tcp("tcp://127.0.0.1:7000", &v6, out) && !v6);
	ck_assert(tcp("tcp://127.3.2.1:7000", &v6, out) && !v6);
	ck_assert(tcp("tcp://localhost:7000", &v6, out) && !v6);
	ck_assert(tcp("tcp://[::1]:7000", &v6, out) && v6);
	ck_assert_str_eq(out, "tcp://[::1]:7000");
	ck_assert(tcp("tcp://[0:0:0:0:0:0:0:1]:7000", &v6, out) && v6);
	ck_assert(tcp("tcp://[::ffff:127.0.0.1]:7000", &v6, out) && v6);
	ck_assert(tcp("tcp://:7000", &v6, out) && !v6);
	ck_assert_str_eq(out, "tcp://127.0.0.1:7000");
	ck_assert(tcp("tcp://*:7000", &v6, out));
	ck_assert_str_eq(out, "tcp://127.0.0.1:7000");
	/* beyond loopback */
	ck_assert(!tcp("tcp://0.0.0.0:7000", &v6, out) && !v6);
	ck_assert(!tcp("tcp://10.0.0.1:7000", &v6, out));
	ck_assert(!tcp("tcp://128.0.0.1:7000", &v6, out));
	ck_assert(!tcp("tcp://127.example.com:7000", &v6, out)); /* a name, not 127/8 */
	ck_assert(!tcp("tcp://[::]:7000", &v6, out) && v6);
	ck_assert(!tcp("tcp://[::2]:7000", &v6, out) && v6);
	ck_assert(!tcp("tcp://[fe80::1]:7000", &v6, out) && v6);
	ck_assert(!tcp("tcp://[::ffff:10.0.0.1]:7000", &v6, out) && v6);
	ck_assert(!tcp("tcp://[::1:7000", &v6, out));
	ck_assert(!tcp("tcp://eth0:7000", &v6, out));
}
END_TEST

START_TEST(http_addresses)
{
	struct sockaddr_storage sa;
	const struct sockaddr_in *s4 = (const void *)&sa;
	const struct sockaddr_in6 *s6 = (const void *)&sa;
	int loop;
	ck_assert_int_eq(route_http_addr("8000", &sa, &loop), FI_OK);
	ck_assert(loop && sa.ss_family == AF_INET && ntohs(s4->sin_port) == 8000);
	ck_assert_int_eq(ntohl(s4->sin_addr.s_addr), 0x7f000001);
	ck_assert_int_eq(route_http_addr("127.0.0.2:80", &sa, &loop), FI_OK);
	ck_assert(loop && sa.ss_family == AF_INET && ntohs(s4->sin_port) == 80);
	ck_assert_int_eq(route_http_addr("0.0.0.0:8000", &sa, &loop), FI_OK);
	ck_assert(!loop && sa.ss_family == AF_INET);
	ck_assert_int_eq(route_http_addr("[::1]:8001", &sa, &loop), FI_OK);
	ck_assert(loop && sa.ss_family == AF_INET6 && ntohs(s6->sin6_port) == 8001);
	ck_assert(IN6_IS_ADDR_LOOPBACK(&s6->sin6_addr));
	ck_assert_int_eq(route_http_addr("[::]:8000", &sa, &loop), FI_OK);
	ck_assert(!loop && sa.ss_family == AF_INET6 && IN6_IS_ADDR_UNSPECIFIED(&s6->sin6_addr));
	ck_assert_int_eq(route_http_addr("[::ffff:127.0.0.1]:8000", &sa, &loop), FI_OK);
	ck_assert(loop && sa.ss_family == AF_INET6);
	ck_assert_int_eq(route_http_addr("[2001:db8::1]:8000", &sa, &loop), FI_OK);
	ck_assert(!loop);
	/* refused: a clear usage error, never a guess */
	static const char *const bad[] = {"", "0", "65536", "80x", "::1:8000", "[::1]", "[::1]:",
					  ":8000", "[nope]:8000", "localhost:8000", "1.2.3:80",
					  "[::1:8000", "[]:8000"};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		ck_assert_msg(route_http_addr(bad[i], &sa, &loop) == FI_EINVAL, "'%s' accepted", bad[i]);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("route_addr");
	TCase *tc = tcase_create("addr");
	tcase_add_test(tc, tcp_endpoints);
	tcase_add_test(tc, http_addresses);
	suite_add_tcase(s, tc);
	return fi_test_run(s);
}
