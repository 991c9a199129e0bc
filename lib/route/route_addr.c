/* route_addr: fi-route's addresses, IPv4 or IPv6: which tcp endpoints and HTTP addresses
 * are loopback (binding anything else needs keys), and the HTTP address as a socket address.
 * IPv6 addresses are written in brackets, as ZeroMQ and URLs write them: tcp://[::1]:7000,
 * --http [::1]:8000. */
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "route_int.h"

/* host (n bytes, brackets included for IPv6) is a loopback address: 127.0.0.0/8,
 * localhost, ::1, or an IPv4-mapped 127.x (::ffff:127.0.0.1). *v6: it is in brackets. */
static int host_loopback(const char *host, size_t n, int *v6)
{
	char a[64];
	uint8_t b[16];
	*v6 = n >= 2 && host[0] == '[' && host[n - 1] == ']';
	if (*v6) {
		static const uint8_t one[16] = {[15] = 1}, mapped[12] = {[10] = 0xff, [11] = 0xff};
		if (n - 2 >= sizeof a)
			return 0;
		memcpy(a, host + 1, n - 2);
		a[n - 2] = 0;
		if (inet_pton(AF_INET6, a, b) != 1)
			return 0;
		return !memcmp(b, one, 16) || (!memcmp(b, mapped, 12) && b[12] == 127);
	}
	if (n == 9 && !memcmp(host, "localhost", 9))
		return 1;
	if (n >= sizeof a)
		return 0;
	memcpy(a, host, n);
	a[n] = 0;
	return inet_pton(AF_INET, a, b) == 1 && b[0] == 127;
}

int route_tcp_loopback(const char *ep, char *out, size_t cap, int *v6)
{
	const char *host = ep + 6, *colon = strrchr(host, ':');
	size_t hl = colon ? (size_t)(colon - host) : 0;
	*v6 = 0;
	if (!hl || (hl == 1 && host[0] == '*')) { /* an empty host, or "*": loopback */
		snprintf(out, cap, "tcp://127.0.0.1%s", colon ? colon : "");
		return 1;
	}
	snprintf(out, cap, "%s", ep);
	return host_loopback(host, hl, v6);
}

fi_err route_http_addr(const char *spec, struct sockaddr_storage *sa, int *loopback)
{
	const char *colon = strrchr(spec, ':'), *ps = colon ? colon + 1 : spec;
	char host[64] = "127.0.0.1", *end;
	size_t hl = colon ? (size_t)(colon - spec) : 0;
	long port;
	int v6 = 0;
	memset(sa, 0, sizeof *sa);
	port = strtol(ps, &end, 10);
	if (colon && !hl)
		goto bad;
	if (hl) {
		if (hl >= sizeof host)
			goto bad;
		memcpy(host, spec, hl);
		host[hl] = 0;
	}
	if (!*ps || *end || port < 1 || port > 65535)
		goto bad;
	*loopback = host_loopback(host, strlen(host), &v6);
	if (v6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)sa;
		host[hl - 1] = 0;
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
			goto bad;
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)sa;
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
			goto bad;
	}
	return FI_OK;
bad:
	return fi_fail(FI_EINVAL, "--http '%s': expected [ADDRESS:]PORT (an IPv4 address, or an IPv6 "
			"one in brackets: [::1]:8000)", spec);
}
