/* route_time: fi-route's clock and its latency histograms (/metrics), below every other
 * route_*.c file: they all read the clock, and the request path fills the histograms. */
#include <time.h>

#include "route_int.h"

const double route_buckets[ROUTE_NBUCKET] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
					     0.1, 0.25, 0.5, 1, 2.5, 5, 10};

void rhist_add(struct rhist *h, double sec)
{
	int i = 0;
	while (i < ROUTE_NBUCKET && sec > route_buckets[i])
		i++;
	h->b[i]++;
	h->sum += sec;
	h->n++;
}

double route_now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}
